"""Doctor's one GitHub App installation token, minted the way the Worker and the tasks mint theirs.

With ``[github] auth = "app"`` doctor reads GitHub with one installation token, minted once per
run from ``TF_VAR_github_app_private_key``:

1. the key is read with :func:`handler.github_auth.pkcs8_from_pem`, the Worker's own code (a
   PKCS#1 key, as GitHub hands it out, is wrapped into the PKCS#8 its WebCrypto imports), so a
   key the Worker could not import fails here too;
2. the JWT is framed by :func:`handler.github_auth.jwt_signing_input` (``iss`` the App id,
   ``iat`` 60 s back, ``exp`` 9 minutes on) and signed RS256 by the ``openssl`` CLI, as the
   register task signs its own (``openssl dgst -sha256 -sign``): no RSA is computed here. The
   key goes to openssl as a PKCS#8 PEM file in a private temporary directory, removed at once;
   openssl's error output is never repeated;
3. ``POST /app/installations/{id}/access_tokens`` (the request the Worker sends, through
   :meth:`doctor.web.Http.mint_installation_token`) answers 201 ``{"token", "expires_at",
   "permissions", "repository_selection"}``.

Every failure is a :class:`MintError` with what was seen and the one fix; none quotes the key, the
JWT or a token. The caller hands every credential made here to the redactor (``remember``).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from doctor.web import Http
from handler.github_auth import (
    KeyFormatError,
    installation_token_request,
    jwt_signing_input,
    pkcs8_from_pem,
)

APP_KEY_ENV: Final = "TF_VAR_github_app_private_key"
OPENSSL_TIMEOUT_SECONDS: Final = 10.0
# Once the key changes, every stack that stores it must be deployed again.
REDEPLOY_KEY: Final = (
    "deploy nomad, dispatch and github (each stores the key: the tasks' Variables, the Worker's "
    "secret, the hooks' provider)"
)


class MintError(Exception):
    """No installation token; ``detail`` is what happened, ``fix`` the one thing to change."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass(frozen=True)
class InstallationToken:
    token: str = field(repr=False)
    expires_at: str
    permissions: Mapping[str, str]
    repository_selection: str


def _pkcs8_pem(der: bytes) -> bytes:
    body = base64.b64encode(der).decode("ascii")
    lines = [body[index : index + 64] for index in range(0, len(body), 64)]
    return (
        "-----BEGIN PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END PRIVATE KEY-----\n"
    ).encode()


def sign_rs256(pkcs8_der: bytes, message: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 over SHA-256 of ``message``, by the ``openssl`` CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MintError(
            "no openssl CLI on PATH to sign the App's JWT",
            "install openssl where doctor runs (it signs the JWT, as the register task does)",
        )
    with tempfile.TemporaryDirectory(prefix="doctor-app-") as scratch:
        key_file = Path(scratch, "key.pem")
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(_pkcs8_pem(pkcs8_der))
        try:
            done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
                [openssl, "dgst", "-sha256", "-sign", str(key_file)],
                input=message,
                capture_output=True,
                timeout=OPENSSL_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise MintError(
                f"cannot run openssl to sign the App's JWT ({type(error).__name__})",
                "check the openssl CLI on PATH",
            ) from None
    if done.returncode != 0 or not done.stdout:
        raise MintError(
            f"openssl could not sign with the key in {APP_KEY_ENV} (exit status "
            f"{done.returncode}): it is PEM but not a usable RSA private key",
            f"set {APP_KEY_ENV} to the App's private key as downloaded from its settings "
            f'("Private keys"); then {REDEPLOY_KEY}',
        )
    return done.stdout


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt(app_id: str, key_pem: str, now: float) -> str:
    """The App's JWT issued at ``now``, signed by ``key_pem`` (PKCS#1 or PKCS#8 PEM)."""
    try:
        pkcs8 = pkcs8_from_pem(key_pem)
    except KeyFormatError as error:
        raise MintError(
            f"{APP_KEY_ENV}: {error}",
            f'set {APP_KEY_ENV} to the App\'s .pem file: export {APP_KEY_ENV}="$(cat app.pem)"',
        ) from None
    signing_input = jwt_signing_input(app_id, now)
    return f"{signing_input}.{_base64url(sign_rs256(pkcs8, signing_input.encode('ascii')))}"


def _message(answer_json: Callable[[], Any], text: str) -> str:
    try:
        message = answer_json().get("message")
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message).split())[:160] if message else text


def mint(
    http: Http,
    *,
    api_url: str,
    app_id: int,
    installation_id: int,
    key_pem: str,
    now: float,
    remember: Callable[[str], None],
) -> InstallationToken:
    """One installation token, or :class:`MintError`; the JWT and the token go to ``remember``
    (the redactor) before anything else happens with them."""
    jwt = app_jwt(str(app_id), key_pem, now)
    remember(jwt)
    request = installation_token_request(api_url, str(installation_id), jwt)
    answer = http.mint_installation_token(request.url, dict(request.headers))
    said = f"GitHub answered {answer.status} {_message(answer.json, answer.text())!r}"
    if answer.status == 201:
        try:
            document = answer.json()
        except ValueError:
            document = None
        token = document.get("token") if isinstance(document, dict) else None
        if not isinstance(token, str) or not token:
            raise MintError(
                "GitHub answered 201 without a token", "check github.api_url: is it a GitHub API?"
            )
        remember(token)
        permissions = document.get("permissions")
        return InstallationToken(
            token=token,
            expires_at=str(document.get("expires_at") or "?"),
            permissions=(
                {str(key): str(value) for key, value in permissions.items()}
                if isinstance(permissions, dict)
                else {}
            ),
            repository_selection=str(document.get("repository_selection") or "?"),
        )
    if answer.status == 401:
        if "claim" in said:
            # GitHub judged iat/exp, which come from this machine's clock.
            fix = (
                "this machine's clock is off by more than a minute (the JWT's iat and exp come "
                "from it): sync it with NTP and run doctor again"
            )
        else:
            fix = (
                f"GitHub refused the App's JWT: {APP_KEY_ENV} is not a key of App {app_id} (or "
                "that key was deleted in the App's settings), or github.app_id is not the App's "
                f"id; fix it, then {REDEPLOY_KEY}"
            )
        raise MintError(said, fix)
    if answer.status in (403, 404):
        raise MintError(
            said,
            f"App {app_id} has no installation {installation_id}: github.installation_id is "
            "wrong (the number at the end of the installation's settings URL), or the App was "
            "uninstalled or suspended on the owner; install it again (Only select repositories: "
            "the served ones), set github.installation_id, then deploy nomad, dispatch and github",
        )
    if answer.status == 429 or answer.headers.get("x-ratelimit-remaining") == "0":
        raise MintError(said, "the App's rate limit is used up: run doctor again after it resets")
    raise MintError(
        said, "GitHub failed to answer: run doctor again; if it persists see githubstatus.com"
    )
