"""A small, faithful stand-in for GitHub's self-hosted runner REST endpoints, for tests.

It serves on 127.0.0.1 (ephemeral port) in a background thread and answers as GitHub does (see
``shared/reference/FACTS.md`` and GitHub's REST docs for self-hosted runners):

* ``POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`` with JSON ``name``,
  ``runner_group_id``, ``labels`` (1..100 strings), optional ``work_folder``: 201
  ``{"runner": {"id", "name", "os", "status", "busy", "labels"}, "encoded_jit_config"}``; 409 when
  the repository already has a runner of that name; 422 for a malformed body or an unknown
  runner group;
* ``GET /repos/{owner}/{repo}/actions/runners?name=..&per_page=..&page=..``: 200
  ``{"total_count", "runners": [runner, ...]}``, only the runners of exactly that name when
  ``name`` is given;
* ``GET /repos/{owner}/{repo}/actions/runners/{id}``: 200 runner, 404 unknown;
* ``DELETE /repos/{owner}/{repo}/actions/runners/{id}``: 204, 404 unknown, 422 while busy;
* authentication by ``Authorization: Bearer|token``: missing gives 401 "Requires
  authentication", unknown gives 401 "Bad credentials"; a repository the token cannot see is 404
  "Not Found"; a token that can see it but lacks "Administration: write" gets 403 "Resource not
  accessible by personal access token"; an exhausted quota is 403 with
  ``x-ratelimit-remaining: 0`` and "API rate limit exceeded";
* every error body is GitHub's ``{"message", "documentation_url"}`` JSON; every answer carries
  the ``x-ratelimit-*`` headers;
* for the reconciler, with a token granted ``actions_read`` on the repository (a fine-grained
  token with "Actions: read"; the runner tokens above get 403 there, as GitHub answers):
  ``GET /repos/{owner}/{repo}/actions/runs?status=..`` (``{"total_count", "workflow_runs"}``,
  newest first, an ``ETag``, and 304 with no body when ``If-None-Match`` matches),
  ``GET /repos/{owner}/{repo}/actions/runs/{run_id}`` (one workflow run object; 404 for an
  unknown run or one of another repository) and
  ``GET /repos/{owner}/{repo}/actions/runs/{run_id}/jobs`` (``{"total_count", "jobs"}``; 404
  for an unknown run) and ``GET /repos/{owner}/{repo}/actions/jobs/{job_id}`` (one job object,
  its ``status``, ``conclusion`` and ``runner_id`` moved on by ``set_job_status``: ``runner_id``
  is null until a runner is assigned, as GitHub documents it; 404 for an unknown job or another
  repository's). A workflow run object, in the list as alone, carries ``id``, ``name``,
  ``event``, ``status``, ``conclusion``, ``head_branch``, ``head_sha``, ``run_attempt``,
  ``repository`` and ``head_repository`` (minimal repository objects: ``id``, ``name``,
  ``full_name``, ``owner.login``, ``private``, ``fork``); ``head_repository`` is the fork for a
  pull request from a fork and ``null`` once that fork is deleted (GitHub's answer then, see
  github/rest-api-description#1586). Tests put jobs in with ``queue_job`` (its run's event and
  head repository with ``event`` and ``head_repository``) and move them on with
  ``set_job_status``; ``rate_limit_remaining`` overrides the ``x-ratelimit-remaining`` header.
  With ``full_run_objects=True`` each listed run also carries the rest of GitHub's documented
  workflow-run fields (URLs, actor, head commit, full minimal-repository objects), so an answer
  is about as large as GitHub's (12.5 KB per run): what a CPU measurement must parse.
  ``touch_runs`` moves every full run's ``updated_at`` on, as a run's progress does, so each list's
  ``ETag`` changes.

For doctor, read-only endpoints:

* ``GET /repos/{owner}/{repo}/hooks`` and ``GET /repos/{owner}/{repo}/hooks/{id}/deliveries``
  with a token granted ``hooks`` ("Webhooks: read"): hooks as GitHub lists them (``config``
  with ``url``, ``content_type``, ``insecure_ssl`` and the secret masked as ``********``), and
  deliveries newest first (``id``, ``guid``, ``delivered_at``, ``redelivery``, ``duration``,
  ``status``, ``status_code``, ``event``, ``action``, ``installation_id``, ``repository_id``);
  tests add them with ``add_hook`` and ``add_delivery``;
* ``GET /repos/actions/runner/releases``: public (no token needed; an unknown token is still a
  401), newest first, as ``add_release`` put them.

GitHub Apps (``apps``: App id -> its public key, PEM; ``installations``: installation id ->
:class:`Installation`), as GitHub's docs for App authentication have it:

* ``POST /app/installations/{id}/access_tokens`` with ``Authorization: Bearer <JWT>``: the JWT
  must be three base64url parts, header ``alg`` RS256, claims ``iss`` (the App id, as a number
  or a string), ``iat`` and ``exp`` (integers; ``exp`` in the future and at most 10 minutes
  ahead, ``iat`` not in the future beyond a little clock drift), signed with the App's key
  (verified by the ``openssl`` CLI against its public key); any failure is 401 with GitHub's
  message. An installation that is unknown, of another App, or revoked (``revoke_installation``)
  is 404 "Not Found". Otherwise 201 ``{"token", "expires_at", "permissions",
  "repository_selection"}``: ``permissions`` as GitHub names them (``administration``,
  ``actions``, ``repository_hooks``, ``organization_self_hosted_runners``, ``metadata``:
  ``read`` or ``write``), derived from the grants unless the installation sets its own; the token
  (``ghs_...``) has the installation's grants until
  ``expires_at`` (``installation_token_seconds``, one hour by default), then answers 401 "Bad
  credentials", as do its tokens once the installation is revoked. Every JWT seen is kept
  (``jwts``: header, claims, when) for tests to inspect. Installation tokens carry their own
  ``x-ratelimit-limit`` (``INSTALLATION_RATE_LIMIT``), distinct from a personal token's;
* ``GET /installation/repositories?per_page=..&page=..`` with an installation token: 200
  ``{"total_count", "repository_selection", "repositories": [repository, ...]}``, the
  repositories its grants name (``private`` and ``visibility`` from ``public_repositories``);
  any other credential is 403;
* ``GET /rate_limit``: 200 ``{"resources": {"core": ...}, "rate": ...}`` (``limit``,
  ``remaining``, ``used``, ``reset``) for any valid credential, with the same ``x-ratelimit-*``
  headers; as on GitHub it does not count against the quota (it is not counted in
  ``x-ratelimit-remaining``);
* organization runners: the same runner endpoints under ``/orgs/{org}/actions/runners``
  (``generate-jitconfig``, the list, ``/{id}`` GET and DELETE), for a credential granted
  ``"org_runners"`` on ``"org:{org}"`` (the organization permission "Self-hosted runners: read
  and write"); a repository's runners and the organization's are separate;
* organization runner groups, for the same credential: ``GET
  /orgs/{org}/actions/runner-groups/{id}`` (the ``runner-groups-org`` object: ``id``, ``name``,
  ``visibility`` ``all`` | ``selected`` | ``private``, ``default``, ``selected_repositories_url``
  only when ``selected``, ``runners_url``, ``inherited``, ``allows_public_repositories``,
  ``restricted_to_workflows``, ``selected_workflows``; 404 for an unknown id) and ``GET
  .../runner-groups/{id}/repositories?per_page=..&page=..`` (``{"total_count",
  "repositories"}``, the selected ones); every id in ``runner_groups`` is a group (1 is
  "Default", open to all repositories), ``add_runner_group`` sets one up.

Every request is recorded; ``fail_next`` injects answers (e.g. a 502) for the next requests
instead of handling them; ``lose_next_answer`` handles the next request and then loses GitHub's
answer (a 502 from a proxy, or no answer before the client's timeout), as a flaky network does.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import re
import secrets
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

DOCS = "https://docs.github.com/rest/actions/self-hosted-runners"
# Credentials the stand-in knows unless a test passes others: token -> {repo: permission}.
ADMIN_TOKEN = "ghp_standin_admin_token_for_tests_0001"
READ_ONLY_TOKEN = "ghp_standin_read_only_token_for_tests_2"
REPOSITORY = "octo-org/hello-world"
MAX_LABELS = 100
RATE_LIMIT = 5000
# An installation's hourly quota grows with the organization (5,000 to 12,500); the stand-in
# gives installation tokens the top of that range, so tests can tell the two kinds apart.
INSTALLATION_RATE_LIMIT = 12500
# GitHub's answers to a JWT it refuses (401 each).
JWT_UNDECODABLE = "A JSON web token could not be decoded"
JWT_EXP_TOO_FAR = "'Expiration time' claim ('exp') is too far in the future"
JWT_EXPIRED = (
    "'Expiration time' claim ('exp') must be a numeric value representing the future time at "
    "which the assertion expires"
)
JWT_IAT_FUTURE = (
    "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was "
    "issued"
)
JWT_MAX_SECONDS = 600
CLOCK_DRIFT_SECONDS = 30

_RUNNERS_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runners/([^/]+)$")
_RUNNER_LIST_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runners$")
_HOOKS_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/hooks(?:/(\d+)/deliveries)?$")
_RELEASES_PATH = "/repos/actions/runner/releases"
_ACCESS_TOKENS_PATH = re.compile(r"^/app/installations/(\d+)/access_tokens$")
_ORG_RUNNERS_PATH = re.compile(r"^/orgs/([^/]+)/actions/runners(?:/([^/]+))?$")
_RUNNER_GROUP_PATH = re.compile(r"^/orgs/([^/]+)/actions/runner-groups/(\d+)(/repositories)?$")
_INSTALLATION_REPOSITORIES_PATH = "/installation/repositories"
_RUNS_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/runs(?:/(\d+)(/jobs)?)?$")
_JOB_PATH = re.compile(r"^/repos/([^/]+)/([^/]+)/actions/jobs/(\d+)$")
# Not shaped like a real fine-grained token, so secret scanners do not flag the fixture.
ACTIONS_READ_TOKEN = "standin-actions-read-token-for-tests-3"
# queue_job's default head repository: the repository itself.
SAME = object()


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # decoded JSON, or None


@dataclass
class Runner:
    id: int
    name: str
    repository: str
    labels: list[str]
    runner_group_id: int
    jit_config: str
    status: str = "offline"
    busy: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "os": "unknown",
            "status": self.status,
            "busy": self.busy,
            "labels": [
                {"id": index + 1, "name": label, "type": "custom"}
                for index, label in enumerate(self.labels)
            ],
        }


@dataclass
class Installation:
    """An App's installation: what its tokens may do, as ``tokens`` grants (scope ->
    permission or set of permissions, e.g. ``{"org:octo-org": "org_runners", "octo-org/app":
    {"actions_read", "hooks"}}``); the repository scopes are the installation's repositories.

    ``permissions`` is what the access_tokens answer reports; None derives it from the grants
    (GitHub grants an App's permissions on all its repositories alike, so tests grant them
    alike). ``repository_selection`` is ``selected`` or ``all``.
    """

    app_id: int
    grants: dict[str, Any]
    revoked: bool = False
    permissions: dict[str, str] | None = None
    repository_selection: str = "selected"

    def reported_permissions(self) -> dict[str, str]:
        if self.permissions is not None:
            return dict(self.permissions)
        reported = {"metadata": "read"}
        for granted in self.grants.values():
            for name in _granted(granted):
                if name in _GRANT_PERMISSIONS:
                    key, level = _GRANT_PERMISSIONS[name]
                    reported[key] = level
        return reported

    def repositories(self) -> list[str]:
        return [scope for scope in self.grants if not scope.startswith("org:")]


# What each grant of the stand-in is in GitHub's App permission names.
_GRANT_PERMISSIONS: dict[str, tuple[str, str]] = {
    "admin": ("administration", "write"),
    "actions_read": ("actions", "read"),
    "hooks": ("repository_hooks", "write"),
    "org_runners": ("organization_self_hosted_runners", "write"),
}


def _granted(granted: Any) -> set[str]:
    return {granted} if isinstance(granted, str) else set(granted)


@dataclass
class RunnerGroup:
    """An organization runner group as GitHub keeps it (``repositories``: the selected ones)."""

    id: int
    name: str
    visibility: str = "all"
    repositories: list[str] = field(default_factory=list)
    allows_public_repositories: bool = False
    default: bool = False
    inherited: bool = False

    def as_json(self, organization: str) -> dict[str, Any]:
        base = f"https://api.github.com/orgs/{organization}/actions/runner-groups/{self.id}"
        document: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "visibility": self.visibility,
            "default": self.default,
            "runners_url": f"{base}/runners",
            "hosted_runners_url": f"{base}/hosted-runners",
            "inherited": self.inherited,
            "allows_public_repositories": self.allows_public_repositories,
            "restricted_to_workflows": False,
            "selected_workflows": [],
            "workflow_restrictions_read_only": False,
        }
        if self.visibility == "selected":
            document["selected_repositories_url"] = f"{base}/repositories"
        return document


@dataclass
class IssuedToken:
    installation_id: int
    expires_at: float


@dataclass
class Injected:
    method: str | None
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    # A lost answer: the request is handled, then this answer replaces GitHub's after ``delay``.
    handled: bool = False
    delay: float = 0.0
    path: str | None = None  # only requests to this path (without the query) match


class GitHubStandIn:
    """Start with ``with GitHubStandIn() as github:``; ``github.url`` is the API base URL."""

    def __init__(
        self,
        *,
        tokens: dict[str, dict[str, str]] | None = None,
        runner_groups: frozenset[int] = frozenset({1}),
        apps: dict[int, bytes] | None = None,
        installations: dict[int, Installation] | None = None,
        installation_token_seconds: float = 3600.0,
        full_run_objects: bool = False,
    ) -> None:
        # token -> {"owner/repo" (lower-case): "admin" | "read"}
        self.tokens = (
            tokens
            if tokens is not None
            else {ADMIN_TOKEN: {REPOSITORY: "admin"}, READ_ONLY_TOKEN: {REPOSITORY: "read"}}
        )
        self.runner_groups = runner_groups
        self.group_settings: dict[int, RunnerGroup] = {}
        # "owner/repo" (lower-case) of the repositories that are public (all others private)
        self.public_repositories: set[str] = set()
        self.apps = dict(apps or {})
        self.installations = dict(installations or {})
        self.installation_token_seconds = installation_token_seconds
        self.issued: dict[str, IssuedToken] = {}
        self.jwts: list[dict[str, Any]] = []
        self.full_run_objects = full_run_objects
        self._touched = 0
        self.runners: dict[int, Runner] = {}
        self.requests: list[RecordedRequest] = []
        self.rate_limited = False
        self.rate_limit_remaining: int | None = None
        # run id -> {"repository", "status"}; job id -> REST job object (its "run_id" links it)
        self.runs: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}
        self.busy_deletes_left: dict[int, int] = {}
        # "owner/repo" (lower-case) -> hooks; hook id -> deliveries (newest last); releases
        self.hooks: dict[str, list[dict[str, Any]]] = {}
        self.deliveries: dict[int, list[dict[str, Any]]] = {}
        self.releases: list[dict[str, Any]] = []
        self._injected: list[Injected] = []
        self._ids = itertools.count(23)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> GitHubStandIn:
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval keeps shutdown (once per test) quick.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in with 'with'"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ---------------------------------------------------------------------

    def fail_next(
        self,
        status: int,
        *,
        method: str | None = None,
        message: str = "Server Error",
        headers: dict[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (of ``method`` and to ``path``, if given) with
        this error."""
        body = {"message": message, "documentation_url": DOCS}
        with self._lock:
            for _ in range(times):
                self._injected.append(
                    Injected(method, status, body, dict(headers or {}), path=path)
                )

    def lose_next_answer(
        self,
        *,
        method: str | None = None,
        status: int = 502,
        message: str = "Server Error",
        delay: float = 0.0,
    ) -> None:
        """Handle the next request (of ``method``) as usual, then answer ``status`` instead,
        after ``delay`` seconds: GitHub did the work but the client never learns it (a proxy's
        502, or, with a delay above the client's timeout, no answer in time)."""
        body = {"message": message, "documentation_url": DOCS}
        with self._lock:
            self._injected.append(Injected(method, status, body, {}, handled=True, delay=delay))

    def mark_busy(self, runner_id: int, *, deletes: int) -> None:
        """The runner stays busy (DELETE gives 422) for the next ``deletes`` DELETE requests."""
        with self._lock:
            self.runners[runner_id].busy = True
            self.busy_deletes_left[runner_id] = deletes

    def add_runner(self, repository: str, name: str) -> Runner:
        """A runner registered by someone else (e.g. another allocation)."""
        with self._lock:
            runner = Runner(next(self._ids), name, repository.lower(), ["self-hosted"], 1, "x")
            self.runners[runner.id] = runner
            return runner

    def queue_job(
        self,
        repository: str,
        job: dict[str, Any],
        *,
        event: str = "push",
        head_repository: str | object | None = SAME,
    ) -> None:
        """Make ``job`` (a REST job object, e.g. a webhook's ``workflow_job``) known as queued.

        Its run is created if needed, triggered by ``event``, its head repository the
        repository itself unless ``head_repository`` names another (a fork) or is None (a
        deleted fork); a run is ``queued`` while none of its jobs has started, ``in_progress``
        once one has, ``completed`` when all have (GitHub's own rule).
        """
        with self._lock:
            document = dict(job, status="queued", conclusion=None, runner_id=None)
            self.jobs[int(job["id"])] = document
            head = repository if head_repository is SAME else head_repository
            run = self.runs.setdefault(
                int(job["run_id"]),
                {
                    "repository": repository.lower(),
                    "full_name": repository,
                    "head_repository": head,
                    "event": event,
                    "head_sha": job.get("head_sha") or "0" * 40,
                    "head_branch": job.get("head_branch") or "main",
                    "status": "queued",
                },
            )
            self._update_run(run, int(job["run_id"]))

    def set_job_status(
        self,
        job_id: int,
        status: str,
        conclusion: str | None = None,
        *,
        runner_id: int | None = None,
    ) -> None:
        """Move job ``job_id`` on; ``runner_id`` names the runner that took it (kept from an
        earlier call when not given; a queued job has none)."""
        with self._lock:
            job = self.jobs[job_id]
            job["status"] = status
            job["conclusion"] = conclusion
            if status == "queued":
                job["runner_id"] = None
            elif runner_id is not None:
                job["runner_id"] = runner_id
            self._update_run(self.runs[int(job["run_id"])], int(job["run_id"]))

    def _update_run(self, run: dict[str, Any], run_id: int) -> None:
        states = {job["status"] for job in self.jobs.values() if int(job["run_id"]) == run_id}
        if states == {"completed"}:
            run["status"] = "completed"
        elif states <= {"queued", "waiting"}:
            run["status"] = "queued"
        else:
            run["status"] = "in_progress"

    def add_hook(
        self,
        repository: str,
        url: str,
        *,
        events: tuple[str, ...] = ("workflow_job",),
        active: bool = True,
        content_type: str = "json",
        insecure_ssl: str = "0",
    ) -> int:
        """A repository webhook as GitHub stores it; returns its id."""
        with self._lock:
            hook_id = next(self._ids)
            owner, _, name = repository.partition("/")
            api = f"https://api.github.com/repos/{owner}/{name}/hooks/{hook_id}"
            self.hooks.setdefault(repository.lower(), []).append(
                {
                    "type": "Repository",
                    "id": hook_id,
                    "name": "web",
                    "active": active,
                    "events": list(events),
                    "config": {
                        "content_type": content_type,
                        "insecure_ssl": insecure_ssl,
                        "url": url,
                        "secret": "********",
                    },
                    "updated_at": "2026-11-01T10:00:00Z",
                    "created_at": "2026-11-01T10:00:00Z",
                    "url": api,
                    "test_url": f"{api}/test",
                    "ping_url": f"{api}/pings",
                    "deliveries_url": f"{api}/deliveries",
                    "last_response": {"code": None, "status": "unused", "message": None},
                }
            )
            self.deliveries[hook_id] = []
            return hook_id

    def add_delivery(
        self,
        hook_id: int,
        status_code: int,
        *,
        delivered_at: str,
        event: str = "workflow_job",
        action: str | None = "queued",
        status: str | None = None,
    ) -> None:
        """One delivery attempt of a hook (``status_code`` 0: GitHub could not connect)."""
        with self._lock:
            self.deliveries[hook_id].append(
                {
                    "id": next(self._ids),
                    "guid": secrets.token_hex(16),
                    "delivered_at": delivered_at,
                    "redelivery": False,
                    "duration": 0.12,
                    "status": status
                    or (
                        "OK"
                        if 200 <= status_code < 300
                        else "Invalid HTTP Response: " + str(status_code)
                    ),
                    "status_code": status_code,
                    "event": event,
                    "action": action,
                    "installation_id": None,
                    "repository_id": 1296269,
                }
            )

    def add_release(self, tag: str, published_at: str, *, prerelease: bool = False) -> None:
        """An actions/runner release; keep them newest first by adding them oldest first."""
        with self._lock:
            self.releases.insert(
                0,
                {
                    "id": next(self._ids),
                    "tag_name": tag,
                    "name": tag,
                    "draft": False,
                    "prerelease": prerelease,
                    "published_at": published_at,
                },
            )

    def add_runner_group(
        self,
        group_id: int,
        name: str,
        *,
        visibility: str = "selected",
        repositories: tuple[str, ...] = (),
        allows_public_repositories: bool = False,
    ) -> RunnerGroup:
        """An organization runner group (``visibility`` ``all``, ``selected`` or ``private``)."""
        with self._lock:
            group = RunnerGroup(
                group_id,
                name,
                visibility,
                list(repositories),
                allows_public_repositories,
                default=group_id == 1,
            )
            self.group_settings[group_id] = group
            self.runner_groups = self.runner_groups | {group_id}
            return group

    def revoke_installation(self, installation_id: int) -> None:
        """The App is uninstalled (or suspended): no new token, and its tokens stop working."""
        with self._lock:
            self.installations[installation_id].revoked = True

    def touch_runs(self) -> None:
        """Every run changes (its ``updated_at`` moves on): no runs list answers 304 next."""
        with self._lock:
            self._touched += 1

    def calls(self, method: str | None = None) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    # -- the API ---------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        lost: Injected | None = None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body))
            for index, injected in enumerate(self._injected):
                # GitHub matches owner and repository names in any case.
                if injected.method in (None, method) and (
                    injected.path is None or injected.path.lower() == path.partition("?")[0].lower()
                ):
                    del self._injected[index]
                    if not injected.handled:
                        return injected.status, injected.body, injected.headers
                    lost = injected
                    break
            answer = self._answer(method, path, headers, body)
        if lost is None:
            return answer
        time.sleep(lost.delay)  # outside the lock: other requests go on meanwhile
        return lost.status, lost.body, lost.headers

    def _answer(
        self, method: str, path: str, headers: dict[str, str], body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        route, _, query = path.partition("?")
        if route == _RELEASES_PATH and method == "GET":
            return self._releases(headers)
        hooks = _HOOKS_PATH.match(route)
        if hooks and method == "GET":
            return self._hooks(hooks, parse_qs(query), headers)
        if route == "/rate_limit" and method == "GET":
            return self._rate_limit(headers)
        exchange = _ACCESS_TOKENS_PATH.match(route)
        if exchange and method == "POST":
            return self._access_token(int(exchange.group(1)), headers)
        if route == _INSTALLATION_REPOSITORIES_PATH and method == "GET":
            return self._installation_repositories(parse_qs(query), headers)
        group = _RUNNER_GROUP_PATH.match(route)
        if group and method == "GET":
            return self._runner_group(group, parse_qs(query), headers)
        organization = _ORG_RUNNERS_PATH.match(route)
        if organization:
            scope = f"org:{organization.group(1).lower()}"
            refused = self._authorize(headers, scope, "org_runners")
            if refused is not None:
                return refused
            target = organization.group(2)
            if target is None:
                if method != "GET":
                    return _error(404, "Not Found")
                return self._runner_list(scope, parse_qs(query))
            return self._runner(method, scope, target, body)
        runs = _RUNS_PATH.match(route)
        if runs and method == "GET":
            return self._runs(runs, parse_qs(query), headers)
        one_job = _JOB_PATH.match(route)
        if one_job and method == "GET":
            return self._job(one_job, headers)
        listing = _RUNNER_LIST_PATH.match(route)
        if listing and method == "GET":
            return self._list_runners(listing, parse_qs(query), headers)
        match = _RUNNERS_PATH.match(route)
        if not match:
            return _error(404, "Not Found")
        repository = f"{match.group(1)}/{match.group(2)}".lower()
        refused = self._authorize(headers, repository, "admin")
        if refused is not None:
            return refused
        return self._runner(method, repository, match.group(3), body)

    def _runner(
        self, method: str, repository: str, target: str, body: Any
    ) -> tuple[int, Any, dict[str, str]]:
        """One runner endpoint of ``repository`` (or ``org:{org}`` for the organization's)."""
        if target == "generate-jitconfig":
            if method != "POST":
                return _error(404, "Not Found")
            return self._generate_jitconfig(repository, body)
        if not target.isdigit():
            return _error(404, "Not Found")
        runner = self.runners.get(int(target))
        if runner is None or runner.repository != repository:
            return _error(404, "Not Found")
        if method == "GET":
            return 200, runner.as_json(), {}
        if method == "DELETE":
            left = self.busy_deletes_left.get(runner.id, 0)
            if runner.busy and left > 0:
                self.busy_deletes_left[runner.id] = left - 1
                if left - 1 == 0:
                    runner.busy = False
                return _error(422, f'Bad request - Runner "{runner.name}" is still running a job"')
            del self.runners[runner.id]
            return 204, None, {}
        return _error(404, "Not Found")

    def _authorize(
        self, headers: dict[str, str], repository: str, needed: str
    ) -> tuple[int, Any, dict[str, str]] | None:
        """GitHub's answer when the request may not go on: 401, rate limit, 404 or 403."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not token or scheme.lower() not in ("bearer", "token"):
            return _error(401, "Requires authentication")
        grants = self.tokens.get(token)
        issued = self.issued.get(token)
        if issued is not None:
            installation = self.installations[issued.installation_id]
            if installation.revoked or time.time() >= issued.expires_at:
                return _error(401, "Bad credentials")
            grants = installation.grants
        if grants is None:
            return _error(401, "Bad credentials")
        if self.rate_limited:
            return _error(
                403,
                "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for "
                "help, please include the request ID.",
                {"x-ratelimit-remaining": "0"},
            )
        permission = grants.get(repository)
        kind = "integration" if issued is not None else "personal access token"
        if permission is None and repository.startswith("org:"):
            # The organization is visible to a credential with access to any of its
            # repositories: it lacks the organization permission, it is not lost.
            organization = repository[len("org:") :]
            if any(scope.partition("/")[0] == organization for scope in grants):
                return _error(403, f"Resource not accessible by {kind}")
        if permission is None:
            return _error(404, "Not Found")
        if needed not in _granted(permission):
            return _error(403, f"Resource not accessible by {kind}")
        return None

    def _installation_repositories(
        self, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """``GET /installation/repositories``: only an installation token may ask."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if not token or scheme.lower() not in ("bearer", "token"):
            return _error(401, "Requires authentication")
        issued = self.issued.get(token)
        if issued is None:
            if token in self.tokens:
                return _error(403, "Resource not accessible by personal access token")
            return _error(401, "Bad credentials")
        installation = self.installations[issued.installation_id]
        if installation.revoked or time.time() >= issued.expires_at:
            return _error(401, "Bad credentials")
        listed = [self._repository(name) for name in installation.repositories()]
        page, per_page = _page(query)
        return (
            200,
            {
                "total_count": len(listed),
                "repository_selection": installation.repository_selection,
                "repositories": listed[(page - 1) * per_page : page * per_page],
            },
            {},
        )

    def _runner_group(
        self, match: re.Match[str], query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        organization = match.group(1)
        refused = self._authorize(headers, f"org:{organization.lower()}", "org_runners")
        if refused is not None:
            return refused
        group_id = int(match.group(2))
        if group_id not in self.runner_groups:
            return _error(404, "Not Found")
        group = self.group_settings.get(group_id) or RunnerGroup(
            group_id, "Default" if group_id == 1 else f"group-{group_id}", default=group_id == 1
        )
        if match.group(3) is None:
            return 200, group.as_json(organization), {}
        listed = [self._repository(name) for name in group.repositories]
        page, per_page = _page(query)
        window = listed[(page - 1) * per_page : page * per_page]
        return 200, {"total_count": len(listed), "repositories": window}, {}

    def _repository(self, full_name: str) -> dict[str, Any]:
        public = full_name.lower() in self.public_repositories
        return _minimal_repository(full_name) | {
            "private": not public,
            "visibility": "public" if public else "private",
        }

    def _releases(self, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        token = headers.get("authorization", "").partition(" ")[2]
        if token and self.tokens.get(token) is None:
            return _error(401, "Bad credentials")  # even on a public endpoint
        return 200, list(self.releases), {}

    def _hooks(
        self, match: re.Match[str], query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        repository = f"{match.group(1)}/{match.group(2)}".lower()
        refused = self._authorize(headers, repository, "hooks")
        if refused is not None:
            return refused
        per_page = min(int(query.get("per_page", ["30"])[-1]), 100)
        hooks = self.hooks.get(repository, [])
        if match.group(3) is None:
            return 200, hooks[:per_page], {}
        hook_id = int(match.group(3))
        if not any(hook["id"] == hook_id for hook in hooks):
            return _error(404, "Not Found")
        newest_first = list(reversed(self.deliveries.get(hook_id, [])))
        return 200, newest_first[:per_page], {}

    def _rate_limit(self, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        issued = self.issued.get(token)
        if issued is not None:
            valid = time.time() < issued.expires_at and not (
                self.installations[issued.installation_id].revoked
            )
        else:
            valid = token in self.tokens
        if not token or scheme.lower() not in ("bearer", "token") or not valid:
            return _error(401, "Bad credentials")
        limit = INSTALLATION_RATE_LIMIT if issued is not None else RATE_LIMIT
        counted = sum(1 for r in self.requests if not r.path.startswith("/rate_limit"))
        remaining = (
            max(0, limit - counted)
            if self.rate_limit_remaining is None
            else (self.rate_limit_remaining)
        )
        core = {
            "limit": limit,
            "remaining": remaining,
            "used": limit - remaining,
            "reset": int(time.time()) + 3600,
        }
        quota = {"x-ratelimit-remaining": str(remaining), "x-ratelimit-used": str(core["used"])}
        return 200, {"resources": {"core": core}, "rate": core}, quota

    def _access_token(
        self, installation_id: int, headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """``POST /app/installations/{id}/access_tokens``, authenticated by the App's JWT."""
        scheme, _, jwt = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not jwt:
            return _error(401, "Requires authentication")
        verdict = self._verify_jwt(jwt)
        if isinstance(verdict, str):
            return _error(401, verdict)
        installation = self.installations.get(installation_id)
        if installation is None or installation.revoked or installation.app_id != verdict:
            return _error(404, "Not Found")
        token = "ghs_" + secrets.token_urlsafe(36)
        expires = time.time() + self.installation_token_seconds
        self.issued[token] = IssuedToken(installation_id, expires)
        document = {
            "token": token,
            "expires_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
            "permissions": installation.reported_permissions(),
            "repository_selection": installation.repository_selection,
        }
        return 201, document, {}

    def _verify_jwt(self, jwt: str) -> int | str:
        """The App id a valid JWT was issued by, or GitHub's message for why it is refused."""
        parts = jwt.split(".")
        if len(parts) != 3:
            return JWT_UNDECODABLE
        try:
            header, claims = (json.loads(_unbase64url(part)) for part in parts[:2])
            signature = _unbase64url(parts[2])
        except ValueError:
            return JWT_UNDECODABLE
        if not isinstance(header, dict) or not isinstance(claims, dict):
            return JWT_UNDECODABLE
        now = time.time()
        self.jwts.append({"header": header, "claims": claims, "at": now})
        issuer = claims.get("iss")
        app_id = int(issuer) if isinstance(issuer, int | str) and str(issuer).isdigit() else None
        key = self.apps.get(app_id) if app_id is not None else None
        if header.get("alg") != "RS256" or key is None:
            return JWT_UNDECODABLE
        expires, issued = claims.get("exp"), claims.get("iat")
        if not isinstance(expires, int) or expires <= now:
            return JWT_EXPIRED
        if expires > now + JWT_MAX_SECONDS:
            return JWT_EXP_TOO_FAR
        if not isinstance(issued, int) or issued > now + CLOCK_DRIFT_SECONDS:
            return JWT_IAT_FUTURE
        signed = f"{parts[0]}.{parts[1]}".encode("ascii")
        if not openssl_verifies(key, signed, signature):
            return JWT_UNDECODABLE
        return app_id

    def _runs(
        self, match: re.Match[str], query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        repository = f"{match.group(1)}/{match.group(2)}".lower()
        refused = self._authorize(headers, repository, "actions_read")
        if refused is not None:
            return refused
        if match.group(3) is not None:
            run_id = int(match.group(3))
            run = self.runs.get(run_id)
            if run is None or run["repository"] != repository:
                return _error(404, "Not Found")
            if match.group(4) is None:
                return 200, _run_object(run_id, run), {}
            # filter=latest (the default): one attempt per job, which is all we store.
            jobs = [job for job in self.jobs.values() if int(job["run_id"]) == run_id]
            return 200, {"total_count": len(jobs), "jobs": jobs}, {}
        wanted = query.get("status", [None])[-1]
        per_page = min(int(query.get("per_page", ["30"])[-1]), 100)
        listed = [
            _run_object(run_id, run)
            for run_id, run in sorted(self.runs.items(), reverse=True)
            if run["repository"] == repository and wanted in (None, run["status"])
        ]
        if self.full_run_objects:
            listed = [_full_run_object(run, repository, self._touched) for run in listed]
        document = {"total_count": len(listed), "workflow_runs": listed[:per_page]}
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
        etag = f'W/"{digest[:32]}"'
        if headers.get("if-none-match") == etag:
            return 304, None, {"etag": etag}
        return 200, document, {"etag": etag}

    def _job(
        self, match: re.Match[str], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        """``GET .../actions/jobs/{job_id}``: the job object; 404 for an unknown job or one of
        another repository's runs."""
        repository = f"{match.group(1)}/{match.group(2)}".lower()
        refused = self._authorize(headers, repository, "actions_read")
        if refused is not None:
            return refused
        job = self.jobs.get(int(match.group(3)))
        run = self.runs.get(int(job["run_id"])) if job is not None else None
        if job is None or run is None or run["repository"] != repository:
            return _error(404, "Not Found")
        return 200, job, {}

    def _list_runners(
        self, match: re.Match[str], query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, Any, dict[str, str]]:
        repository = f"{match.group(1)}/{match.group(2)}".lower()
        refused = self._authorize(headers, repository, "admin")
        if refused is not None:
            return refused
        return self._runner_list(repository, query)

    def _runner_list(
        self, repository: str, query: dict[str, list[str]]
    ) -> tuple[int, Any, dict[str, str]]:
        wanted = query.get("name", [None])[-1]
        per_page = min(int(query.get("per_page", ["30"])[-1]), 100)
        page = max(int(query.get("page", ["1"])[-1]), 1)
        listed = [
            runner.as_json()
            for _, runner in sorted(self.runners.items())
            if runner.repository == repository and wanted in (None, runner.name)
        ]
        start = (page - 1) * per_page
        return 200, {"total_count": len(listed), "runners": listed[start : start + per_page]}, {}

    def _generate_jitconfig(self, repository: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            return _error(422, "Invalid request.\n\nFor 'links/0/schema', nil is not an object.")
        name = body.get("name")
        group = body.get("runner_group_id")
        labels = body.get("labels")
        work_folder = body.get("work_folder", "_work")
        if not isinstance(name, str) or not name:
            return _error(422, 'Invalid request.\n\n"name" wasn\'t supplied.')
        if not isinstance(group, int) or isinstance(group, bool):
            return _error(422, 'Invalid request.\n\n"runner_group_id" wasn\'t supplied.')
        if (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= MAX_LABELS
            or not all(isinstance(label, str) and label for label in labels)
        ):
            return _error(422, "Invalid request.\n\nFor 'properties/labels', is not valid.")
        if not isinstance(work_folder, str):
            return _error(422, "Invalid request.\n\nFor 'properties/work_folder', is not a string.")
        if group not in self.runner_groups:
            return _error(422, f"Validation Failed: runner group {group} does not exist")
        if any(r.repository == repository and r.name == name for r in self.runners.values()):
            return _error(409, f"Already exists - A runner with the name {name} already exists.")
        jit = base64.b64encode(secrets.token_bytes(48)).decode()
        runner = Runner(next(self._ids), name, repository, list(labels), group, jit)
        self.runners[runner.id] = runner
        return 201, {"runner": runner.as_json(), "encoded_jit_config": jit}, {}


def _page(query: dict[str, list[str]]) -> tuple[int, int]:
    """(page, per_page) as GitHub reads them: 30 a page by default, at most 100."""
    per_page = min(int(query.get("per_page", ["30"])[-1]), 100)
    return max(int(query.get("page", ["1"])[-1]), 1), per_page


def _unbase64url(part: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def openssl_verifies(public_key_pem: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is RS256 (RSASSA-PKCS1-v1_5, SHA-256) of ``message`` by the key
    whose public half is ``public_key_pem``: checked by the ``openssl`` CLI, not by this file."""
    with tempfile.TemporaryDirectory() as scratch:
        key, signed = Path(scratch, "key.pem"), Path(scratch, "signature")
        key.write_bytes(public_key_pem)
        signed.write_bytes(signature)
        done = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(key), "-signature", str(signed)],
            input=message,
            capture_output=True,
            check=False,
        )
    return done.returncode == 0


def _minimal_repository(full_name: str) -> dict[str, Any]:
    owner, name = full_name.split("/", 1)
    digest = int(hashlib.sha256(full_name.lower().encode()).hexdigest()[:8], 16)
    return {
        "id": digest,
        "name": name,
        "full_name": full_name,
        "owner": {"login": owner, "type": "User"},
        "private": False,
        "fork": False,
    }


def _run_object(run_id: int, run: dict[str, Any]) -> dict[str, Any]:
    """A workflow run as GitHub answers it (the fields the toolkit reads, and a few others)."""
    head = run["head_repository"]
    head_object = None if head is None else _minimal_repository(str(head))
    if head_object is not None and str(head).lower() != run["repository"]:
        head_object["fork"] = True
    return {
        "id": run_id,
        "name": "CI",
        "event": run["event"],
        "status": run["status"],
        "conclusion": None if run["status"] != "completed" else "success",
        "head_branch": run["head_branch"],
        "head_sha": run["head_sha"],
        "run_attempt": 1,
        "repository": _minimal_repository(run["full_name"]),
        "head_repository": head_object,
    }


def _repository_object(full_name: str) -> dict[str, Any]:
    """A minimal-repository object: the fixture's repository URLs and owner, renamed."""
    from tests.standins.webhooks import load

    source = load("workflow_job/queued")["repository"]
    old, new = source["full_name"], full_name
    kept = {"id", "node_id", "name", "full_name", "private", "owner", "html_url", "description"}
    kept |= {"fork", "url"}
    text = json.dumps({k: v for k, v in source.items() if k in kept or k.endswith("_url")})
    document: dict[str, Any] = json.loads(text.replace(old, new))
    document["name"] = new.split("/", 1)[1]
    return document


def _full_run_object(run: dict[str, Any], repository: str, touched: int) -> dict[str, Any]:
    """``run`` with the rest of the documented workflow-run fields, at GitHub's size.

    Field names from GitHub's REST reference ("List workflow runs for a repository"); values are
    made up in GitHub's formats. The stand-in's own fields win, so its answers keep their meaning.
    """
    from tests.standins.webhooks import load

    actor = load("workflow_job/queued")["sender"]
    run_id = int(run["id"])
    api = f"https://api.github.com/repos/{repository}/actions/runs/{run_id}"
    sha = hashlib.sha256(str(run_id).encode()).hexdigest()[:40]
    repo = _repository_object(repository)
    moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + touched))
    documented = {
        "id": run_id,
        "name": "CI",
        "node_id": f"WFR_kwLOA{run_id:012d}",
        "head_branch": "main",
        "head_sha": sha,
        "path": ".github/workflows/ci.yml",
        "display_title": "Build and test on every push to the default branch",
        "run_number": run_id % 10_000,
        "event": "push",
        "status": run.get("status"),
        "conclusion": None,
        "workflow_id": 161335,
        "check_suite_id": run_id * 3,
        "check_suite_node_id": f"CS_kwDOA{run_id:012d}",
        "url": api,
        "html_url": f"https://github.com/{repository}/actions/runs/{run_id}",
        "pull_requests": [],
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": moment,
        "actor": actor,
        "run_attempt": 1,
        "referenced_workflows": [],
        "run_started_at": "2026-01-01T00:00:01Z",
        "triggering_actor": actor,
        "jobs_url": f"{api}/jobs",
        "logs_url": f"{api}/logs",
        "check_suite_url": f"https://api.github.com/repos/{repository}/check-suites/{run_id * 3}",
        "artifacts_url": f"{api}/artifacts",
        "cancel_url": f"{api}/cancel",
        "rerun_url": f"{api}/rerun",
        "previous_attempt_url": None,
        "workflow_url": f"https://api.github.com/repos/{repository}/actions/workflows/161335",
        "head_commit": {
            "id": sha,
            "tree_id": hashlib.sha256(sha.encode()).hexdigest()[:40],
            "message": "Update the build matrix",
            "timestamp": "2026-01-01T00:00:00Z",
            "author": {"name": "Monalisa Octocat", "email": "octocat@github.com"},
            "committer": {"name": "GitHub", "email": "noreply@github.com"},
        },
        "repository": repo,
        "head_repository": repo,
    }
    merged = documented | run
    # The stand-in's own repository objects are minimal: give them the rest of their fields.
    for name in ("repository", "head_repository"):
        own = run.get(name)
        if isinstance(own, dict) and isinstance(own.get("full_name"), str):
            merged[name] = _repository_object(own["full_name"]) | own
    return merged


def _error(
    status: int, message: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    return status, {"message": message, "documentation_url": DOCS}, dict(headers or {})


def _handler_for(standin: GitHubStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read standin.requests instead

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, answer, extra = standin.handle(self.command, self.path, headers, body)
            payload = b"" if answer is None else json.dumps(answer).encode()
            # The client may have given up waiting (a lost answer with a delay), as on GitHub.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._send(status, payload, extra)

        def _send(self, status: int, payload: bytes, extra: dict[str, str]) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-github-request-id", secrets.token_hex(8).upper())
            _, _, credential = self.headers.get("Authorization", "").partition(" ")
            installation = credential in standin.issued
            self.send_header(
                "x-ratelimit-limit", str(INSTALLATION_RATE_LIMIT if installation else RATE_LIMIT)
            )
            default = standin.rate_limit_remaining
            if default is None:
                limit = INSTALLATION_RATE_LIMIT if installation else RATE_LIMIT
                default = limit - len(standin.requests)
            remaining = extra.pop("x-ratelimit-remaining", str(default))
            self.send_header("x-ratelimit-remaining", remaining)
            self.send_header("x-ratelimit-reset", str(int(time.time()) + 3600))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

    return Handler
