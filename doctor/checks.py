"""Every check doctor runs, in the order a request travels, and what each failure means.

A check is a function ``(Context) -> Iterable[Outcome]`` listed in :data:`CHECKS`; each outcome
is one part (one token on one repository, one hook, one pool job...) that passed or failed, and a
failed one names the one thing to change. To add a check, write such a function and put it in
:data:`CHECKS`: a check that does not apply to a configuration (e.g. a per-pool feature no pool
uses) yields nothing. Checks only read: every request goes through ``Context.http.get``.

What each check relies on, from the services' source and docs:

* GitHub (fine-grained token permissions): ``GET /repos/{o}/{r}/actions/runners`` needs
  "Administration: read", ``GET .../actions/runs`` "Actions: read", ``GET .../hooks`` and
  ``.../hooks/{id}/deliveries`` "Webhooks: read". A repository outside the token's selection is a
  404, a missing permission a 403. Write access cannot be proven without writing, so the runner
  token's "write" and the hooks token's "write" are not checked. With ``runner_scope =
  "organization"`` the runner token lists ``GET /orgs/{org}/actions/runners`` instead (the
  organization permission "Self-hosted runners").
* GitHub App (``auth = "app"``, :mod:`doctor.github_app`): one installation token replaces the
  three tokens. Its answer's ``permissions`` (GitHub's names: ``administration``, ``actions``,
  ``repository_hooks``, ``organization_self_hosted_runners``; ``read`` < ``write``) are what
  every token of the installation may do, write included; ``GET /installation/repositories``
  lists the repositories it reaches. The hooks checks read with that token.
* Runner groups (``runner_scope = "organization"``): ``GET
  /orgs/{org}/actions/runner-groups/{id}`` has ``visibility`` (``all``, ``selected`` or
  ``private``: every private repository) and ``allows_public_repositories``; only a
  ``selected`` group has a list, ``GET .../runner-groups/{id}/repositories``. Both need the
  organization permission "Self-hosted runners: read".
* Nomad: ``/v1/status/leader`` answers without any ACL token, so whatever refuses it on the
  Nomad API hostname is Access; ``GET /v1/var/{path}`` checks the read capability before it
  looks the variable up (403 ``Permission denied``); ``GET /v1/vars?prefix=`` lists metadata
  only; ``GET /v1/acl/token/self`` and ``/v1/acl/policy/{name}`` (a token may read its own
  policies; ``RulesJSON`` has the expanded capabilities) show what a token may do;
  ``/v1/agent/members`` (servers, ``Tags["build"]``) and ``/v1/nodes`` (clients, ``Version``,
  from each node's ``nomad.version`` attribute) need ``node:read``; ``/v1/agent/self`` would only
  show the one agent that answers.

A per-pool check yields nothing for pools it does not concern: the dind check reads
``GET /v1/nodes`` and each candidate node's
``Drivers["docker"].Attributes["driver.docker.privileged.enabled"]`` (the docker driver sets it
when its plugin config has ``allow_privileged``) only when a pool has ``docker = "dind"``.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypeVar
from urllib.parse import quote, urlencode

from config import OFFICIAL_RUNNER_IMAGE, AppConfig, PoolConfig, RepositoryConfig
from doctor import github_app, versions
from doctor.state import (
    ACCESS_CLIENT_ID_OUTPUT,
    ACCESS_CLIENT_SECRET_OUTPUT,
    DISPATCH_STACK,
    DISPATCH_TOKEN_OUTPUT,
    EDGE_STACK,
    NOMAD_STACK,
    STATUS_TOKEN_OUTPUT,
    StateError,
    StateOutputs,
)
from doctor.web import Answer, Http, Unreachable
from handler.contract import DISPATCH_META_KEYS, webhook_path
from runner_job import (
    CLOUDFLARED_JOB,
    RUNNER_TASK,
    credential_variable_paths,
    tunnel_token_variable_path,
)

_T = TypeVar("_T")

RUNNER_TOKEN_ENV: Final = "TF_VAR_github_runner_token"
READ_TOKEN_ENV: Final = "TF_VAR_github_read_token"
HOOKS_TOKEN_ENV: Final = "GITHUB_TOKEN"
NOMAD_TOKEN_ENV: Final = "NOMAD_TOKEN"
RELEASES_TOKEN_ENV: Final = "TF_VAR_github_releases_token"  # optional, github.com
RUNNER_RELEASES_URL: Final = "https://api.github.com/repos/actions/runner/releases?per_page=30"
GITHUB_API_VERSION: Final = "2022-11-28"
DELIVERIES_PER_HOOK: Final = 30
HOOK_EVENTS: Final = ("workflow_job",)
# What a Worker answer in a failed delivery means (handler/service.py lists the statuses).
_DELIVERY_FIXES: Final[dict[int, str]] = {
    0: "GitHub could not connect to the webhook hostname: see the /healthz check",
    400: "the Worker refused the payload as malformed: read the Worker's log line for the field",
    401: "the hook's secret does not match the Worker's key: deploy dispatch, then github "
    "(cdktf deploy --ignore-missing-stack-dependencies --parallelism 1 dispatch github)",
    404: "the Worker does not serve this repository or path: deploy dispatch (its routing) "
    "after adding the repository to github.repositories",
    413: "the delivery was over 1 MiB: nothing to change unless it recurs",
    502: "Nomad or Access refused the Worker's dispatch: see the Access and dispatch token checks",
    503: "the Worker could not reach Nomad: see the Access gate and cloudflared checks",
}


@dataclass(frozen=True)
class Outcome:
    """One part of the installation: passed or not, what was seen, and on failure the fix."""

    part: str
    passed: bool
    detail: str
    fix: str = ""


def passed(part: str, detail: str) -> Outcome:
    return Outcome(part, True, detail)


def failed(part: str, detail: str, fix: str) -> Outcome:
    return Outcome(part, False, detail, fix)


@dataclass
class Context:
    """What the checks read from: configuration, credentials, state, the network, the clock."""

    config: AppConfig
    http: Http
    state: StateOutputs
    env: Mapping[str, str]
    now: datetime
    github_api_url: str
    webhook_url: str  # https://{webhook_hostname}
    nomad_api_url: str  # https://{nomad_api_hostname}: Access, the tunnel, then Nomad
    nomad_address: str  # where Terraform reaches Nomad (nomad.address), with NOMAD_TOKEN
    releases_url: str = RUNNER_RELEASES_URL
    # The real clock, for the App's JWT (GitHub checks its iat and exp); ``now`` may be fixed.
    clock: Callable[[], float] = time.time
    parallel: int = 8  # requests in flight at once (GitHub allows 100 concurrent per token)
    # Every credential read so far, for the redactor; and answers shared between checks.
    secrets: set[str] = field(default_factory=set)
    _cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_config(
        cls,
        config: AppConfig,
        *,
        http: Http,
        state: StateOutputs,
        env: Mapping[str, str],
        now: datetime,
    ) -> Context:
        return cls(
            config=config,
            http=http,
            state=state,
            env=env,
            now=now,
            github_api_url=config.github.api_url,
            webhook_url=f"https://{config.cloudflare.webhook_hostname}",
            nomad_api_url=f"https://{config.cloudflare.nomad_api_hostname}",
            nomad_address=config.nomad.address,
        )

    @property
    def namespace(self) -> str:
        return self.config.nomad.namespace

    def credential(self, name: str) -> str | None:
        """An environment credential (remembered for redaction), or None when unset."""
        raw = self.env.get(name, "")
        value = raw.strip()
        if not value:
            return None
        self.secrets.update({raw, value})
        if "-----BEGIN" in value:
            # A PEM key: each base64 line too, should anything ever print one line of it.
            lines = value.replace("\\n", "\n").splitlines()
            self.secrets.update(
                line.strip() for line in lines if "-----" not in line and len(line.strip()) >= 16
            )
        return value

    def state_value(self, stack: str, name: str) -> str:
        value = self.state.value(stack, name)
        self.secrets.add(value)
        return value

    def each(self, work: Callable[[_T], list[Outcome]], items: Iterable[_T]) -> Iterator[Outcome]:
        """``work`` on every item, up to ``parallel`` at a time, outcomes in the items' order:
        with many repositories the checks wait on GitHub, not on each other."""
        with ThreadPoolExecutor(max_workers=self.parallel) as pool:
            for outcomes in pool.map(work, items):
                yield from outcomes

    def cached(self, key: str, load: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = load()
        return self._cache[key]


Check = Callable[[Context], Iterable[Outcome]]


# -- GitHub ------------------------------------------------------------------------------------


def _github_headers(token: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": GITHUB_API_VERSION,
    }


def _repo_path(full_name: str) -> str:
    owner, _, name = full_name.partition("/")
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def _github_message(answer: Answer) -> str:
    try:
        message = answer.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message)[:120] if message else answer.text()


def _rate_limited(answer: Answer) -> bool:
    return answer.status in (403, 429) and (
        answer.headers.get("x-ratelimit-remaining") == "0" or "retry-after" in answer.headers
    )


def _github_refusal(
    answer: Answer, *, env_name: str, permission: str, repo: str, admin_only: bool = False
) -> tuple[str, str]:
    """(what GitHub said, the one fix) for an answer that is not a 200."""
    status = answer.status
    said = f"GitHub answered {status} {_github_message(answer)!r}"
    if status == 401:
        return said, f"set {env_name} to a valid token (this one is expired, revoked or mistyped)"
    if _rate_limited(answer):
        return said, "the token's rate limit is used up: run doctor again after it resets (1 h)"
    if status == 403:
        return (
            said,
            f"give the token in {env_name} the repository permission {permission} on {repo}",
        )
    if status == 404:
        # Webhook endpoints answer 404 to anyone but a repository admin, even with a token.
        owner = "; its owner must be an admin of the repository" if admin_only else ""
        return said, (
            f"add {repo} to the repositories the token in {env_name} may access (or fix "
            f"github.owner/repositories if the name is wrong){owner}"
        )
    return said, "GitHub failed to answer: run doctor again; if it persists see githubstatus.com"


def _github_get(ctx: Context, token: str, path: str) -> Answer:
    return ctx.http.get(f"{ctx.github_api_url}{path}", _github_headers(token))


def _token_reaches(
    ctx: Context,
    *,
    env_name: str,
    role: str,
    permission: str,
    suffix: str,
    proof: str,
    stored_by: str,
) -> Iterator[Outcome]:
    """Per repository: the token in ``env_name`` answers 200 on ``suffix``. ``stored_by`` is the
    stack that hands the token on (deploy it again once the token is fixed)."""
    token = ctx.credential(env_name)

    def reach(repo: RepositoryConfig) -> list[Outcome]:
        part = f"{role} reaches {repo.full_name}"
        if token is None:
            return [
                failed(part, f"{env_name} is not set", f"export {env_name} (the deploy's token)")
            ]
        try:
            answer = _github_get(ctx, token, f"{_repo_path(repo.full_name)}{suffix}")
        except Unreachable as error:
            return [failed(part, str(error), "check the network path to github.api_url")]
        if answer.status == 200:
            return [passed(part, proof)]
        said, fix = _github_refusal(
            answer, env_name=env_name, permission=permission, repo=repo.full_name
        )
        return [failed(part, said, f"{fix}; then {stored_by}")]

    yield from ctx.each(reach, ctx.config.github.repositories)


def _app_auth(ctx: Context) -> bool:
    return ctx.config.github.auth == "app"


def _organization_scope(ctx: Context) -> bool:
    return ctx.config.github.runner_scope == "organization"


def _org_path(ctx: Context) -> str:
    return f"/orgs/{quote(ctx.config.github.owner, safe='')}"


def check_runner_token(ctx: Context) -> Iterator[Outcome]:
    """The runner token lists the repository's runners: "Administration: read" at least; with
    organization scope it lists the organization's runners ("Self-hosted runners: read").

    Minting a runner config needs "read and write", and no read-only request proves write; a
    token with read only fails later, in the register task (403). With ``auth = "app"`` there
    is no runner token: the App checks stand for it.
    """
    if _app_auth(ctx):
        return
    if _organization_scope(ctx):
        yield _runner_token_reaches_organization(ctx)
        return
    yield from _token_reaches(
        ctx,
        env_name=RUNNER_TOKEN_ENV,
        role="runner token",
        permission='"Administration: read and write"',
        suffix="/actions/runners?per_page=1",
        proof="listed the runners (Administration: read; write is not provable without writing)",
        stored_by="deploy nomad (it puts the token in the credential Variables)",
    )


def _runner_token_reaches_organization(ctx: Context) -> Outcome:
    organization = ctx.config.github.owner
    part = f"runner token reaches the runners of organization {organization}"
    token = ctx.credential(RUNNER_TOKEN_ENV)
    if token is None:
        return failed(
            part,
            f"{RUNNER_TOKEN_ENV} is not set",
            f"export {RUNNER_TOKEN_ENV} (the deploy's token)",
        )
    try:
        answer = _github_get(ctx, token, f"{_org_path(ctx)}/actions/runners?per_page=1")
    except Unreachable as error:
        return failed(part, str(error), "check the network path to github.api_url")
    if answer.status == 200:
        return passed(
            part,
            "listed the organization's runners (Self-hosted runners: read; write is not "
            "provable without writing)",
        )
    said = f"GitHub answered {answer.status} {_github_message(answer)!r}"
    then = "; then deploy nomad (it puts the token in the credential Variables)"
    if answer.status == 401:
        fix = f"set {RUNNER_TOKEN_ENV} to a valid token (this one is expired, revoked or mistyped)"
    elif _rate_limited(answer):
        fix = "the token's rate limit is used up: run doctor again after it resets (1 h)"
    elif answer.status == 403:
        fix = (
            f'give the token in {RUNNER_TOKEN_ENV} the organization permission "Self-hosted '
            f'runners: read and write" on {organization}'
        )
    elif answer.status == 404:
        fix = (
            f"make the token in {RUNNER_TOKEN_ENV} with resource owner {organization} (a "
            "fine-grained token belongs to one owner), or fix github.owner"
        )
    else:
        fix = "GitHub failed to answer: run doctor again; if it persists see githubstatus.com"
    return failed(part, said, f"{fix}{then}")


def check_read_token(ctx: Context) -> Iterator[Outcome]:
    """The reconciler's token lists workflow runs: "Actions: read", all the reconciler needs."""
    if _app_auth(ctx):
        return
    yield from _token_reaches(
        ctx,
        env_name=READ_TOKEN_ENV,
        role="read token",
        permission='"Actions: read"',
        suffix="/actions/runs?per_page=1",
        proof="listed the workflow runs (Actions: read)",
        stored_by="deploy dispatch (the token is the Worker's GITHUB_READ_TOKEN secret)",
    )


# -- GitHub App ---------------------------------------------------------------------------------

_APP_SETTINGS_FIX: Final = "see the GitHub App checks above (its permissions and repositories)"
_LEVELS: Final = {"read": 1, "write": 2, "admin": 3}
# GitHub's permission name, the level needed, how its settings page calls it, who needs it.
_APP_NEEDS: Final = {
    "repository": (
        ("administration", "write", "Repository: Administration", "the register/deregister tasks"),
    ),
    "organization": (
        (
            "organization_self_hosted_runners",
            "write",
            "Organization: Self-hosted runners",
            "the register/deregister tasks",
        ),
    ),
    "both": (
        ("actions", "read", "Repository: Actions", "the Worker (reconciler, fork check)"),
        ("repository_hooks", "write", "Repository: Webhooks", "Terraform's github stack"),
    ),
}
_LEVEL_NAMES: Final = {"read": "Read-only", "write": "Read and write", "admin": "Admin"}


def _installation_token(ctx: Context) -> github_app.InstallationToken | github_app.MintError:
    """The run's one installation token (minted on first use), or why there is none."""

    def mint() -> github_app.InstallationToken | github_app.MintError:
        github = ctx.config.github
        key = ctx.credential(github_app.APP_KEY_ENV)
        if key is None:
            return github_app.MintError(
                f"{github_app.APP_KEY_ENV} is not set",
                f'export {github_app.APP_KEY_ENV}="$(cat app.pem)" (the deploy\'s App key)',
            )
        assert github.app_id is not None and github.installation_id is not None  # config checks
        try:
            return github_app.mint(
                ctx.http,
                api_url=ctx.github_api_url,
                app_id=github.app_id,
                installation_id=github.installation_id,
                key_pem=key,
                now=ctx.clock(),
                remember=ctx.secrets.add,
            )
        except github_app.MintError as error:
            return error
        except Unreachable as error:
            return github_app.MintError(str(error), "check the network path to github.api_url")

    minted: github_app.InstallationToken | github_app.MintError = ctx.cached("app-token", mint)
    return minted


def check_github_app(ctx: Context) -> Iterator[Outcome]:
    """With ``auth = "app"``: the key mints an installation token, the installation has every
    permission each role needs for the runner scope, and it reaches every served repository."""
    if not _app_auth(ctx):
        return
    github = ctx.config.github
    minted = _installation_token(ctx)
    part = f"App {github.app_id} mints a token for installation {github.installation_id}"
    if isinstance(minted, github_app.MintError):
        yield failed(part, minted.detail, minted.fix)
        return
    yield passed(
        part,
        f"minted an installation token valid until {minted.expires_at} (repository access: "
        f"{minted.repository_selection})",
    )
    needs = _APP_NEEDS[github.runner_scope] + _APP_NEEDS["both"]
    for key, level, name, role in needs:
        wanted = f"{name}: {_LEVEL_NAMES[level]}"
        part = f"App grants {role} {wanted}"
        has = minted.permissions.get(key)
        if has is not None and _LEVELS.get(has, 0) >= _LEVELS[level]:
            yield passed(part, f"the installation token has {key}: {has}")
            continue
        seen = f"{key}: {has}" if has else f"no {key} permission"
        yield failed(
            part,
            f"the installation token has {seen} ({github.runner_scope} scope needs {level})",
            f"set {wanted} in the App's settings (Permissions & events), then accept the new "
            "permissions on the installation (the owner's Settings > GitHub Apps > Configure: "
            "GitHub asks the owner to approve them); tokens minted after that carry them",
        )
    yield from _installation_repositories(ctx, minted)


def _installation_repositories(
    ctx: Context, minted: github_app.InstallationToken
) -> Iterator[Outcome]:
    part = "App installation's repositories readable"
    names: set[str] = set()
    page, total = 1, None
    while total is None or len(names) < total:
        try:
            answer = _github_get(
                ctx, minted.token, f"/installation/repositories?per_page=100&page={page}"
            )
        except Unreachable as error:
            yield failed(part, str(error), "check the network path to github.api_url")
            return
        if answer.status != 200:
            said = f"GitHub answered {answer.status} {_github_message(answer)!r}"
            yield failed(part, said, "run doctor again; if it persists see githubstatus.com")
            return
        document = answer.json()
        listed = [
            str(repository.get("full_name", "")).lower()
            for repository in document.get("repositories") or []
            if isinstance(repository, dict)
        ]
        total = int(document.get("total_count") or 0)
        names.update(listed)
        if not listed:
            break
        page += 1
    for repo in ctx.config.github.repositories:
        part = f"App installation includes {repo.full_name}"
        if repo.full_name.lower() in names:
            yield passed(part, f"among the installation's {len(names)} repositories")
        else:
            yield failed(
                part,
                f"not among the installation's {len(names)} repositories: no role can reach it "
                "(no runner, no reconciler, no hook)",
                f"add {repo.full_name} to the App's installation (the owner's Settings > GitHub "
                "Apps > Configure > Repository access: Only select repositories), or fix "
                "github.owner/repositories if the name is wrong",
            )


# -- Runner groups (organization scope) ---------------------------------------------------------


def _runner_group_token(ctx: Context) -> tuple[str | None, str]:
    """The credential that reads runner groups, or None, and how to name it in a fix."""
    if _app_auth(ctx):
        minted = _installation_token(ctx)
        if isinstance(minted, github_app.InstallationToken):
            return minted.token, "the App"
        return None, "the App"
    return ctx.credential(RUNNER_TOKEN_ENV), f"the token in {RUNNER_TOKEN_ENV}"


def check_runner_groups(ctx: Context) -> Iterator[Outcome]:
    """With organization scope: each pool's runner group admits the pool's repositories and no
    other kind: not every repository (``visibility`` all or private), not public ones.

    A runner of the group takes any queued job of any repository the group admits whose labels
    match (README, Runner scope): a group open to all repositories lets every repository of
    the organization run code on these nodes; one open to public repositories lets strangers'
    fork pull requests do so. Repositories the group admits beyond the served ones are named,
    not failed: admitting them is the owner's choice.
    """
    if not _organization_scope(ctx):
        return
    groups: dict[int, list[PoolConfig]] = {}
    for pool in ctx.config.pools:
        groups.setdefault(pool.runner_group_id, []).append(pool)
    token, holder = _runner_group_token(ctx)
    for group_id, pools in groups.items():
        yield _runner_group(ctx, token, holder, group_id, pools)


def _runner_group(
    ctx: Context, token: str | None, holder: str, group_id: int, pools: list[PoolConfig]
) -> Outcome:
    organization = ctx.config.github.owner
    names = ", ".join(pool.name for pool in pools)
    part = f"runner group {group_id} of pool {names} admits only its repositories"
    if token is None:
        missing = (
            "fix the GitHub App check above first"
            if _app_auth(ctx)
            else f"export {RUNNER_TOKEN_ENV} (the deploy's token)"
        )
        return failed(part, "no credential to read the runner group with", missing)
    path = f"{_org_path(ctx)}/actions/runner-groups/{group_id}"
    try:
        answer = _github_get(ctx, token, path)
    except Unreachable as error:
        return failed(part, str(error), "check the network path to github.api_url")
    said = f"GitHub answered {answer.status} {_github_message(answer)!r}"
    if answer.status == 404:
        return failed(
            part,
            f"{said}: {organization} has no runner group {group_id}",
            f"set the runner_group_id of pool {names} to the id of a group of {organization} "
            "(the number at the end of its settings URL: Organization Settings > Actions > "
            "Runner groups), then deploy nomad",
        )
    if answer.status != 200:
        return failed(
            part,
            said,
            f'give {holder} the organization permission "Self-hosted runners" (read and write) '
            f"on {organization}",
        )
    group = answer.json()
    title = f"runner group {group_id} ({group.get('name')})"
    settings = f"{organization}'s Settings > Actions > Runner groups > {group.get('name')}"
    visibility = group.get("visibility")
    public = bool(group.get("allows_public_repositories")) or bool(
        group.get("inherited_allows_public_repositories")
    )
    problems = []
    if visibility in ("all", "private"):
        reach = "every repository" if visibility == "all" else "every private repository"
        problems.append(
            f"{title} admits {reach} of {organization} (Repository access: {visibility}): any of "
            "their jobs can take these runners"
        )
    if public:
        problems.append(f"{title} allows public repositories: a fork's pull request can run on it")
    if problems:
        return failed(
            part,
            "; ".join(problems),
            f"in {settings}: Repository access 'Selected repositories' with only the served "
            "ones, 'Allow public repositories' unticked"
            + (
                " (or a group of your own: the Default group is open to all)"
                if group.get("default")
                else ""
            ),
        )
    admitted, public_listed, unread = _runner_group_repositories(ctx, token, path)
    if unread is not None:
        return failed(part, unread, "run doctor again; if it persists see githubstatus.com")
    served = [
        repo.full_name
        for repo in ctx.config.github.repositories
        if any(pool.name in repo.pools for pool in pools)
    ]
    outside = [name for name in served if name.lower() not in admitted]
    if outside:
        return failed(
            part,
            f"{title} does not admit {', '.join(outside)}: their jobs never get these runners",
            f"add them to the group's selected repositories in {settings}",
        )
    extra = sorted(admitted - {name.lower() for name in served})
    note = ""
    if extra:
        note = (
            f"; it also admits {', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}, whose "
            "jobs can take these runners"
        )
    if public_listed:
        note += f"; lists public {', '.join(public_listed[:8])}, which it does not admit"
    return passed(part, f"{title} admits the selected {len(admitted)} private repositories{note}")


def _runner_group_repositories(
    ctx: Context, token: str, path: str
) -> tuple[set[str], list[str], str | None]:
    """(private repositories, public ones, error) of a ``selected`` group's list."""
    private: set[str] = set()
    public: list[str] = []
    page, total = 1, None
    while total is None or len(private) + len(public) < total:
        try:
            answer = _github_get(ctx, token, f"{path}/repositories?per_page=100&page={page}")
        except Unreachable as error:
            return private, public, str(error)
        if answer.status != 200:
            return private, public, f"GitHub answered {answer.status} {_github_message(answer)!r}"
        document = answer.json()
        listed = [item for item in document.get("repositories") or [] if isinstance(item, dict)]
        total = int(document.get("total_count") or 0)
        for item in listed:
            name = str(item.get("full_name", "")).lower()
            if item.get("private") is False or item.get("visibility") == "public":
                public.append(name)
            else:
                private.add(name)
        if not listed:
            break
        page += 1
    return private, public, None


def _expected_hook_url(ctx: Context, full_name: str) -> str:
    return f"https://{ctx.config.cloudflare.webhook_hostname}{webhook_path(full_name)}"


def check_hooks(ctx: Context) -> Iterator[Outcome]:
    """Per repository: the hooks token lists hooks, our hook is as the github stack declares it,
    and its recent deliveries succeeded. With ``auth = "app"`` the installation token reads them
    (the github stack's provider manages the hooks with the App too)."""
    if _app_auth(ctx):
        minted = _installation_token(ctx)
        token = minted.token if isinstance(minted, github_app.InstallationToken) else None
    else:
        token = ctx.credential(HOOKS_TOKEN_ENV)
    yield from ctx.each(
        lambda repo: list(_repository_hook(ctx, token, repo.full_name)),
        ctx.config.github.repositories,
    )


def _repository_hook(ctx: Context, token: str | None, name: str) -> Iterator[Outcome]:
    token_part, hook_part = f"hooks token reaches {name}", f"hook of {name}"
    if _app_auth(ctx):
        token_part = f"App installation token reads the hooks of {name}"
    if token is None and _app_auth(ctx):
        yield failed(
            token_part,
            "no installation token: the App did not mint one",
            "fix the GitHub App check above first",
        )
        return
    if token is None:
        yield failed(token_part, f"{HOOKS_TOKEN_ENV} is not set", f"export {HOOKS_TOKEN_ENV}")
        return
    try:
        answer = _github_get(ctx, token, f"{_repo_path(name)}/hooks?per_page=100")
    except Unreachable as error:
        yield failed(token_part, str(error), "check the network path to github.api_url")
        return
    if answer.status != 200:
        said, fix = _github_refusal(
            answer,
            env_name=HOOKS_TOKEN_ENV,
            permission='"Webhooks: read and write"',
            repo=name,
            admin_only=True,
        )
        if _app_auth(ctx) and answer.status in (403, 404):
            fix = (
                f"{_APP_SETTINGS_FIX}: the App needs Repository Webhooks, and {name} in its "
                "installation"
            )
        yield failed(token_part, said, fix)
        return
    yield passed(token_part, "listed the repository's hooks (Webhooks: read)")
    hooks = answer.json()
    expected = _expected_hook_url(ctx, name)
    ours = [
        hook
        for hook in hooks
        if isinstance(hook, dict) and (hook.get("config") or {}).get("url") == expected
    ]
    if not ours:
        yield failed(
            hook_part,
            f"no hook posts to {expected}",
            "deploy the github stack (cdktf deploy --ignore-missing-stack-dependencies "
            "--parallelism 1 github)",
        )
        return
    if len(ours) > 1:
        ids = ", ".join(str(hook.get("id")) for hook in ours)
        yield failed(
            hook_part,
            f"{len(ours)} hooks post to {expected} (ids {ids}): every job arrives twice",
            "delete the hooks the github stack did not create (its state names one id)",
        )
        return
    hook = ours[0]
    problems = _hook_problems(hook)
    if problems:
        yield failed(
            hook_part,
            "; ".join(problems),
            "deploy the github stack again: it restores the hook as declared",
        )
    else:
        yield passed(hook_part, f"hook {hook.get('id')} is active, workflow_job only, JSON")
    yield _deliveries(ctx, token, name, hook)


def _hook_problems(hook: Mapping[str, Any]) -> list[str]:
    problems = []
    if hook.get("active") is not True:
        problems.append("the hook is inactive")
    events = hook.get("events")
    if not isinstance(events, list) or sorted(events) != list(HOOK_EVENTS):
        problems.append(f"its events are {events}, not exactly {list(HOOK_EVENTS)}")
    config = hook.get("config") or {}
    if config.get("content_type") != "json":
        problems.append(f"content type {config.get('content_type')!r}, not 'json'")
    if str(config.get("insecure_ssl", "0")) != "0":
        problems.append("TLS verification is off (insecure_ssl)")
    return problems


def _deliveries(ctx: Context, token: str, name: str, hook: Mapping[str, Any]) -> Outcome:
    part = f"recent deliveries of {name}"
    path = f"{_repo_path(name)}/hooks/{hook.get('id')}/deliveries?per_page={DELIVERIES_PER_HOOK}"
    try:
        answer = _github_get(ctx, token, path)
    except Unreachable as error:
        return failed(part, str(error), "check the network path to github.api_url")
    if answer.status != 200:
        said, fix = _github_refusal(
            answer,
            env_name=HOOKS_TOKEN_ENV,
            permission='"Webhooks: read"',
            repo=name,
            admin_only=True,
        )
        return failed(part, said, fix)
    items = [item for item in answer.json() if isinstance(item, dict)]
    items.sort(key=lambda item: str(item.get("delivered_at", "")), reverse=True)
    if not items:
        return passed(part, "no deliveries yet")
    # Failures since the newest success are current; older ones were followed by a success.
    current: list[Mapping[str, Any]] = []
    for item in items:
        if _delivery_ok(item):
            break
        current.append(item)
    earlier = [item for item in items[len(current) :] if not _delivery_ok(item)]
    if current:
        listed = "; ".join(_delivery_line(item) for item in current[:5])
        more = f" and {len(current) - 5} more" if len(current) > 5 else ""
        code = _status_code(current[0])
        fix = _DELIVERY_FIXES.get(
            code, f"the Worker answered {code}: read its log line for this delivery"
        )
        return failed(
            part,
            f"the last {len(current)} of {len(items)} deliveries failed: {listed}{more}",
            f"{fix}; then redeliver them (the reconciler also picks up jobs still queued)",
        )
    note = f"; {len(earlier)} earlier failure(s), since followed by a success" if earlier else ""
    return passed(part, f"the newest of {len(items)} deliveries succeeded{note}")


def _status_code(item: Mapping[str, Any]) -> int:
    code = item.get("status_code")
    return code if isinstance(code, int) else 0


def _delivery_ok(item: Mapping[str, Any]) -> bool:
    return 200 <= _status_code(item) < 300


def _delivery_line(item: Mapping[str, Any]) -> str:
    event = str(item.get("event", "?"))
    if item.get("action"):
        event = f"{event}.{item['action']}"
    status = str(item.get("status") or "")[:40]
    return f"{item.get('delivered_at', '?')} {event} {_status_code(item)} {status}".strip()


# -- The Worker and the Access gate -----------------------------------------------------------


def check_webhook_health(ctx: Context) -> Iterator[Outcome]:
    part = f"webhook hostname {ctx.config.cloudflare.webhook_hostname} answers /healthz"
    try:
        answer = ctx.http.get(f"{ctx.webhook_url}/healthz", {})
    except Unreachable as error:
        yield failed(
            part,
            str(error),
            "deploy the dispatch stack (its custom domain is the webhook hostname) and check "
            "the DNS of cloudflare.webhook_hostname",
        )
        return
    outcome = None
    if answer.status == 200:
        try:
            outcome = answer.json().get("outcome")
        except (ValueError, AttributeError):
            outcome = None
    if outcome == "healthy":
        yield passed(part, "200 healthy")
    else:
        yield failed(
            part,
            f"answered {answer.status} {answer.text(80)!r}, not the Worker's 200 healthy",
            "deploy the dispatch stack: the hostname must route to the dispatch Worker",
        )


def check_worker_status(ctx: Context) -> Iterator[Outcome]:
    """``GET /status`` refuses a request without the status token and answers one with it,
    which also proves the Worker reads its KV ledger (503 ``ledger unavailable`` otherwise)."""
    host = ctx.config.cloudflare.webhook_hostname
    url = f"{ctx.webhook_url}/status"
    part = f"{host}/status refuses requests without the status token"
    try:
        answer = ctx.http.get(url, {})
    except Unreachable as error:
        yield failed(part, str(error), "see the /healthz check")
        return
    if answer.status == 401:
        yield passed(part, "401")
    else:
        yield failed(
            part,
            f"answered {answer.status} without a token: per-pool activity is public",
            "deploy the dispatch stack: this Worker predates the STATUS_TOKEN binding",
        )
    part = f"{host}/status answers the status token from the ledger"
    try:
        token = ctx.state_value(DISPATCH_STACK, STATUS_TOKEN_OUTPUT)
        answer = ctx.http.get(url, {"Authorization": f"Bearer {token}"})
    except StateError as error:
        yield failed(part, "cannot read the status token from state", str(error))
        return
    except Unreachable as error:
        yield failed(part, str(error), "see the /healthz check")
        return
    if answer.status == 200:
        yield passed(part, "200, per-pool counts read from the KV ledger")
    elif answer.status == 401:
        yield failed(
            part,
            "401: the Worker's STATUS_TOKEN differs from the dispatch stack's state",
            "deploy the dispatch stack (it hands the Worker the token in its state)",
        )
    else:
        yield failed(
            part,
            f"answered {answer.status} {answer.text(80)!r}",
            "the Worker cannot read its KV ledger: deploy the dispatch stack (the LEDGER "
            "binding), then check Cloudflare's KV status",
        )


def _access_headers(ctx: Context) -> dict[str, str]:
    return {
        "CF-Access-Client-Id": ctx.state_value(EDGE_STACK, ACCESS_CLIENT_ID_OUTPUT),
        "CF-Access-Client-Secret": ctx.state_value(EDGE_STACK, ACCESS_CLIENT_SECRET_OUTPUT),
    }


_NO_LEADER_ERRORS = ("No cluster leader", "Not ready to serve consistent reads")


def _no_leader(body: str) -> bool:
    """Nomad's plain-text 500 for a cluster without a leader (optionally 'rpc error: '-prefixed)."""
    text = body.strip()
    return any(text.endswith(error) for error in _NO_LEADER_ERRORS)


def _is_access_refusal(answer: Answer) -> bool:
    if answer.status in (401, 403):
        return True
    location = answer.headers.get("location", "")
    return 300 <= answer.status < 400 and "cloudflareaccess.com" in location


def check_access_gate(ctx: Context) -> Iterator[Outcome]:
    """The Nomad API hostname refuses a request without the service token, admits one with it.

    The probe is ``/v1/status/leader``, which Nomad answers without any ACL token: a refusal of
    it can only come from Access, and an answer from Nomad proves the whole way in.
    """
    host = ctx.config.cloudflare.nomad_api_hostname
    url = f"{ctx.nomad_api_url}/v1/status/leader"
    part = f"{host} refuses requests without the service token"
    try:
        answer = ctx.http.get(url, {})
    except Unreachable as error:
        yield failed(part, str(error), f"deploy the edge stack (the DNS record of {host})")
    else:
        if _is_access_refusal(answer):
            yield passed(part, f"refused with {answer.status} before reaching Nomad")
        else:
            yield failed(
                part,
                f"answered {answer.status} {answer.text(60)!r} without a service token",
                "deploy the edge stack: its Access application must cover this hostname",
            )
    part = f"{host} admits the service token"
    try:
        headers = _access_headers(ctx)
        answer = ctx.http.get(url, headers)
    except StateError as error:
        yield failed(part, "cannot read the service token from state", str(error))
        return
    except Unreachable as error:
        yield failed(part, str(error), f"deploy the edge stack (the DNS record of {host})")
        return
    if answer.status == 200:
        yield passed(part, "Nomad answered through Access and the tunnel")
    elif answer.status == 500 and _no_leader(answer.text(200)):
        # Status.Leader forwards to the leader; without one Nomad answers 500 "No cluster leader"
        # (structs.ErrNoLeader through errCodeFromHandler), never 200 with an empty leader.
        yield failed(
            part,
            "Nomad answered through Access and the tunnel, but has no cluster leader",
            "restore the Nomad servers' quorum (nomad server members)",
        )
    elif _is_access_refusal(answer):
        yield failed(
            part,
            f"Access refused the service token ({answer.status})",
            "the service token expired or was replaced: deploy edge, then dispatch "
            "(see README, Limits, on replacing it)",
        )
    else:
        yield failed(
            part,
            f"answered {answer.status} {answer.text(60)!r}",
            "the tunnel has no healthy connector: see the cloudflared check "
            "(Cloudflare answers 502/530 when cloudflared is down)",
        )


# -- The Worker's Nomad token ------------------------------------------------------------------


def _dispatch_headers(ctx: Context) -> dict[str, str]:
    return {
        **_access_headers(ctx),
        "X-Nomad-Token": ctx.state_value(NOMAD_STACK, DISPATCH_TOKEN_OUTPUT),
    }


def _nomad_said(answer: Answer) -> str:
    return f"Nomad answered {answer.status} {answer.text(80)!r}"


def check_dispatch_token(ctx: Context) -> Iterator[Outcome]:
    """Through Access, as the Worker: it reads each pool's summary, cannot read a credential
    Variable, and holds no ``submit-job`` (it could then change or replace any runner job)."""
    namespace = ctx.namespace
    base = ctx.nomad_api_url
    try:
        headers = _dispatch_headers(ctx)
    except StateError as error:
        yield failed(
            "dispatch token", "cannot read the Worker's credentials from state", str(error)
        )
        return
    query = urlencode({"namespace": namespace})
    for pool in ctx.config.pools:
        part = f"dispatch token reads {pool.nomad_job}'s summary"
        try:
            answer = ctx.http.get(
                f"{base}/v1/job/{quote(pool.nomad_job, safe='')}/summary?{query}", headers
            )
        except Unreachable as error:
            yield failed(part, str(error), "see the Access gate check")
            continue
        children = _children(answer)
        if children is not None:
            yield passed(part, f"children pending {children[0]}, running {children[1]}")
        elif answer.status == 403:
            yield failed(
                part,
                _nomad_said(answer),
                f"deploy nomad, then dispatch: the Worker's token must exist in this cluster "
                f"(Nomad answers an unknown token the same way) and grant read-job in {namespace}",
            )
        elif answer.status == 404:
            yield failed(part, _nomad_said(answer), "deploy the nomad stack (the pool's job)")
        else:
            yield failed(part, _nomad_said(answer), "see the Access gate check")
    for path in _credential_paths(ctx.config):
        part = f"dispatch token cannot read Variable {path}"
        url = f"{base}/v1/var/{quote(path)}?{query}"
        try:
            # Nomad checks the read capability before the lookup: a 403 carries no value. A 200
            # does, and is dropped unread: the token that got it could read it anyway.
            answer = ctx.http.get(url, headers)
        except Unreachable as error:
            yield failed(part, str(error), "see the Access gate check")
            continue
        if answer.status == 403:
            yield passed(part, "403 Permission denied")
        elif answer.status in (200, 404):
            yield failed(
                part,
                f"Nomad answered {answer.status}: the Worker's token may read Variables there",
                "remove every variables rule from the dispatch token's policy and deploy nomad",
            )
        else:
            yield failed(part, _nomad_said(answer), "see the Access gate check")
    yield _dispatch_cannot_submit(ctx, headers)


def _children(answer: Answer) -> tuple[int, int] | None:
    if answer.status != 200:
        return None
    try:
        children = answer.json().get("Children")
        return int(children["Pending"]), int(children["Running"])
    except (ValueError, AttributeError, KeyError, TypeError):
        return None


def _credential_paths(config: AppConfig) -> list[str]:
    paths = [path for pool in config.pools for path in credential_variable_paths(pool.nomad_job)]
    paths.append(tunnel_token_variable_path(CLOUDFLARED_JOB))
    return paths


def _dispatch_cannot_submit(ctx: Context, headers: Mapping[str, str]) -> Outcome:
    part = "dispatch token cannot submit jobs"
    base = ctx.nomad_api_url
    try:
        token = ctx.http.get(f"{base}/v1/acl/token/self", headers)
        if token.status == 403:
            return failed(
                part,
                f"{_nomad_said(token)}: Nomad does not know the Worker's token",
                "the token was deleted or belongs to another cluster: deploy nomad, then dispatch",
            )
        if token.status != 200:
            return failed(part, _nomad_said(token), "see the Access gate check")
        document = token.json()
        if document.get("Type") == "management":
            return failed(
                part,
                "the Worker holds a management token",
                "deploy the nomad stack: the Worker's token must be its client token",
            )
        listing = ctx.http.get(f"{base}/v1/acl/policies", headers)
        if listing.status != 200:
            return failed(part, _nomad_said(listing), "see the Access gate check")
        names = sorted({str(stub.get("Name")) for stub in listing.json() if isinstance(stub, dict)})
        granted: set[str] = set()
        for name in names:
            answer = ctx.http.get(f"{base}/v1/acl/policy/{quote(name, safe='')}", headers)
            if answer.status != 200:
                return failed(part, _nomad_said(answer), "see the Access gate check")
            granted |= _namespace_capabilities(answer.json(), ctx.namespace)
    except Unreachable as error:
        return failed(part, str(error), "see the Access gate check")
    except (ValueError, AttributeError) as error:
        return failed(part, f"unexpected answer from Nomad ({error})", "see the Access gate check")
    if "submit-job" in granted:
        return failed(
            part,
            f"its policies grant submit-job in {ctx.namespace} ({', '.join(names)})",
            "deploy the nomad stack: the dispatch policy grants dispatch-job and read-job only",
        )
    shown = ", ".join(sorted(granted)) or "nothing"
    return passed(part, f"its capabilities in {ctx.namespace}: {shown}")


def _namespace_capabilities(policy: Any, namespace: str) -> set[str]:
    """Capabilities a policy's ``RulesJSON`` grants in ``namespace`` (Nomad expands ``policy =
    "write"`` and friends into ``Capabilities`` when it parses the rules)."""
    rules = policy.get("RulesJSON") or {}
    granted: set[str] = set()
    for entry in rules.get("Namespaces") or []:
        pattern = str(entry.get("Name", ""))
        if pattern == namespace or fnmatch.fnmatchcase(namespace, pattern):
            granted |= {str(capability) for capability in entry.get("Capabilities") or []}
    return granted


# -- Nomad, with the management token ----------------------------------------------------------


class _NoToken(Exception):
    pass


def _nomad_get(ctx: Context, path: str, **query: str) -> Answer:
    token = ctx.credential(NOMAD_TOKEN_ENV)
    if token is None:
        raise _NoToken
    suffix = f"?{urlencode(query)}" if query else ""
    return ctx.http.get(f"{ctx.nomad_address}{path}{suffix}", {"X-Nomad-Token": token})


_NO_TOKEN_FIX: Final = f"export {NOMAD_TOKEN_ENV} (the token the nomad stack deploys with)"


def _management_fix(answer: Answer, otherwise: str) -> str:
    """The fix for a management read that failed: a refused token first, else ``otherwise``."""
    if answer.status == 403:
        return (
            f"{NOMAD_TOKEN_ENV} is refused at nomad.address: export the management token the "
            "nomad stack deploys with (for this cluster and region)"
        )
    return otherwise


def _management_failure(ctx: Context, part: str, error: Exception) -> Outcome:
    if isinstance(error, _NoToken):
        return failed(part, f"{NOMAD_TOKEN_ENV} is not set", _NO_TOKEN_FIX)
    return failed(part, str(error), f"check that nomad.address ({ctx.nomad_address}) is reachable")


def _job_document(ctx: Context, job_id: str) -> Answer:
    return ctx.cached(  # type: ignore[no-any-return]
        f"job:{job_id}",
        lambda: _nomad_get(ctx, f"/v1/job/{quote(job_id, safe='')}", namespace=ctx.namespace),
    )


def check_pool_jobs(ctx: Context) -> Iterator[Outcome]:
    """Each pool's job exists, is running as a parameterized batch job, and takes the meta the
    Worker sends (``handler.contract.DISPATCH_META_KEYS``) and no payload."""
    sent = set(DISPATCH_META_KEYS)
    for pool in ctx.config.pools:
        part = f"pool job {pool.nomad_job} is parameterized for the Worker"
        try:
            answer = _job_document(ctx, pool.nomad_job)
        except (_NoToken, Unreachable) as error:
            yield _management_failure(ctx, part, error)
            continue
        if answer.status != 200:
            fix = _management_fix(answer, "deploy the nomad stack (cdktf deploy nomad)")
            yield failed(part, _nomad_said(answer), fix)
            continue
        job = answer.json()
        parameters = job.get("ParameterizedJob")
        problems = []
        if job.get("Stop"):
            problems.append("the job is stopped (Nomad refuses dispatches)")
        if not isinstance(parameters, dict):
            problems.append("the job is not parameterized")
        else:
            required = set(parameters.get("MetaRequired") or [])
            allowed = required | set(parameters.get("MetaOptional") or [])
            if required - sent:
                problems.append(
                    f"it requires meta the Worker never sends: {sorted(required - sent)}"
                )
            if sent - allowed:
                problems.append(f"it does not accept the meta {sorted(sent - allowed)}")
            if parameters.get("Payload") == "required":
                problems.append("it requires a payload (the Worker sends none)")
        if problems:
            yield failed(part, "; ".join(problems), "deploy the nomad stack (cdktf deploy nomad)")
        else:
            yield passed(part, f"meta {', '.join(DISPATCH_META_KEYS)}")


def check_credential_variables(ctx: Context) -> Iterator[Outcome]:
    """The Variables the tasks read their credentials from exist (listed as metadata only)."""
    by_prefix: dict[str, list[str]] = {}
    for path in _credential_paths(ctx.config):
        prefix = "/".join(path.split("/")[:3]) + "/"  # nomad/jobs/{job}/
        by_prefix.setdefault(prefix, []).append(path)
    for prefix, paths in by_prefix.items():
        try:
            answer = _nomad_get(ctx, "/v1/vars", namespace=ctx.namespace, prefix=prefix)
        except (_NoToken, Unreachable) as error:
            for path in paths:
                yield _management_failure(ctx, f"Variable {path} exists", error)
            continue
        listed: set[str] = set()
        if answer.status == 200:
            listed = {str(item.get("Path")) for item in answer.json() if isinstance(item, dict)}
        for path in paths:
            part = f"Variable {path} exists"
            if answer.status != 200:
                yield failed(
                    part, _nomad_said(answer), _management_fix(answer, "run doctor again later")
                )
            elif path in listed:
                yield passed(part, "present (its value is not read)")
            else:
                yield failed(
                    part,
                    f"no such Variable in namespace {ctx.namespace}: the task that reads it "
                    "waits forever",
                    "deploy the nomad stack (it writes the Variable from the deploy's credentials)",
                )


def check_cloudflared(ctx: Context) -> Iterator[Outcome]:
    part = f"cloudflared job {CLOUDFLARED_JOB} has running connectors"
    try:
        job = _job_document(ctx, CLOUDFLARED_JOB)
        if job.status != 200:
            fix = _management_fix(job, "deploy the nomad stack (cdktf deploy nomad)")
            yield failed(part, _nomad_said(job), fix)
            return
        allocations = _nomad_get(
            ctx, f"/v1/job/{quote(CLOUDFLARED_JOB, safe='')}/allocations", namespace=ctx.namespace
        )
    except (_NoToken, Unreachable) as error:
        yield _management_failure(ctx, part, error)
        return
    if allocations.status != 200:
        fix = _management_fix(allocations, "run doctor again later")
        yield failed(part, _nomad_said(allocations), fix)
        return
    wanted = sum(int(group.get("Count") or 0) for group in job.json().get("TaskGroups") or [])
    stubs = [stub for stub in allocations.json() if isinstance(stub, dict)]
    running = [stub for stub in stubs if stub.get("ClientStatus") == "running"]
    if not running:
        states = sorted({str(stub.get("ClientStatus")) for stub in stubs}) or ["none"]
        yield failed(
            part,
            f"0 of {wanted} connectors running (allocations: {', '.join(states)})",
            f"read the cloudflared allocations' events: nomad job status -namespace "
            f"{ctx.namespace} {CLOUDFLARED_JOB} (a missing tunnel token Variable, or an image "
            "the nodes cannot pull)",
        )
    else:
        yield passed(part, f"{len(running)} of {wanted} connectors running")


def check_nomad_version(ctx: Context) -> Iterator[Outcome]:
    """Every server and client is at least CE 2.0.1 (the client runs the tasks the CVE is in)."""
    floor = versions.format_version(versions.NOMAD_FLOOR)
    part = f"Nomad servers and clients are {floor} or later"
    try:
        members = _nomad_get(ctx, "/v1/agent/members")
        nodes = _nomad_get(ctx, "/v1/nodes")
    except (_NoToken, Unreachable) as error:
        yield _management_failure(ctx, part, error)
        return
    for answer in (members, nodes):
        if answer.status != 200:
            yield failed(
                part, _nomad_said(answer), _management_fix(answer, "run doctor again later")
            )
            return
    agents: list[tuple[str, str]] = []
    for member in members.json().get("Members") or []:
        tags = member.get("Tags") or {}
        # Serf keeps failed and departed servers in the list for a while: only live ones run.
        if member.get("Status") == "alive" and (tags.get("role") == "nomad" or "build" in tags):
            agents.append((f"server {member.get('Name')}", str(tags.get("build", "unknown"))))
    for node in nodes.json():
        if isinstance(node, dict) and node.get("Status") != "down":
            agents.append((f"client {node.get('Name')}", str(node.get("Version") or "unknown")))
    old = versions.below_floor(agents)
    if old:
        listed = ", ".join(f"{agent} {version}" for agent, version in old[:8])
        yield failed(
            part,
            f"below {floor} (CVE-2026-6959, task escape through the log FIFOs): {listed}",
            f"upgrade these agents to Nomad {floor} or later: servers first, then every client "
            "(Nomad's upgrade order; the clients run the tasks the CVE lets escape)",
        )
    else:
        shown = ", ".join(sorted({version for _, version in agents})) or "none found"
        yield passed(part, f"{len(agents)} agents, versions {shown}")


# -- The runner image --------------------------------------------------------------------------


def _configured_runner_image(ctx: Context, pool: PoolConfig) -> str | None:
    """The pool's runner image as configured; None when it follows the newest release."""
    return ctx.config.runner_image(pool)


def _deployed_runner_image(ctx: Context, pool: PoolConfig) -> str | None:
    """The image of the runner task in the deployed pool job, when Nomad can be read."""
    try:
        answer = _job_document(ctx, pool.nomad_job)
    except (_NoToken, Unreachable):
        return None
    if answer.status != 200:
        return None
    for group in answer.json().get("TaskGroups") or []:
        for task in group.get("Tasks") or []:
            image = (task.get("Config") or {}).get("image")
            if task.get("Name") == RUNNER_TASK and isinstance(image, str):
                return image
    return None


def runner_image_verdict(
    image: str, releases: list[versions.Release], now: datetime, *, pinned_in_config: bool
) -> tuple[bool, str, str]:
    """(passed, detail, fix) for one runner image string.

    The version comes from the tag: the official image's tags are release versions; another
    image counts only with a tag that starts with a 2.x.y runner version (``:2.330.0-cuda12``).
    ``pinned_in_config`` says whether the operator pinned the image (then the fix is a newer
    pin) or the configuration follows the newest release (then a deploy picks it up).
    """
    version = versions.image_version(image)
    official = versions.is_official_runner_image(image)
    if version is None or (not official and version[0] != versions.RUNNER_FLOOR[0]):
        return (
            False,
            f"cannot tell the runner version of {image} (no 2.x.y version in its tag)",
            "tag the image with the runner version it contains, e.g. :2.330.0-yourbuild, or use "
            f"{OFFICIAL_RUNNER_IMAGE}",
        )
    window = versions.runner_window(version, releases, now)
    if window.ok:
        return True, window.detail, ""
    newest = versions.format_version(window.newest) if window.newest else "the newest release"
    if not pinned_in_config:
        fix = "deploy the nomad stack again: it resolves the newest runner release at plan time"
    elif official:
        fix = (
            f"pin images.runner (or the pool's image) to {OFFICIAL_RUNNER_IMAGE}:"
            f"{newest}, or leave it out to follow the newest release; then deploy nomad"
        )
    else:
        fix = f"rebuild the image on runner {newest}, pin it, then deploy nomad"
    return False, window.detail, fix


def check_runner_version(ctx: Context) -> Iterator[Outcome]:
    """Each pool's runner, as deployed, is inside GitHub's version window (see doctor.versions).

    The deployed job's image is what runs, whichever way the configuration chose it (a pin, or
    the newest release resolved at plan time, which goes stale when nobody deploys).
    """
    if _enterprise_server(ctx.config):
        # The window is github.com's rule (and an air-gapped server may not reach it at all).
        for pool in ctx.config.pools:
            image = _deployed_runner_image(ctx, pool) or _configured_runner_image(ctx, pool)
            yield passed(
                f"runner image of pool {pool.name} is within GitHub's version window",
                f"not checked: GitHub Enterprise Server does not apply github.com's window "
                f"({image or 'the newest release'})",
            )
        return
    part_releases = "runner releases readable"
    # The nomad stack's optional github.com token for exactly this read, else the read token
    # when it is a github.com token too: only the rate limit changes (60/h without one).
    token = ctx.credential(RELEASES_TOKEN_ENV)
    if token is None and ctx.config.github.api_url == "https://api.github.com":
        token = ctx.credential(READ_TOKEN_ENV)
    headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": GITHUB_API_VERSION}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        answer = ctx.http.get(ctx.releases_url, headers)
        releases = versions.releases_from_github(answer.json()) if answer.status == 200 else None
    except Unreachable as error:
        yield failed(part_releases, str(error), "check the network path to api.github.com")
        return
    except ValueError as error:
        yield failed(part_releases, f"unexpected answer ({error})", "run doctor again later")
        return
    if not releases:
        said = f"GitHub answered {answer.status} {_github_message(answer)!r}"
        yield failed(part_releases, said, "run doctor again later (unauthenticated limit: 60/h)")
        return
    for pool in ctx.config.pools:
        part = f"runner image of pool {pool.name} is within GitHub's version window"
        configured = _configured_runner_image(ctx, pool)
        image = _deployed_runner_image(ctx, pool)
        source = "the deployed job"
        if image is None and configured is None:
            yield failed(
                part,
                "the pool follows the newest release and its deployed job is not readable",
                "fix the pool job check first: doctor reads the deployed image from Nomad",
            )
            continue
        if image is None:
            image, source = configured, "the configuration (the deployed job is not readable)"
        assert image is not None
        ok, detail, fix = runner_image_verdict(
            image, releases, ctx.now, pinned_in_config=configured is not None
        )
        detail = f"{detail} ({image}, from {source})"
        yield passed(part, detail) if ok else failed(part, detail, fix)


def _enterprise_server(config: AppConfig) -> bool:
    """Whether the runners serve a GitHub Enterprise Server (REST root ``https://HOST/api/v3``)."""
    return config.github.api_url.endswith("/api/v3")


# Set by the docker driver's fingerprint when its plugin config has allow_privileged = true
# (drivers/docker/fingerprint.go); absent otherwise.
PRIVILEGED_ATTRIBUTE: Final = "driver.docker.privileged.enabled"


def check_dind_privileged(ctx: Context) -> Iterator[Outcome]:
    """At least one node a ``docker = "dind"`` pool may use allows privileged containers, which
    its Docker daemon task needs; other pools yield nothing.

    ``runner_job/runner-dind.nomad.hcl`` constrains the pool to nodes with the attribute, so a
    node without it only takes no dind runner; with none at all every dispatch stays pending. A
    candidate is ready, eligible, in the pool's node pool and datacenters, with the docker
    driver; the pool's own constraints are not evaluated.
    """
    pools = [pool for pool in ctx.config.pools if pool.docker == "dind"]
    if not pools:
        return
    try:
        answer = _nomad_get(ctx, "/v1/nodes")
    except (_NoToken, Unreachable) as error:
        for pool in pools:
            yield _management_failure(ctx, _dind_part(pool), error)
        return
    if answer.status != 200:
        for pool in pools:
            fix = _management_fix(answer, "run doctor again later")
            yield failed(_dind_part(pool), _nomad_said(answer), fix)
        return
    nodes = [node for node in answer.json() if isinstance(node, dict)]
    for pool in pools:
        node_pool = pool.node_pool or ctx.config.nomad.node_pool
        candidates = [node for node in nodes if _may_run(ctx, node, node_pool)]
        allowing = sorted(
            str(node.get("Name"))
            for node in candidates
            if (_docker_driver(node).get("Attributes") or {}).get(PRIVILEGED_ATTRIBUTE) == "true"
        )
        part = _dind_part(pool)
        if allowing:
            others = len(candidates) - len(allowing)
            note = f"; {others} other docker node(s) there take no dind runner" if others else ""
            yield passed(
                part,
                f"{len(allowing)} docker node(s) in node pool {node_pool} allow them "
                f"({', '.join(allowing[:8])}){note}",
            )
        else:
            seen = (
                f"{len(candidates)} docker node(s), none allowing it"
                if candidates
                else ("no ready, eligible docker node")
            )
            yield failed(
                part,
                f"{seen} in node pool {node_pool}: every dispatch of this pool stays pending",
                f"set allow_privileged = true in the docker plugin block of the clients in node "
                f"pool {node_pool} (runner_job/README.md, Nomad client settings for a dind pool)",
            )


def _dind_part(pool: PoolConfig) -> str:
    return f"nodes of dind pool {pool.name} allow privileged containers"


def _docker_driver(node: Mapping[str, Any]) -> Mapping[str, Any]:
    driver = (node.get("Drivers") or {}).get("docker")
    return driver if isinstance(driver, dict) else {}


def _may_run(ctx: Context, node: Mapping[str, Any], node_pool: str) -> bool:
    datacenter = str(node.get("Datacenter", ""))
    return (
        node.get("NodePool") == node_pool
        and node.get("Status") == "ready"
        and node.get("SchedulingEligibility") == "eligible"
        and any(fnmatch.fnmatchcase(datacenter, dc) for dc in ctx.config.nomad.datacenters)
        and bool(_docker_driver(node).get("Detected"))
    )


CHECKS: Final[tuple[tuple[str, Check], ...]] = (
    ("GitHub: App installation", check_github_app),
    ("GitHub: runner token", check_runner_token),
    ("GitHub: read token", check_read_token),
    ("GitHub: hooks and deliveries", check_hooks),
    ("GitHub: runner groups", check_runner_groups),
    ("Worker: webhook hostname", check_webhook_health),
    ("Worker: /status", check_worker_status),
    ("Cloudflare: Access gate", check_access_gate),
    ("Nomad: the Worker's token", check_dispatch_token),
    ("Nomad: pool jobs", check_pool_jobs),
    ("Nomad: credential Variables", check_credential_variables),
    ("Nomad: cloudflared", check_cloudflared),
    ("Nomad: version", check_nomad_version),
    ("Nomad: privileged containers for dind pools", check_dind_privileged),
    ("Runner: version window", check_runner_version),
)


def run_checks(
    ctx: Context, checks: Iterable[tuple[str, Check]] = CHECKS
) -> Iterator[tuple[str, Outcome]]:
    """Every outcome with its check's title; a check that crashes fails as one outcome."""
    for title, check in checks:
        try:
            outcomes = list(check(ctx))
        except Exception as error:  # one broken check must not hide the others
            outcomes = [
                failed(
                    title,
                    f"doctor could not finish this check ({type(error).__name__}: {error})",
                    "report this as a bug in doctor, with the line above",
                )
            ]
        for outcome in outcomes:
            yield title, outcome
