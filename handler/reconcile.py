"""The reconciler: find queued jobs the webhooks missed and dispatch them, within a budget.

GitHub never retries a failed delivery, Nomad or the tunnel can be down when one arrives, and a
job deferred at its pool's cap waits for capacity. Every few minutes (a Worker Cron Trigger, or
``python -m handler.local_server --reconcile-once``) :func:`reconcile` lists each served
repository's runs with status ``queued`` and ``in_progress`` (a run whose first job already runs
can still hold a queued job), then each such run's jobs (``filter=latest``). Every job still
``queued`` goes through the same :func:`handler.decide.decide` as a webhook and the same
:func:`handler.service.dispatch_job` (pool cap included), with the job id as Nomad's idempotency
token: a job already served is a no-op at Nomad, so the reconciler can never start a second
runner for a job. Jobs it dispatches first are marked ``reconciled`` in the ledger.

Fork policy: a job of a repository whose policy is ``refuse`` is dispatched only once its run is
known to be the repository's own (:mod:`handler.forks`). The runs lists already carry each run's
``head_repository``, so the verdicts come free with them and are kept beside the run ids in the
ETag entry (written only when the list changed, as before); a run missing from them (an entry
written before, a cache miss) costs one ``GET .../actions/runs/{id}`` from the budget. Fork runs
are ignored with their reason code, and a failed lookup leaves the job for the next run.

Limits, so one run stays cheap and bounded:

* a budget of outbound requests per run shared by GitHub and Nomad calls: the optional
  ``RECONCILE_REQUEST_BUDGET`` binding (``[reconcile] request_budget``), by default the plan's
  (``RECONCILE_PLAN``, ``[reconcile] plan``: 10 on the Free plan, whose 10 ms of CPU per
  invocation bound a run before its 50 subrequests do; 40 on a paid plan);
* runs lists of ``contract.RUNS_PER_PAGE[plan]`` runs (20 on the Free plan, 100 on a paid one),
  and no more than the budget can follow (:func:`runs_per_page`: 9 with the Free plan's default
  budget): a 100-run answer is about 1.2 MB of JSON to parse;
* conditional requests: each runs list is sent with the ``ETag`` of its last answer
  (``If-None-Match``), kept in KV; a 304 costs no GitHub rate limit and reuses the stored run ids;
* round-robin without state: the run's scheduled time names the slice of repositories it starts
  with (:func:`rotation_order`), so a budget smaller than the repository list still covers every
  repository in turn, and a KV outage (no write lands) cannot stop the rotation;
* it stops at a rate limit (403/429 with ``x-ratelimit-remaining: 0`` or ``retry-after``), when
  ``x-ratelimit-remaining`` falls under :data:`RATE_LIMIT_FLOOR`, on a refused credential (401),
  when Nomad is unreachable, and at a wall-time deadline.

It needs ``GITHUB_READ_TOKEN``: a fine-grained token with only "Actions: read" on the served
repositories (with a GitHub App's bindings instead, the adapter mints an installation token
before the run: :mod:`handler.github_auth`). With tokens, the credential that mints runners
stays in Nomad Variables. The GitHub side is plain data (requests built and answers parsed
here); the adapters send the requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol
from urllib.parse import quote, urlencode

from handler import contract, forks
from handler.contract import FORK_POLICY_REFUSE
from handler.decide import Dispatch, decide
from handler.deferred import successor_token
from handler.events import WORKFLOW_JOB, PayloadError, WorkflowJobEvent, parse_event
from handler.github_errors import github_message
from handler.ledger import LEDGER_TTL_SECONDS, LedgerRecord, Observation, ledger_key, merge
from handler.nomad import (
    HttpRequest,
    NomadError,
    interpret_job_children,
    interpret_job_status,
    job_children_request,
    job_request,
)
from handler.service import (
    ATTEMPT_TIMEOUT_SECONDS,
    ConfigurationError,
    DispatchResult,
    LedgerStore,
    LedgerUnavailable,
    Ports,
    Settings,
    TransportError,
    dispatch_job,
    record_observation,
)

DEFAULT_REQUEST_BUDGET: Final = contract.DEFAULT_RECONCILE_REQUEST_BUDGET
# Stop before the token's hourly quota runs dry: leave room for a person or another tool.
RATE_LIMIT_FLOOR: Final = 100
REQUEST_TIMEOUT_SECONDS: Final = 5.0
DEADLINE_SECONDS: Final = 20.0
RUN_STATUSES: Final[tuple[str, ...]] = ("queued", "in_progress")
PER_PAGE: Final = 100
ETAG_PREFIX: Final = "reconcile:etag:"
STATE_TTL_SECONDS: Final = 24 * 3600
GITHUB_API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "nomad-github-runners-reconciler"
# How far one run follows a queued job's chain of dead runners (each step costs a child read
# and a dispatch; the first live or new runner ends it). Each dead runner of a chain took
# another job (GitHub gives any idle runner any matching job), so a chain grows by one per
# runner lost that way; with a bound of 2 a job whose two successors both went to other jobs
# was replayed for ever (found by bench/scheduling.py) until Nomad collected the children.
MAX_REDISPATCHES: Final = 8
_MAX_REASON: Final = 200
# What a read of a child says (_Run.child_state).
_CHILD_DEAD: Final = "dead"
_CHILD_LIVE: Final = "live"
_CHILD_GONE: Final = "gone"
_CHILD_UNKNOWN: Final = "unknown"


class GitHubError(Exception):
    """GitHub answered with an error; ``status`` is its HTTP status, ``reason`` its message."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"GitHub answered {status}: {reason}")
        self.status = status
        self.reason = reason


class GitHubRateLimited(GitHubError):
    """Primary or secondary rate limit: stop this run, try again at the next one."""


class GitHubCredentialRefused(GitHubError):
    """401: the read token is missing, expired or revoked; no repository will work."""


class HeaderTransport(Protocol):
    async def exchange(self, request: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        """Send ``request``; return (status, lower-cased headers, body) or raise TransportError."""
        ...


@dataclass(frozen=True)
class GitHubReadSettings:
    api_url: str
    token: str = field(repr=False)
    request_budget: int = DEFAULT_REQUEST_BUDGET
    deadline_seconds: float = DEADLINE_SECONDS
    runs_per_page: int = PER_PAGE


def github_settings_from_bindings(lookup: Callable[[str], str | None]) -> GitHubReadSettings:
    """The reconciler's settings from ``GITHUB_API_URL``, ``GITHUB_READ_TOKEN`` (absent with a
    GitHub App's bindings: the token is minted before the run) and the optional
    ``RECONCILE_PLAN`` (absent or empty: ``free``) and ``RECONCILE_REQUEST_BUDGET`` (absent or
    empty: the plan's default).

    Separate from :func:`handler.service.settings_from_bindings`: webhooks and ``/status`` work
    without these, only the reconciler needs them.
    """
    values = {contract.GITHUB_READ_TOKEN_BINDING: ""}
    required = [contract.GITHUB_API_URL_BINDING]
    # A GitHub App's Worker has no read token: its adapter mints one (handler.github_auth) and
    # puts it in the settings before the run.
    if lookup(contract.GITHUB_APP_ID_BINDING) is None:
        required.append(contract.GITHUB_READ_TOKEN_BINDING)
    for name in required:
        value = lookup(name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"binding {name}: missing or empty")
        values[name] = value.strip()
    api_url = values[contract.GITHUB_API_URL_BINDING]
    if not api_url.startswith(("https://", "http://")):
        raise ConfigurationError(f"binding {contract.GITHUB_API_URL_BINDING}: expected a URL")
    plan = plan_from_binding(lookup(contract.RECONCILE_PLAN_BINDING))
    budget = request_budget_from_binding(
        lookup(contract.RECONCILE_REQUEST_BUDGET_BINDING),
        default=contract.PLAN_DEFAULT_REQUEST_BUDGET[plan],
    )
    return GitHubReadSettings(
        api_url=api_url.rstrip("/"),
        token=values[contract.GITHUB_READ_TOKEN_BINDING],
        request_budget=budget,
        runs_per_page=runs_per_page(plan, budget),
    )


def runs_per_page(plan: str, request_budget: int) -> int:
    """The runs lists' page size: the plan's (``contract.RUNS_PER_PAGE``), but never more runs
    than one run can follow. A run spends a request on the list itself, so it reads the jobs of
    at most ``request_budget - 1`` of its runs; the rest of a longer page would be parsed for
    nothing, and parsing full-size runs is most of a changed list's CPU (bench/cpu_budget.py):
    9 on the Free plan's default budget of 10, 39 on a paid plan's 40."""
    return max(1, min(contract.RUNS_PER_PAGE[plan], request_budget - 1))


def plan_from_binding(value: object) -> str:
    """``RECONCILE_PLAN``: ``free`` or ``paid``; absent or empty (a deployment older than the
    binding) is ``free``, the bound that is safe on every plan; anything else is refused."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return contract.DEFAULT_WORKERS_PLAN
    plan = value.strip() if isinstance(value, str) else ""
    if plan not in contract.WORKERS_PLANS:
        known = " or ".join(repr(name) for name in contract.WORKERS_PLANS)
        raise ConfigurationError(f"binding {contract.RECONCILE_PLAN_BINDING}: expected {known}")
    return plan


def request_budget_from_binding(value: object, default: int = DEFAULT_REQUEST_BUDGET) -> int:
    """``RECONCILE_REQUEST_BUDGET`` as an integer: absent (older deployments, the local server
    without it) is ``default``; anything but a decimal integer within
    [``MIN_RECONCILE_REQUEST_BUDGET``, ``MAX_RECONCILE_REQUEST_BUDGET``] is a ConfigurationError.
    """
    name = contract.RECONCILE_REQUEST_BUDGET_BINDING
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = value.strip() if isinstance(value, str) else ""
    if not text.isascii() or not text.isdigit():
        raise ConfigurationError(f"binding {name}: expected a whole number of requests")
    budget = int(text)
    low, high = contract.MIN_RECONCILE_REQUEST_BUDGET, contract.MAX_RECONCILE_REQUEST_BUDGET
    if not low <= budget <= high:
        raise ConfigurationError(f"binding {name}: must be between {low} and {high}, got {budget}")
    return budget


def _headers(token: str, etag: str | None = None) -> tuple[tuple[str, str], ...]:
    headers = [
        ("Accept", "application/vnd.github+json"),
        ("Authorization", f"Bearer {token}"),
        ("X-GitHub-Api-Version", GITHUB_API_VERSION),
        ("User-Agent", USER_AGENT),
    ]
    if etag:
        headers.append(("If-None-Match", etag))
    return tuple(headers)


def _repo_path(repository: str) -> str:
    owner, name = repository.split("/", 1)
    return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"


def runs_request(
    github: GitHubReadSettings, repository: str, status: str, etag: str | None
) -> HttpRequest:
    """``GET /repos/{o}/{r}/actions/runs?status=..&per_page=N`` (N: the plan's
    ``runs_per_page``), conditional on ``etag``."""
    query = urlencode({"status": status, "per_page": github.runs_per_page})
    url = f"{github.api_url}{_repo_path(repository)}/actions/runs?{query}"
    return HttpRequest("GET", url, _headers(github.token, etag), b"")


def jobs_request(github: GitHubReadSettings, repository: str, run_id: int) -> HttpRequest:
    """``GET /repos/{o}/{r}/actions/runs/{run_id}/jobs?filter=latest&per_page=100``."""
    query = urlencode({"filter": "latest", "per_page": PER_PAGE})
    url = f"{github.api_url}{_repo_path(repository)}/actions/runs/{run_id}/jobs?{query}"
    return HttpRequest("GET", url, _headers(github.token), b"")


def raise_for_github_error(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """Raise the :class:`GitHubError` an answer stands for; return for 200 and 304."""
    if status in (200, 304):
        return
    reason = github_message(body, _MAX_REASON)
    limited = (
        headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in headers
        or "rate limit" in reason.lower()
    )
    if status == 429 or (status == 403 and limited):
        raise GitHubRateLimited(status, reason)
    if status == 401:
        raise GitHubCredentialRefused(status, reason)
    raise GitHubError(status, reason)


def remaining_quota(headers: Mapping[str, str]) -> int | None:
    raw = headers.get("x-ratelimit-remaining", "").strip()
    return int(raw) if raw.isdigit() else None


@dataclass(frozen=True)
class RunsPage:
    run_ids: tuple[int, ...]
    etag: str | None
    # run id -> handler.forks verdict, from each run's repository and head_repository
    origins: Mapping[int, str] = field(default_factory=dict)


def interpret_runs(
    status: int, headers: Mapping[str, str], body: bytes, repository: str | None = None
) -> RunsPage | None:
    """The run ids of a runs list (and, given ``repository``, each run's fork verdict); None
    for 304 (unchanged since the ETag we sent)."""
    raise_for_github_error(status, headers, body)
    if status == 304:
        return None
    try:
        document: Any = json.loads(body)
    except ValueError:
        raise GitHubError(status, "runs list: not JSON") from None
    runs = document.get("workflow_runs") if isinstance(document, dict) else None
    if not isinstance(runs, list):
        raise GitHubError(status, "runs list: no workflow_runs array")
    run_ids = tuple(
        run["id"]
        for run in runs
        if isinstance(run, dict) and type(run.get("id")) is int and run["id"] > 0
    )
    origins = forks.origins_from_runs(runs, repository) if repository else {}
    return RunsPage(run_ids=run_ids, etag=headers.get("etag"), origins=origins)


def interpret_jobs(
    status: int, headers: Mapping[str, str], body: bytes, repository: str
) -> tuple[WorkflowJobEvent, ...]:
    """The run's jobs still ``queued``, each as the ``queued`` webhook GitHub would have sent.

    Each job is validated by the webhook parser itself (same fields, same limits), so a job the
    API lists and a job a webhook carries are decided by exactly the same code. Jobs that do
    not parse are skipped: one odd job must not hide the others.
    """
    raise_for_github_error(status, headers, body)
    try:
        document: Any = json.loads(body)
    except ValueError:
        raise GitHubError(status, "jobs list: not JSON") from None
    jobs = document.get("jobs") if isinstance(document, dict) else None
    if not isinstance(jobs, list):
        raise GitHubError(status, "jobs list: no jobs array")
    events = []
    for job in jobs:
        if not isinstance(job, dict) or job.get("status") != "queued":
            continue
        delivery = {"action": "queued", "repository": {"full_name": repository}, WORKFLOW_JOB: job}
        try:
            event = parse_event(WORKFLOW_JOB, json.dumps(delivery).encode())
        except PayloadError:
            continue
        if isinstance(event, WorkflowJobEvent):
            events.append(event)
    return tuple(events)


def interval_from_cron(cron: object) -> int | None:
    """Minutes between runs of a Cron Trigger schedule as the dispatch stack writes it
    (``*/N * * * *``, or ``0 * * * *`` for hourly); None for any other schedule."""
    if not isinstance(cron, str):
        return None
    fields = cron.split()
    if len(fields) != 5 or fields[1:] != ["*", "*", "*", "*"]:
        return None
    minute = fields[0]
    if minute.isascii() and minute.isdigit() and int(minute) < 60:
        return 60
    step = minute.removeprefix("*/")
    if step != minute and step.isascii() and step.isdigit() and 0 < int(step) <= 60:
        return int(step)
    return None


def run_slot(scheduled: datetime, interval_minutes: int = 1) -> int:
    """The number of the run scheduled at ``scheduled``: consecutive runs have consecutive slots.

    A Cron Trigger fires at whole multiples of its interval (a divisor of 60) since the epoch;
    rounding absorbs a scheduled time a little off the minute.
    """
    return round(scheduled.timestamp() / 60 / max(1, interval_minutes))


def rotation_order(repositories: list[str], slot: int, per_run: int) -> list[str]:
    """The order run ``slot`` visits ``repositories`` (sorted) in, derived from ``slot`` alone.

    The list is cut into ``ceil(n / per_run)`` slices of nearly equal size; run ``slot`` starts
    with slice ``slot mod slices`` and goes on through the following ones while its budget
    lasts. So any ``slices`` consecutive runs start every slice once, and if each run can finish
    ``per_run`` repositories (``request_budget / 2`` quiet ones), they visit every repository.
    Within its slice, the repository a run begins with moves by one each lap, so a repository
    with more work than a whole budget delays the others of its slice only until their turn
    comes to go first. No cursor is stored: a run whose KV writes fail rotates as well.
    """
    total = len(repositories)
    if total == 0:
        return []
    slices = max(1, math.ceil(total / max(1, per_run)))
    size = math.ceil(total / slices)
    index = slot % slices
    lap = slot // slices
    start, end = index * size, min(total, (index + 1) * size)
    own = repositories[start:end]
    shift = lap % len(own) if own else 0
    return own[shift:] + own[:shift] + repositories[end:] + repositories[:start]


@dataclass
class ReconcileReport:
    """What one run did; logged as one JSON line, returned by the local command."""

    repositories: list[str] = field(default_factory=list)  # started, in order
    github_requests: int = 0
    run_lookups: int = 0  # GET .../actions/runs/{id} for the fork check (in github_requests)
    nomad_requests: int = 0
    not_modified: int = 0
    queued_jobs: int = 0
    dispatched: int = 0  # new runners, redispatched ones included
    redispatched: int = 0  # new runners for queued jobs whose earlier runner had ended
    already_dispatched: int = 0
    deferred: int = 0
    failed: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    # budget | deadline | rate_limited | quota_low | credentials | nomad_unreachable
    stopped: str | None = None
    slot: int = 0  # the run's number, from its scheduled time: where the rotation starts

    def to_log(self) -> dict[str, Any]:
        document = {"msg": "reconcile", **self.__dict__}
        document["errors"] = self.errors[:10]
        return document


class _Run:
    """One reconciler run: its budget, deadline, report and per-pool runner counts."""

    def __init__(
        self,
        settings: Settings,
        github: GitHubReadSettings,
        ports: Ports,
        transport: HeaderTransport,
        now: datetime,
    ) -> None:
        self.settings = settings
        self.github = github
        self.ports = ports
        self.transport = transport
        self.now = now
        self.started = ports.monotonic()
        self.report = ReconcileReport()
        self.spent = 0
        # Pool name -> pending + running children, read once per run, then counted locally.
        self.active: dict[str, int] = {}
        # (repository, run id) -> fork verdict, from this run's runs lists.
        self.origins: dict[tuple[str, int], str] = {}
        # The same for the repositories with a cap of their own (lower-cased name -> children).
        self.repository_active: dict[str, int] = {}

    def can_spend(self, requests: int = 1) -> bool:
        if self.report.stopped is not None:
            return False
        if self.ports.monotonic() - self.started > self.github.deadline_seconds:
            self.report.stopped = "deadline"
            return False
        if self.spent + requests > self.github.request_budget:
            self.report.stopped = "budget"
            return False
        return True

    async def github_get(self, request: HttpRequest) -> tuple[int, Mapping[str, str], bytes]:
        self.spent += 1
        self.report.github_requests += 1
        status, headers, body = await asyncio.wait_for(
            self.transport.exchange(request), REQUEST_TIMEOUT_SECONDS
        )
        headers = {name.lower(): value for name, value in headers.items()}
        remaining = remaining_quota(headers)
        if status in (200, 304) and remaining is not None and remaining < RATE_LIMIT_FLOOR:
            self.report.stopped = "quota_low"  # use this answer, send nothing more
        return status, headers, body

    async def repository(self, repository: str) -> None:
        for status in RUN_STATUSES:
            if not self.can_spend():
                return
            run_ids = await self.run_ids(repository, status)
            for run_id in run_ids:
                if not self.can_spend():
                    return
                answer = await self.github_get(jobs_request(self.github, repository, run_id))
                for event in interpret_jobs(*answer, repository):
                    await self.job(event, repository)

    async def run_ids(self, repository: str, status: str) -> tuple[int, ...]:
        key = f"{ETAG_PREFIX}{repository}:{status}"
        cached = await _load_json(self.ports.ledger, key)
        etag = cached.get("etag") if isinstance(cached.get("etag"), str) else None
        page = interpret_runs(
            *await self.github_get(runs_request(self.github, repository, status, etag)),
            repository,
        )
        if page is None:
            self.report.not_modified += 1
            stored = cached.get("runs")
            self.remember_origins(repository, cached.get("origins"))
            return tuple(i for i in stored if type(i) is int) if isinstance(stored, list) else ()
        for run_id, origin in page.origins.items():
            self.origins[(repository, run_id)] = origin
        if page.etag and page.etag != etag:
            document = {
                "etag": page.etag,
                "runs": list(page.run_ids),
                "origins": {str(run_id): origin for run_id, origin in page.origins.items()},
            }
            await _store_json(self.ports.ledger, key, document)
        return page.run_ids

    def remember_origins(self, repository: str, stored: Any) -> None:
        """The verdicts kept with a 304's run ids (an entry written before them has none)."""
        if not isinstance(stored, dict):
            return
        for run_id, origin in stored.items():
            if isinstance(run_id, str) and run_id.isdigit() and origin in forks.ORIGINS:
                self.origins[(repository, int(run_id))] = origin

    async def run_origin(self, repository: str, run_id: int) -> str | None:
        """The run's fork verdict: from the runs lists, the isolate's cache, or one lookup
        within the budget; None when it cannot be had now (no budget, lookup failed)."""
        origin = self.origins.get((repository, run_id))
        cache = self.ports.run_origins
        if origin is None and cache is not None:
            origin = cache.get(repository, run_id)
        if origin is not None:
            return origin
        if not self.can_spend():
            return None
        self.report.run_lookups += 1
        request = forks.run_request(
            forks.GitHubRead(self.github.api_url, self.github.token), repository, run_id
        )
        try:
            status, headers, body = await self.github_get(request)
            raise_for_github_error(status, headers, body)  # rate limit, 401: stop the run
            origin = forks.interpret_run(status, body, repository)
        except (GitHubRateLimited, GitHubCredentialRefused):
            raise
        except (GitHubError, forks.RunLookupError) as error:
            self.report.errors.append(f"{repository} run {run_id}: {error}")
            return None
        except (TimeoutError, TransportError, OSError):
            self.report.errors.append(f"{repository} run {run_id}: GitHub unreachable")
            return None
        self.origins[(repository, run_id)] = origin
        if cache is not None:
            cache.keep(repository, run_id, origin)
        return origin

    def ignore(self, code: str) -> None:
        self.report.ignored[code] = self.report.ignored.get(code, 0) + 1

    async def job(self, event: WorkflowJobEvent, repository: str) -> None:
        self.report.queued_jobs += 1
        decision = decide(event, self.settings.routing, self.now)
        if not isinstance(decision, Dispatch):
            self.ignore(decision.code)
            return
        if self.settings.routing.fork_policy(repository) == FORK_POLICY_REFUSE:
            origin = await self.run_origin(repository, event.job.run_id)
            if origin is None:
                self.ignore(forks.LOOKUP_FAILED_CODE)  # not dispatched now; the next run retries
                return
            code = forks.code_for(origin)
            if code is not None:
                self.ignore(code)
                await record_ignored(event, repository, decision.pool.name, code, self)
                return
        # Start the walk where the last run left it: the ledger names the job's newest child.
        # Replaying the job-id token instead would re-spend a dispatch and a read on every dead
        # child of the chain, run after run (bench/scheduling.py: a burst starved that way).
        recorded, last_child = await self.recorded_child(repository, event.job.id)
        learned: Observation | None = None
        if last_child is not None:
            state = await self.child_state(last_child, repository, event.job.id)
        elif not recorded:
            # No record: a webhook's dispatch is Nomad's record alone. One read of the job's
            # children says as much as the ledger's child and its read would.
            state, last_child, learned = await self.nomad_children(decision, event, repository)
        else:
            state = _CHILD_UNKNOWN
        if state == _CHILD_LIVE:
            # Its runner is starting or running: already served, nothing new to note (a job
            # with no record stays Nomad's to hold; its next delivery records it).
            self.report.already_dispatched += 1
            return
        if state == _CHILD_DEAD and last_child is not None:
            decision = replace(
                decision, idempotency_token=successor_token(event.job.id, last_child)
            )
        # Gone (collected by Nomad) or unknown: from the job-id token, as a webhook dispatches.
        result = await self.dispatch(decision, event, repository)
        if state == _CHILD_DEAD and result is not None and result.outcome == "dispatched":
            self.report.redispatched += 1
        # The job is still queued, yet Nomad replays a child for its token: if that child has
        # ended (its runner failed to register, was lost with its node, or took another job),
        # nothing will ever run this job, and the token stays taken until Nomad garbage-collects
        # the child (4 h by default). Dispatch again under a token derived from the dead child:
        # every reconciler run derives the same one, so this too happens once per dead child.
        hops = 0
        while (
            result is not None
            and result.outcome == "already_dispatched"
            and result.child_id is not None
            and hops < MAX_REDISPATCHES
            and await self.child_state(result.child_id, repository, event.job.id) == _CHILD_DEAD
        ):
            hops += 1
            decision = replace(
                decision, idempotency_token=successor_token(event.job.id, result.child_id)
            )
            result = await self.dispatch(decision, event, repository)
            if result is not None and result.outcome == "dispatched":
                self.report.redispatched += 1
        if result is None:
            return
        seen = _queued_observation(
            event,
            repository,
            decision.pool.name,
            child_id=result.child_id,
            outcome=result.outcome,
            at=self.now.timestamp(),
            source="reconciler",
        )
        # A replay is written only when the ledger lacks its child: the webhook's dispatch may
        # be Nomad's record alone, or it landed although it timed out (recorded "failed").
        # What Nomad said of a job with no record goes in first, so the record keeps the
        # webhook's dispatch second and does not count a successor as the reconciler's own.
        await record_observation(
            seen,
            self.ports.ledger,
            unless_child_recorded=result.outcome == "already_dispatched",
            prior=learned,
        )

    async def dispatch(
        self, decision: Dispatch, event: WorkflowJobEvent, repository: str
    ) -> DispatchResult | None:
        """One :func:`dispatch_job` within the budget, counted; None when the budget is spent."""
        pool = decision.pool.name
        known = self.active.get(pool)
        capped = self.settings.routing.repository_cap(repository) is not None
        known_repository = self.repository_active.get(repository) if capped else None
        # Two attempts at most, each a dispatch plus the capacity reads whose counts are unknown
        # (the pool's summary; the repository's children when it has a cap of its own).
        reads = (known is None) + (capped and known_repository is None)
        if not self.can_spend(2 * (1 + reads)):
            return None
        result = await dispatch_job(
            decision,
            self.settings,
            self.ports,
            id_prefix=f"gh{event.job.id}",
            started=self.ports.monotonic(),
            active=known,
            repository_active=known_repository,
        )
        self.spent += result.requests
        self.report.nomad_requests += result.requests
        started_one = result.outcome == "dispatched"
        if result.active is not None:
            self.active[pool] = result.active + started_one
        if capped and result.repository_active is not None:
            self.repository_active[repository] = result.repository_active + started_one
        if result.outcome == "dispatched":
            self.report.dispatched += 1
        elif result.outcome == "already_dispatched":
            self.report.already_dispatched += 1
        elif result.outcome == "deferred":
            self.report.deferred += 1
        else:
            self.report.failed += 1
            self.report.errors.append(f"{repository}#{event.job.id}: {result.reason}")
            if result.status == 503:
                # Nomad (or the tunnel) is unreachable: every further dispatch would fail too,
                # so keep the GitHub quota for the next run.
                self.report.stopped = "nomad_unreachable"
        return result

    async def recorded_child(self, repository: str, job_id: int) -> tuple[bool, str | None]:
        """Whether the job has a ledger record (True when KV cannot tell), and the newest child
        it names (None without one)."""
        try:
            stored = await self.ports.ledger.get(ledger_key(repository, job_id))
        except LedgerUnavailable:
            return True, None
        record = LedgerRecord.from_json(stored) if stored else None
        return stored is not None, record.child_id if record is not None else None

    async def nomad_children(
        self, decision: Dispatch, event: WorkflowJobEvent, repository: str
    ) -> tuple[str, str | None, Observation | None]:
        """What Nomad holds for a job the ledger has no record of: the newest child's state
        (``_CHILD_LIVE``, ``_CHILD_DEAD``, ``_CHILD_GONE`` when there is none, or
        ``_CHILD_UNKNOWN``), its id, and the dispatch as an observation to record first (the
        newest child, at the first child's second; None without a child)."""
        job = event.job
        if not self.can_spend(1):
            return _CHILD_UNKNOWN, None, None
        request = job_children_request(
            nomad_addr=self.settings.nomad_addr,
            namespace=self.settings.routing.namespace,
            parent=decision.pool.nomad_job,
            job_id=job.id,
            credentials=self.settings.credentials,
        )
        self.spent += 1
        self.report.nomad_requests += 1
        try:
            status, body = await asyncio.wait_for(
                self.ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
            )
            children = interpret_job_children(status, body, decision.pool.nomad_job, job.id)
        except NomadError as error:
            self.report.errors.append(f"{repository}#{job.id}: reading its children: {error}")
            return _CHILD_UNKNOWN, None, None
        except (TimeoutError, TransportError, OSError):
            self.report.errors.append(f"{repository}#{job.id}: reading its children: unreachable")
            return _CHILD_UNKNOWN, None, None
        if not children:
            return _CHILD_GONE, None, None
        newest = children[-1]
        learned = _queued_observation(
            event,
            repository,
            decision.pool.name,
            child_id=newest.child_id,
            outcome="dispatched",
            at=children[0].dispatched_at,
            source="webhook",
        )
        state = _CHILD_DEAD if newest.status == "dead" else _CHILD_LIVE
        return state, newest.child_id, learned

    async def child_state(self, child_id: str, repository: str, job_id: int) -> str:
        """What Nomad says of the child: ``_CHILD_DEAD``, ``_CHILD_LIVE`` (pending, running),
        ``_CHILD_GONE`` (404: collected) or ``_CHILD_UNKNOWN`` (an error, no budget)."""
        if not self.can_spend(1):
            return _CHILD_UNKNOWN
        request = job_request(
            nomad_addr=self.settings.nomad_addr,
            namespace=self.settings.routing.namespace,
            job_id=child_id,
            credentials=self.settings.credentials,
        )
        self.spent += 1
        self.report.nomad_requests += 1
        try:
            status, body = await asyncio.wait_for(
                self.ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
            )
            job_status = interpret_job_status(status, body)
        except NomadError as error:
            self.report.errors.append(f"{repository}#{job_id}: reading {child_id}: {error}")
            return _CHILD_UNKNOWN
        except (TimeoutError, TransportError, OSError):
            self.report.errors.append(f"{repository}#{job_id}: reading {child_id}: unreachable")
            return _CHILD_UNKNOWN
        if job_status is None:
            return _CHILD_GONE
        return _CHILD_DEAD if job_status == "dead" else _CHILD_LIVE


def _queued_observation(
    event: WorkflowJobEvent,
    repository: str,
    pool: str,
    *,
    child_id: str | None,
    outcome: str,
    at: float,
    source: str,
) -> Observation:
    """What the reconciler saw of a queued job, as the ledger merges it."""
    job = event.job
    return Observation(
        repository=repository,
        job_id=job.id,
        run_id=job.run_id,
        run_attempt=job.run_attempt,
        pool=pool,
        action="queued",
        conclusion=None,
        runner_id=None,
        runner_name=None,
        delivery="reconciler",
        child_id=child_id,
        dispatch_outcome=outcome,
        at=at,
        created_at=job.created_at.timestamp() if job.created_at else None,
        source=source,
        missing_fields=job.missing,
    )


async def record_ignored(
    event: WorkflowJobEvent, repository: str, pool: str, code: str, run: _Run
) -> None:
    """Note in the ledger that the job was not dispatched for ``code``, unless it says so
    already: the job stays queued and every run finds it again, and KV writes are scarce."""
    job = event.job
    outcome = f"not dispatched: {code}"
    key = ledger_key(repository, job.id)
    ledger = run.ports.ledger
    seen = _queued_observation(
        event,
        repository,
        pool,
        child_id=None,
        outcome=outcome,
        at=run.now.timestamp(),
        source="reconciler",
    )
    with contextlib.suppress(LedgerUnavailable):
        stored = await ledger.get(key)
        existing = LedgerRecord.from_json(stored) if stored else None
        if existing is not None and existing.dispatch_outcome == outcome:
            return
        record = merge(existing, seen)
        await ledger.put(key, record.to_json(), LEDGER_TTL_SECONDS, record.summary())


async def _load_json(ledger: LedgerStore, key: str) -> dict[str, Any]:
    try:
        text = await ledger.get(key)
        document = json.loads(text) if text else {}
    except (LedgerUnavailable, ValueError):
        return {}  # without the cache the run only costs more, it still works
    return document if isinstance(document, dict) else {}


async def _store_json(ledger: LedgerStore, key: str, document: Mapping[str, Any]) -> None:
    # Without it the next run sends an unconditional request instead: costlier, still correct.
    with contextlib.suppress(LedgerUnavailable):
        await ledger.put(key, json.dumps(document, separators=(",", ":")), STATE_TTL_SECONDS)


async def reconcile(
    settings: Settings,
    github: GitHubReadSettings,
    ports: Ports,
    transport: HeaderTransport,
    now: datetime,
    *,
    slot: int = 0,
) -> ReconcileReport:
    """One reconciler run over the served repositories, in the order :func:`rotation_order`
    gives run ``slot`` (from the Cron Trigger's scheduled time, :func:`run_slot`; the default,
    0, starts at the first repository)."""
    run = _Run(settings, github, ports, transport, now)
    report = run.report
    report.slot = slot
    repositories = sorted(settings.routing.repositories)
    # Each repository costs at least its two runs lists.
    per_run = max(1, github.request_budget // len(RUN_STATUSES))
    order = rotation_order(repositories, report.slot, per_run)
    for repository in order:
        if not run.can_spend():
            break
        report.repositories.append(repository)
        try:
            await run.repository(repository)
        except GitHubRateLimited as error:
            report.stopped = "rate_limited"
            report.errors.append(f"{repository}: {error}")
        except GitHubCredentialRefused as error:
            report.stopped = "credentials"
            report.errors.append(f"{repository}: {error}")
        except GitHubError as error:
            report.errors.append(f"{repository}: {error}")
        except (TimeoutError, TransportError, OSError) as error:
            kind = "timed out" if isinstance(error, TimeoutError) else "connection failed"
            report.errors.append(f"{repository}: GitHub unreachable: {kind}")
    return report
