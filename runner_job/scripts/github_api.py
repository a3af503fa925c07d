"""The GitHub REST calls the register and deregister tasks make, and what their failures mean.

Standard library only: the tasks run it on a stock ``python:3`` image, delivered by a Nomad
template next to the task script, which imports it from its own directory. Every failure becomes
a ``GitHubError`` whose message says what an operator should fix; the task scripts print it and
exit non-zero. The credential is read from a file and never printed.

Two kinds of credential (``GITHUB_AUTH``): ``token``, a token in ``GITHUB_TOKEN_FILE``; or
``app``, a GitHub App's private key in ``GITHUB_APP_KEY_FILE``, from which the task mints a
short-lived installation token when it starts: a JWT (``iss`` the App id, ``iat`` 60 s back for
clock drift, ``exp`` 9 minutes on, under GitHub's 10-minute maximum) signed RS256 by the
``openssl`` CLI (``openssl dgst -sha256 -sign``: the image's OpenSSL does the RSA, this file only
frames the JWT), exchanged at ``POST /app/installations/{id}/access_tokens``. The key stays in
the task's secrets directory (openssl reads it there) and the installation token in memory.

Two scopes (``RUNNER_SCOPE``): ``repository`` runners live under ``/repos/{owner}/{repo}``,
``organization`` runners under ``/orgs/{GITHUB_OWNER}``, in the pool's runner group.

Nomad renders this file as a Go template: it must never contain two opening braces in a row.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "nomad-github-runner-tasks"
# Statuses worth one more try after a pause: GitHub's own trouble, not ours.
TRANSIENT_STATUSES: Final = frozenset({500, 502, 503, 504})
MAX_RUNNER_NAME: Final = 64
AUTH_KINDS: Final = ("token", "app")
RUNNER_SCOPES: Final = ("repository", "organization")
# GitHub refuses a JWT whose exp is more than 10 minutes ahead; the margin covers a fast clock.
JWT_BACKDATE_SECONDS: Final = 60
JWT_LIFETIME_SECONDS: Final = 540
OPENSSL_TIMEOUT_SECONDS: Final = 10.0
# The dispatch meta github_repository must be an owner/name the handler would accept: the same
# pattern as handler.contract.REPOSITORY_PATTERN (these scripts cannot import the handler on
# Nomad; a test keeps the two equal). Anything else never reaches a GitHub API path.
REPOSITORY_PATTERN: Final = re.compile(
    r"\A(?!\.\.?(?:/|\Z))[A-Za-z0-9_.-]{1,100}/(?!\.\.?(?:/|\Z))[A-Za-z0-9_.-]{1,100}\Z"
)


class GitHubError(Exception):
    """A GitHub call failed; ``str(error)`` says what happened and what to fix."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and where it comes from."""


@dataclass(frozen=True)
class Response:
    status: int
    body: Any  # decoded JSON, or None for an empty or non-JSON body
    headers: Mapping[str, str]


def setting(value: str | None, env_name: str, *, required: bool = True) -> str:
    """A setting from its CLI flag, else from the environment; missing ones fail by name."""
    if value is None:
        value = os.environ.get(env_name)
    if required and not value:
        raise ConfigError(f"missing setting: pass the flag or set environment variable {env_name}")
    return value or ""


def read_token(path: str) -> str:
    """The GitHub credential from the file a Nomad template rendered."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as error:
        raise ConfigError(
            f"cannot read the GitHub credential file {path} ({error.strerror})"
        ) from None
    if not token:
        raise ConfigError(
            f"the GitHub credential file {path} is empty: the Nomad Variable exists but its "
            "github_token item is missing or empty"
        )
    return token


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def app_jwt_signing_input(app_id: str, now: float) -> str:
    """The JWT's ``header.claims`` (base64url), to be signed RS256 with the App's key."""
    header = {"alg": "RS256", "typ": "JWT"}
    issued = int(now) - JWT_BACKDATE_SECONDS
    claims = {"iat": issued, "exp": int(now) + JWT_LIFETIME_SECONDS, "iss": app_id}
    parts = (json.dumps(part, separators=(",", ":")).encode() for part in (header, claims))
    return ".".join(_base64url(part) for part in parts)


def sign_rs256(signing_input: str, key_file: str) -> str:
    """The base64url RS256 signature of ``signing_input`` by the PEM key in ``key_file``.

    ``openssl dgst -sha256 -sign`` is RSASSA-PKCS1-v1_5 over SHA-256, which is RS256; it reads
    the key from the file itself (PKCS#1 "RSA PRIVATE KEY", as GitHub gives it, or PKCS#8).
    Its error output is not repeated: nothing of the key should reach a log.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ConfigError(
            'GITHUB_AUTH is "app" but the helper image has no openssl CLI to sign the App\'s JWT: '
            "use an image that has one, e.g. python:3.13.9-slim-trixie (images.helper)"
        )
    if not os.path.isfile(key_file) or os.path.getsize(key_file) == 0:
        raise ConfigError(
            f"the GitHub App key file {key_file} is missing or empty: the Nomad Variable exists "
            "but its github_app_private_key item is missing or empty"
        )
    try:
        done = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
            [openssl, "dgst", "-sha256", "-sign", key_file],
            input=signing_input.encode("ascii"),
            capture_output=True,
            timeout=OPENSSL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ConfigError(f"cannot run openssl to sign the App's JWT ({error})") from None
    if done.returncode != 0 or not done.stdout:
        raise ConfigError(
            f"openssl could not sign with the GitHub App key in {key_file} (exit status "
            f"{done.returncode}): the github_app_private_key item must be the App's PEM private "
            "key, as downloaded from the App's settings"
        )
    return _base64url(done.stdout)


def app_jwt(app_id: str, key_file: str, now: float) -> str:
    signing_input = app_jwt_signing_input(app_id, now)
    return f"{signing_input}.{sign_rs256(signing_input, key_file)}"


def runner_name(pool: str, alloc_id: str) -> str:
    """The runner's name: the whole allocation id (unique) after the pool's name, <= 64 chars.

    Register names the runner with it; deregister recomputes it from its own environment and
    deletes a runner only if GitHub reports this name, so a changed hand-off file cannot make it
    delete another runner. The pool part is cut short if needed, never the allocation id.
    """
    compact = alloc_id.replace("-", "").lower()
    if not compact:
        raise ConfigError("the allocation id (NOMAD_ALLOC_ID) is empty")
    prefix = f"nomad-{pool}"[: MAX_RUNNER_NAME - len(compact) - 1]
    return f"{prefix}-{compact}"


def split_repository(repository: str) -> tuple[str, str]:
    """Owner and name of a valid ``owner/name``, each quoted as one URL path segment.

    Checked before any request: the value comes from the dispatch meta, which anyone holding
    the dispatch token can set, and must never add a query, a fragment or another path.
    """
    if not REPOSITORY_PATTERN.match(repository):
        raise ConfigError(
            f"repository {repository!r} (GITHUB_REPOSITORY, from the dispatch meta "
            "github_repository) is not of the form owner/name with letters, digits, '-', '_' "
            "and '.' only"
        )
    owner, _, name = repository.partition("/")
    return urllib.parse.quote(owner, safe=""), urllib.parse.quote(name, safe="")


@dataclass(frozen=True)
class Client:
    """One repository's runner endpoints, with one credential."""

    api_url: str
    token: str
    timeout: float = 30.0
    retries: int = 2
    retry_delay: float = 2.0

    def call(self, method: str, path: str, body: Any = None) -> Response:
        """Send one request; retry transient failures; return any answer GitHub gave."""
        attempt = 0
        while True:
            try:
                return self._send(method, path, body)
            except GitHubError as error:
                transient = error.status is None or error.status in TRANSIENT_STATUSES
                if not transient or attempt >= self.retries:
                    raise
            attempt += 1
            time.sleep(self.retry_delay * attempt)

    def _send(self, method: str, path: str, body: Any) -> Response:
        url = self.api_url.rstrip("/") + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - https or a test URL
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("X-GitHub-Api-Version", API_VERSION)
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:  # noqa: S310
                return Response(answer.status, _decode(answer.read()), dict(answer.headers))
        except urllib.error.HTTPError as error:
            response = Response(error.code, _decode(error.read()), dict(error.headers))
            if error.code in TRANSIENT_STATUSES:
                raise GitHubError(
                    f"{method} {path}: GitHub answered {error.code} "
                    f"({_message(response)}): a GitHub-side failure; try again later",
                    status=error.code,
                ) from None
            return response
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            raise GitHubError(
                f"{method} {path}: cannot reach the GitHub API at {self.api_url} ({reason}): "
                "check the github_api_url setting and the client's outbound network"
            ) from None


def installation_token(
    api_url: str,
    *,
    app_id: str,
    installation_id: str,
    key_file: str,
    now: float,
    timeout: float = 30.0,
    retries: int = 2,
    retry_delay: float = 2.0,
) -> str:
    """A fresh installation token (valid one hour) for the App's installation."""
    if not app_id.isdigit() or not installation_id.isdigit():
        raise ConfigError(
            "GITHUB_APP_ID and GITHUB_APP_INSTALLATION_ID must be numbers, got "
            f"{app_id!r} and {installation_id!r}"
        )
    client = Client(
        api_url,
        app_jwt(app_id, key_file, now),
        timeout=timeout,
        retries=retries,
        retry_delay=retry_delay,
    )
    path = f"/app/installations/{installation_id}/access_tokens"
    answer = client.call("POST", path)
    if answer.status == 201:
        token = answer.body.get("token") if isinstance(answer.body, dict) else None
        if isinstance(token, str) and token:
            return token
        raise GitHubError(
            f"POST {path}: GitHub answered 201 without a token; is github_api_url a GitHub "
            "REST API?"
        )
    said = _message(answer)
    head = (
        f"minting an installation token for GitHub App {app_id}: GitHub answered "
        f"{answer.status} ({said})"
    )
    if is_rate_limited(answer):
        fix = "the App's rate limit is used up; wait"
    elif answer.status == 401:
        fix = (
            "GitHub refused the App's JWT: the key in github_app_private_key is not this App's "
            "(or was revoked), GITHUB_APP_ID is not its id, or this node's clock is off by more "
            "than a minute"
        )
    elif answer.status in (403, 404):
        fix = (
            f"installation {installation_id} of App {app_id} does not exist: the App was "
            "uninstalled or suspended, or github.installation_id is wrong"
        )
    else:
        fix = "unexpected answer; see GitHub's message above"
    raise GitHubError(f"{head}: {fix}", status=answer.status)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """The flags both task scripts take; each falls back to the environment the jobspec sets."""
    flag = parser.add_argument
    flag("--api-url", help="GitHub API base URL [env GITHUB_API_URL]")
    flag("--repository", help="owner/name [env GITHUB_REPOSITORY]")
    flag("--auth", choices=AUTH_KINDS, help="token or app [env GITHUB_AUTH, default token]")
    flag("--token-file", help="file holding the GitHub token [env GITHUB_TOKEN_FILE]")
    flag("--app-id", help="GitHub App id (auth app) [env GITHUB_APP_ID]")
    flag(
        "--installation-id", help="its installation id (auth app) [env GITHUB_APP_INSTALLATION_ID]"
    )
    flag("--app-key-file", help="the App's PEM private key (auth app) [env GITHUB_APP_KEY_FILE]")
    flag(
        "--scope",
        choices=RUNNER_SCOPES,
        help="repository or organization runners [env RUNNER_SCOPE, default repository]",
    )
    flag("--owner", help="the organization of organization runners [env GITHUB_OWNER]")
    flag(
        "--credential-variable", help="Nomad Variable path, for messages [env CREDENTIAL_VARIABLE]"
    )
    flag("--pool", help="runner pool name [env RUNNER_POOL]")
    flag("--alloc-id", help="Nomad allocation id [env NOMAD_ALLOC_ID]")
    flag("--handoff-dir", help="directory shared with the runner task [env RUNNER_HANDOFF_DIR]")
    flag("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    flag("--retries", type=int, default=2, help="extra tries on GitHub 5xx or network errors")
    flag("--retry-delay", type=float, default=2.0, help="seconds before the first retry")


def auth_kind(args: argparse.Namespace) -> str:
    kind = setting(args.auth, "GITHUB_AUTH", required=False) or "token"
    if kind not in AUTH_KINDS:
        raise ConfigError(f'GITHUB_AUTH must be "token" or "app", got {kind!r}')
    return kind


def credential_item(args: argparse.Namespace) -> str:
    """The Nomad Variable item holding this task's credential, for messages."""
    return "github_app_private_key" if auth_kind(args) == "app" else "github_token"


def client_from(args: argparse.Namespace) -> Client:
    """The GitHub client the common flags describe: the token read from its file, or an
    installation token minted from the App's key."""
    api_url = setting(args.api_url, "GITHUB_API_URL")
    if auth_kind(args) == "app":
        token = installation_token(
            api_url,
            app_id=setting(args.app_id, "GITHUB_APP_ID"),
            installation_id=setting(args.installation_id, "GITHUB_APP_INSTALLATION_ID"),
            key_file=setting(args.app_key_file, "GITHUB_APP_KEY_FILE"),
            now=time.time(),
            timeout=args.timeout,
            retries=args.retries,
            retry_delay=args.retry_delay,
        )
    else:
        token = read_token(setting(args.token_file, "GITHUB_TOKEN_FILE"))
    return Client(
        api_url=api_url,
        token=token,
        timeout=args.timeout,
        retries=args.retries,
        retry_delay=args.retry_delay,
    )


def runners_path(args: argparse.Namespace, repository: str) -> str:
    """Where this allocation's runner lives: ``/repos/{o}/{r}/actions/runners``, or for
    organization runners ``/orgs/{org}/actions/runners``, the org being the configured owner
    (``GITHUB_OWNER``), which must own ``repository`` too."""
    owner, repo = split_repository(repository)
    scope = setting(args.scope, "RUNNER_SCOPE", required=False) or "repository"
    if scope not in RUNNER_SCOPES:
        raise ConfigError(f'RUNNER_SCOPE must be "repository" or "organization", got {scope!r}')
    if scope == "repository":
        return f"/repos/{owner}/{repo}/actions/runners"
    organization = setting(args.owner, "GITHUB_OWNER")
    if organization.lower() != urllib.parse.unquote(owner).lower():
        raise ConfigError(
            f"repository {repository!r} (the dispatch meta github_repository) is not owned by "
            f"the organization {organization!r} (GITHUB_OWNER) whose runners this job registers"
        )
    return f"/orgs/{urllib.parse.quote(organization, safe='')}/actions/runners"


def run_task(
    task: str,
    parse_args: Callable[[Sequence[str]], argparse.Namespace],
    work: Callable[[argparse.Namespace], str],
    argv: Sequence[str],
) -> int:
    """Run a task: print what ``work`` did or the error; exit 0, 1 (GitHub) or 2 (a setting)."""
    args = parse_args(argv)
    try:
        print(work(args), flush=True)
    except ConfigError as error:
        print(f"{task}: bad setting: {error}", file=sys.stderr)
        return 2
    except GitHubError as error:
        print(f"{task}: {error}", file=sys.stderr)
        return 1
    return 0


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _message(response: Response) -> str:
    if isinstance(response.body, dict) and isinstance(response.body.get("message"), str):
        return str(response.body["message"])
    return "no message"


def _header(response: Response, name: str) -> str | None:
    for key, value in response.headers.items():
        if key.lower() == name:
            return value
    return None


def is_rate_limited(response: Response) -> bool:
    """A rate limit, not a refusal: any 429, or a 403 with the quota at 0 (primary limit) or with
    ``retry-after`` or a message naming the secondary rate limit (GitHub answers it either way)."""
    if response.status == 429:
        return True
    if response.status != 403:
        return False
    return (
        _header(response, "x-ratelimit-remaining") == "0"
        or _header(response, "retry-after") is not None
        or "secondary rate limit" in _message(response).lower()
    )


def explain(
    response: Response,
    *,
    action: str,
    repository: str,
    credential_variable: str,
    item: str = "github_token",
    organization: bool = False,
) -> GitHubError:
    """Turn a failed answer into an error that names the cause and the fix."""
    status = response.status
    said = _message(response)
    head = f"{action} for {repository}: GitHub answered {status} ({said})"
    where = f"the Nomad Variable {credential_variable}, item {item}"
    if is_rate_limited(response):
        reset = _header(response, "x-ratelimit-reset")
        when = ""
        if reset and reset.isdigit():
            when = " until " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(reset)))
        fix = (
            f"the token's API rate limit is used up{when}; wait, or give this pool its own token "
            "or a GitHub App installation token"
        )
    elif status == 401:
        fix = f"the credential is invalid, expired or revoked; store a valid token in {where}"
    elif status == 403 and organization:
        fix = (
            "the credential may not manage the organization's runners; grant it the organization "
            'permission "Self-hosted runners: read and write" (fine-grained token or GitHub '
            f"App), and update {where}"
        )
    elif status == 403:
        fix = (
            "the token may not manage this repository's runners; grant it the repository "
            'permission "Administration: read and write" (fine-grained token or GitHub App), '
            f"make sure the repository is in its selected repositories, and update {where}"
        )
    elif status == 404 and organization:
        fix = (
            "the organization does not exist or the credential cannot manage its runners; check "
            "github.owner and the credential's organization permission"
        )
    elif status == 404:
        fix = (
            "the repository does not exist or the token cannot see it; check the dispatch meta "
            "github_repository and the token's repository access"
        )
    elif status == 409:
        fix = "a runner with this name already exists; names are per allocation, so re-dispatch"
    elif status == 422:
        fix = (
            "GitHub rejected the request; check runner_group_id (the group must exist and be "
            "open to this repository) and runner_labels (1 to 100 non-empty labels)"
        )
    else:
        fix = "unexpected answer; see GitHub's message above"
    return GitHubError(f"{head}: {fix}", status=status)
