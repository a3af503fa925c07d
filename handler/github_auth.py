"""The Worker's GitHub read credential: a token, or an installation token it mints as a GitHub App.

With ``[github] auth = "token"`` the Worker reads GitHub (reconciler, fork check, ``/status``)
with ``GITHUB_READ_TOKEN``. With ``auth = "app"`` it is bound to the App's id, installation id
and private key (``GITHUB_APP_ID``, ``GITHUB_APP_INSTALLATION_ID``, ``GITHUB_APP_PRIVATE_KEY``)
and mints its token itself, as GitHub's App authentication describes:

1. a JWT: header ``{"alg": "RS256", "typ": "JWT"}``, claims ``iss`` = the App id, ``iat`` = now
   minus 60 s (clock drift), ``exp`` = now plus 9 minutes (GitHub refuses more than 10);
2. signed RSASSA-PKCS1-v1_5 with SHA-256 (RS256) by a :class:`Signer`: the Worker's adapter
   signs with the runtime's WebCrypto, so no RSA is computed here;
3. ``POST /app/installations/{id}/access_tokens`` with ``Authorization: Bearer <JWT>`` answers
   201 ``{"token", "expires_at"}`` (one hour).

The token is kept in :class:`GitHubCredential`, one per isolate, until
:data:`REFRESH_MARGIN_SECONDS` before its ``expires_at``, then minted again; a 401 from GitHub
forgets it at once. Nothing is stored anywhere else, and neither the key nor a token is ever
logged or put in a message.

WebCrypto imports RSA private keys as PKCS#8 only, while GitHub hands out PKCS#1 PEM
(``BEGIN RSA PRIVATE KEY``). :func:`pkcs8_from_pem` accepts both: a PKCS#1 key is wrapped in
the PKCS#8 ``PrivateKeyInfo`` structure (version 0, the ``rsaEncryption`` algorithm identifier,
the PKCS#1 key as an OCTET STRING): DER framing only, the key's numbers are not touched.

:func:`rate_limit_status` reads the credential's hourly quota with ``GET /rate_limit`` (which
GitHub does not count against it) for ``/status``. Standard library only; no I/O but through
the transport and signer it is given.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from handler import contract
from handler.github_errors import github_message
from handler.nomad import HttpRequest

GITHUB_API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "nomad-github-runners-worker"
JWT_BACKDATE_SECONDS: Final = 60
JWT_LIFETIME_SECONDS: Final = 540  # GitHub's maximum is 600
# Mint again this long before expires_at: a run or a lookup started with the token must not
# see it expire halfway.
REFRESH_MARGIN_SECONDS: Final = 300.0
# /status reuses a rate-limit reading for this long.
RATE_LIMIT_REUSE_SECONDS: Final = 30.0
_RSA_ENCRYPTION_ALGORITHM: Final = bytes.fromhex("300d06092a864886f70d0101010500")
_PEM = re.compile(
    r"-----BEGIN (RSA PRIVATE KEY|PRIVATE KEY)-----\s*([A-Za-z0-9+/=\s]+?)\s*"
    r"-----END \1-----"
)
_MAX_REASON: Final = 160


class GitHubAuthError(Exception):
    """No token could be had; ``reason`` says why and what to fix (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class KeyFormatError(ValueError):
    """The bound private key is not a PEM RSA private key."""


class Signer(Protocol):
    async def sign_rs256(self, pkcs8_der: bytes, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 over SHA-256 of ``message`` with the PKCS#8 DER private key."""
        ...


class Exchange(Protocol):
    async def exchange(self, request: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        """Send ``request``; return (status, headers, body) or raise an error of the adapter."""
        ...


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


def pkcs8_from_pkcs1(pkcs1_der: bytes) -> bytes:
    """The PKCS#8 ``PrivateKeyInfo`` holding the PKCS#1 ``RSAPrivateKey`` ``pkcs1_der``."""
    if not pkcs1_der.startswith(b"\x30"):
        raise KeyFormatError("the RSA PRIVATE KEY block is not a DER SEQUENCE")
    version = _der(0x02, b"\x00")
    return _der(0x30, version + _RSA_ENCRYPTION_ALGORITHM + _der(0x04, pkcs1_der))


def pkcs8_from_pem(pem: str) -> bytes:
    """The PKCS#8 DER of a PEM RSA private key, PKCS#1 (as GitHub gives it) or PKCS#8."""
    match = _PEM.search(pem.replace("\\n", "\n"))
    if match is None:
        raise KeyFormatError(
            "expected a PEM private key (-----BEGIN RSA PRIVATE KEY----- as GitHub gives it, or "
            "-----BEGIN PRIVATE KEY-----)"
        )
    try:
        der = base64.b64decode("".join(match.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError("the PEM block is not valid base64") from None
    return pkcs8_from_pkcs1(der) if match.group(1) == "RSA PRIVATE KEY" else der


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_signing_input(app_id: str, now: float) -> str:
    """``base64url(header).base64url(claims)`` of the App JWT issued at ``now``."""
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {
        "iat": int(now) - JWT_BACKDATE_SECONDS,
        "exp": int(now) + JWT_LIFETIME_SECONDS,
        "iss": app_id,
    }
    return ".".join(
        _base64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )


def _headers(bearer: str) -> tuple[tuple[str, str], ...]:
    return (
        ("Accept", "application/vnd.github+json"),
        ("Authorization", f"Bearer {bearer}"),
        ("X-GitHub-Api-Version", GITHUB_API_VERSION),
        ("User-Agent", USER_AGENT),
    )


def installation_token_request(api_url: str, installation_id: str, jwt: str) -> HttpRequest:
    """``POST /app/installations/{id}/access_tokens``, authenticated by the App's JWT."""
    url = f"{api_url}/app/installations/{installation_id}/access_tokens"
    return HttpRequest("POST", url, _headers(jwt), b"")


def _timestamp(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def interpret_installation_token(
    status: int, body: bytes, *, app_id: str, installation_id: str
) -> tuple[str, float]:
    """(token, expires_at as a Unix time) from GitHub's answer, else :class:`GitHubAuthError`."""
    head = f"GitHub App {app_id}, installation {installation_id}: GitHub answered {status}"
    if status == 201:
        try:
            document: Any = json.loads(body)
        except ValueError:
            document = None
        token = document.get("token") if isinstance(document, dict) else None
        expires = _timestamp(document.get("expires_at")) if isinstance(document, dict) else None
        if isinstance(token, str) and token and expires is not None:
            return token, expires
        raise GitHubAuthError(f"{head} without token and expires_at")
    said = github_message(body, _MAX_REASON)
    if status == 401:
        fix = (
            "it refused the JWT: GITHUB_APP_PRIVATE_KEY is not this App's key (or was "
            "revoked), or GITHUB_APP_ID is not its id"
        )
    elif status in (403, 404):
        fix = (
            "no such installation of this App: it was uninstalled or suspended, or the id is wrong"
        )
    else:
        fix = "try again later"
    raise GitHubAuthError(f"{head} ({said}): {fix}")


@dataclass(frozen=True)
class AppCredentials:
    app_id: str
    installation_id: str
    private_key: bytes = field(repr=False)  # PKCS#8 DER


def app_credentials_from_bindings(lookup: Callable[[str], object]) -> AppCredentials | None:
    """The App's bindings, or None when the Worker has none (``auth = "token"``); a binding that
    is missing, not a number or not a PEM key is a ``ValueError`` naming it."""
    app_id = lookup(contract.GITHUB_APP_ID_BINDING)
    if app_id is None:
        return None
    values: dict[str, str] = {}
    for name in (
        contract.GITHUB_APP_ID_BINDING,
        contract.GITHUB_APP_INSTALLATION_ID_BINDING,
        contract.GITHUB_APP_PRIVATE_KEY_BINDING,
    ):
        value = lookup(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"binding {name}: missing or empty")
        values[name] = value.strip()
    for name in (contract.GITHUB_APP_ID_BINDING, contract.GITHUB_APP_INSTALLATION_ID_BINDING):
        if not values[name].isascii() or not values[name].isdigit():
            raise ValueError(f"binding {name}: expected a number")
    try:
        key = pkcs8_from_pem(values[contract.GITHUB_APP_PRIVATE_KEY_BINDING])
    except KeyFormatError as error:
        raise ValueError(f"binding {contract.GITHUB_APP_PRIVATE_KEY_BINDING}: {error}") from None
    return AppCredentials(
        app_id=values[contract.GITHUB_APP_ID_BINDING],
        installation_id=values[contract.GITHUB_APP_INSTALLATION_ID_BINDING],
        private_key=key,
    )


@dataclass
class GitHubCredential:
    """What the Worker reads GitHub with: a fixed token, or an App's installation token.

    One per isolate (the adapter keeps it for the isolate's life): a minted token is reused
    until :data:`REFRESH_MARGIN_SECONDS` before it expires, never written anywhere.
    """

    api_url: str
    token: str | None = field(default=None, repr=False)
    app: AppCredentials | None = None
    signer: Signer | None = field(default=None, repr=False)
    minted: int = 0  # installation tokens minted so far (for tests and logs)
    _cached: str | None = field(default=None, repr=False)
    _expires_at: float = 0.0
    _rate_limit: tuple[float, dict[str, Any]] | None = None

    @property
    def kind(self) -> str:
        return "app" if self.app is not None else "token"

    async def bearer(self, transport: Exchange, now: float) -> str:
        """The token to read GitHub with; mints one (one request) when none is fresh."""
        if self.app is None:
            if not self.token:
                raise GitHubAuthError(f"no {contract.GITHUB_READ_TOKEN_BINDING} binding")
            return self.token
        if self._cached is not None and now < self._expires_at - REFRESH_MARGIN_SECONDS:
            return self._cached
        if self.signer is None:
            raise GitHubAuthError("no signer for the GitHub App's JWT in this runtime")
        signing_input = jwt_signing_input(self.app.app_id, now)
        try:
            signature = await self.signer.sign_rs256(
                self.app.private_key, signing_input.encode("ascii")
            )
        except Exception as error:  # the runtime's crypto: its text may quote nothing useful
            raise GitHubAuthError(
                f"cannot sign the App's JWT with {contract.GITHUB_APP_PRIVATE_KEY_BINDING} "
                f"({type(error).__name__})"
            ) from None
        jwt = f"{signing_input}.{_base64url(signature)}"
        request = installation_token_request(self.api_url, self.app.installation_id, jwt)
        status, _, body = await transport.exchange(request)
        token, expires = interpret_installation_token(
            status, body, app_id=self.app.app_id, installation_id=self.app.installation_id
        )
        self._cached, self._expires_at = token, expires
        self.minted += 1
        return token

    def forget(self) -> None:
        """GitHub refused the token (401): mint a new one next time."""
        self._cached, self._expires_at = None, 0.0

    async def rate_limit(self, transport: Exchange, now: float, monotonic: float) -> dict[str, Any]:
        """The credential's hourly quota for ``/status``, reused for 30 s: ``{"credential",
        "limit", "remaining", "used", "reset_at"}`` or ``{"credential", "error"}``."""
        if self._rate_limit is not None:
            at, document = self._rate_limit
            if monotonic - at < RATE_LIMIT_REUSE_SECONDS:
                return document
        document = await rate_limit_status(self, transport, now)
        self._rate_limit = (monotonic, document)
        return document


def rate_limit_request(api_url: str, token: str) -> HttpRequest:
    """``GET /rate_limit``: free, it does not count against the quota it reports."""
    return HttpRequest("GET", f"{api_url}/rate_limit", _headers(token), b"")


def read_rate_limit(headers: Mapping[str, str]) -> dict[str, int] | None:
    """``limit``, ``remaining``, ``used`` and ``reset`` from an answer's ``x-ratelimit-*``."""
    lowered = {name.lower(): value for name, value in headers.items()}
    found: dict[str, int] = {}
    for name in ("limit", "remaining", "used", "reset"):
        raw = lowered.get(f"x-ratelimit-{name}", "").strip()
        if raw.isascii() and raw.isdigit():
            found[name] = int(raw)
    return found if {"limit", "remaining"} <= set(found) else None


async def rate_limit_status(
    credential: GitHubCredential, transport: Exchange, now: float
) -> dict[str, Any]:
    """One ``GET /rate_limit`` with the credential; what its ``x-ratelimit-*`` headers say."""
    document: dict[str, Any] = {"credential": credential.kind}
    try:
        token = await credential.bearer(transport, now)
        status, headers, body = await transport.exchange(
            rate_limit_request(credential.api_url, token)
        )
    except GitHubAuthError as error:
        return document | {"error": error.reason}
    except Exception as error:  # the adapter's transport error, a timeout
        return document | {"error": f"GitHub unreachable ({type(error).__name__})"}
    if status == 401:
        credential.forget()
    quota = read_rate_limit(headers)
    if status != 200 or quota is None:
        return document | {
            "error": f"GitHub answered {status} ({github_message(body, _MAX_REASON)})"
        }
    document |= {key: quota[key] for key in ("limit", "remaining") if key in quota}
    if "used" in quota:
        document["used"] = quota["used"]
    if "reset" in quota:
        document["reset_at"] = datetime.fromtimestamp(quota["reset"], UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
    return document


RateLimitReader = Callable[[], Awaitable[dict[str, Any]]]
