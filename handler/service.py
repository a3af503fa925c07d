"""One delivery in, one answer out: the Worker's whole behaviour, behind two small ports.

``handle(request, settings, ports, now)`` takes the method, path, headers and raw body of an
HTTP request and returns a :class:`Reply` (status, JSON document, one structured log record). It
verifies, parses, decides, dispatches through ``ports.transport`` and records through
``ports.ledger``; the Worker entry (``entry.py``) and the CPython server (``local_server.py``) only
translate their request and response types and supply the ports. The outbound dispatch has a
per-attempt timeout well inside GitHub's 10 s, and one retry on a connection error, a timeout or
a 5xx; Nomad's idempotency token makes the retry safe.

``GET /status`` answers per-pool counts from the ledger (:mod:`handler.status`) to a caller
presenting ``Authorization: Bearer <STATUS_TOKEN>``, and 401 to anyone else.

Before a job of a repository whose fork policy is ``refuse`` is dispatched, its run is looked up
(:mod:`handler.forks`, ``GITHUB_READ_TOKEN`` or a GitHub App's installation token): a run from
a fork, or one whose head repository cannot be told, is ignored with its reason code; a failed
lookup dispatches nothing now (the reconciler tries again later). Never dispatched blind.

Statuses: 202 dispatched (or already dispatched, or deferred at the pool's or the repository's
cap or for a failed run lookup: the reconciler dispatches it later), 200 ignored (with a reason)
or ping/health/status, 400 malformed, 401 bad signature (or no status token), 404 unknown path,
405 wrong method, 413 body over 1 MiB, 502 Nomad (or Access) refused the dispatch, 503 Nomad
unreachable. No secret is ever put in a reply or a log record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, Protocol

from handler import contract, deferred, forks
from handler.contract import (
    FORK_POLICY_REFUSE,
    REPOSITORY_PATTERN,
    WEBHOOK_PATH_PREFIX,
    PoolRoute,
    Routing,
)
from handler.decide import STALE_AFTER, Dispatch, Ignore, decide
from handler.events import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    OtherEvent,
    PayloadError,
    Ping,
    WorkflowJobEvent,
    parse_event,
)
from handler.ledger import (
    DEFERRED_OUTCOME,
    DISPATCH_UNKNOWN_OUTCOME,
    JOB_KEY_PREFIX,
    LEDGER_TTL_SECONDS,
    RECORDED_OUTCOME,
    LedgerRecord,
    Observation,
    has_started,
    ledger_key,
    merge,
    record_changed,
    replays_a_started_job,
    waits_for_a_slot,
)
from handler.metrics import CONTENT_TYPE as METRICS_TYPE
from handler.metrics import render_metrics
from handler.nomad import (
    DispatchAccepted,
    HttpRequest,
    NomadCredentials,
    NomadError,
    allocation_of_runner,
    allocation_request,
    dispatch_request,
    interpret_allocation,
    interpret_children_response,
    interpret_dispatch_response,
    interpret_job_children,
    interpret_job_status,
    interpret_live_children,
    interpret_summary_response,
    job_children_request,
    job_request,
    live_children_request,
    repository_children_request,
    summary_request,
)
from handler.signature import SIGNATURE_HEADER, SignatureError, verify_signature
from handler.status import summarize

MAX_BODY_BYTES: Final = 1024 * 1024
HEALTH_PATH: Final = "/healthz"
STATUS_PATH: Final = "/status"
# The same figures as /status, for a Prometheus scrape, behind the same token.
METRICS_PATH: Final = "/metrics"
# KV's maximum keys per list call (and its default).
LEDGER_PAGE_KEYS: Final = 1000
# Status reads at most this many KV list pages (1000 keys each): one call per 1000 jobs.
STATUS_MAX_PAGES: Final = 20
# Ledger records one /status or /metrics answer summarizes at most, per Workers plan: past it
# the answer says ``complete: false``. In the Workers runtime (Pyodide) each record costs about
# 60 us of the handler's own CPU (bench/cpu_budget.py), on top of an answer's floor of 5-8 ms
# (the entry, each pool's Nomad read, the document); so the Free plan's 10 ms per invocation
# leaves room for about 50. A paid plan reads up to 20 pages.
STATUS_MAX_RECORDS: Final[Mapping[str, int]] = MappingProxyType(
    {"free": 50, "paid": STATUS_MAX_PAGES * LEDGER_PAGE_KEYS}
)
# GitHub gives up after 10 s. Two attempts of at most 4 s each, the second only started while
# there is time for it, keep the answer inside that window.
ATTEMPT_TIMEOUT_SECONDS: Final = 4.0
RETRY_WITHIN_SECONDS: Final = 4.5
_MAX_LOGGED_TEXT: Final = 100
# Ignore code of a queued delivery for a job the ledger has at in_progress or later.
ALREADY_STARTED: Final = "already_started"
STALE_AFTER_SECONDS: Final = STALE_AFTER.total_seconds()


class ConfigurationError(ValueError):
    """A binding or environment variable is missing or malformed; the message names it."""


class TransportError(Exception):
    """The outbound request never got an HTTP answer (refused, reset, DNS, TLS...)."""


class LedgerUnavailable(Exception):
    """The ledger store failed; the delivery is still answered, the log says so."""


class Transport(Protocol):
    async def send(self, request: HttpRequest) -> tuple[int, bytes]:
        """Send ``request``; return (status, body) or raise :class:`TransportError`."""
        ...


class LedgerStore(Protocol):
    """Workers KV as the core uses it. Every method raises :class:`LedgerUnavailable` on failure."""

    async def get(self, key: str) -> str | None: ...

    async def put(
        self, key: str, value: str, ttl_seconds: int, metadata: str | None = None
    ) -> None:
        """Store ``value``; ``metadata`` (a short JSON text) comes back from :meth:`list`."""
        ...

    async def list(
        self, prefix: str, cursor: str | None, limit: int = LEDGER_PAGE_KEYS
    ) -> LedgerPage:
        """One page (up to ``limit`` keys; 1000, KV's maximum, by default) of keys under
        ``prefix``, with metadata."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""
        ...


@dataclass(frozen=True)
class LedgerPage:
    entries: tuple[tuple[str, str | None], ...]  # (key, metadata)
    cursor: str | None  # None: this was the last page


@dataclass
class StatusCache:
    """The last ``/status`` document, reused for ``seconds``.

    Each fresh answer costs KV list operations (a daily quota on the Free plan). An adapter
    keeps one of these for the life of its process: the Worker keeps one per isolate, so N
    isolates answering /status may each list KV once per window; the bearer token is what
    keeps strangers from polling it at all.
    """

    seconds: float = 30.0
    computed_at: float | None = None
    document: dict[str, Any] | None = None

    def fresh(self, now: float) -> dict[str, Any] | None:
        if self.document is None or self.computed_at is None:
            return None
        return self.document if now - self.computed_at < self.seconds else None

    def keep(self, now: float, document: dict[str, Any]) -> None:
        self.computed_at, self.document = now, document


@dataclass(frozen=True)
class Ports:
    transport: Transport
    ledger: LedgerStore
    monotonic: Callable[[], float]
    # Where work may continue after the answer (the Worker's ctx.waitUntil). When given, a
    # delivery's ledger write goes there, off GitHub's wait: it receives the delivery id and
    # the write, whose outcome ("written", "unchanged" or "failed: ...") the adapter logs when
    # it failed.
    defer: Callable[[str | None, Coroutine[Any, Any, str]], None] | None = None
    # Where /status answers are reused from; None computes every answer afresh.
    status_cache: StatusCache | None = None
    # Fork-check verdicts kept per run (the Worker: per isolate); None keeps none.
    run_origins: forks.RunOriginCache | None = None
    # The GitHub read credential's hourly quota for /status (handler.github_auth); None: not
    # shown.
    github_rate_limit: Callable[[], Awaitable[dict[str, Any]]] | None = None


@dataclass(frozen=True)
class Settings:
    """Everything the Worker is configured with: its bindings, parsed."""

    routing: Routing
    nomad_addr: str
    credentials: NomadCredentials
    webhook_secret_key: str = field(repr=False)
    # GITHUB_API_URL + GITHUB_READ_TOKEN, for the fork check; None when not bound.
    github_read: forks.GitHubRead | None = None
    # What GET /status requires as "Authorization: Bearer ..."; None: /status answers 401 to all.
    status_token: str | None = field(default=None, repr=False)
    # The Workers plan ([reconcile] plan): bounds the work a freed slot may do per invocation.
    plan: str = contract.DEFAULT_WORKERS_PLAN


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    path: str  # URL path only, no query string
    headers: Mapping[str, str]  # keys lower-cased
    # None when the adapter did not read a body whose declared length is over the limit.
    body: bytes | None


@dataclass(frozen=True)
class Reply:
    status: int
    document: Mapping[str, Any]
    log: Mapping[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    # When set, the body is this text (``GET /metrics``) instead of ``document`` as JSON.
    text: str | None = None
    content_type: str = "application/json"


@functools.lru_cache(maxsize=4)
def _routing_from_text(text: str) -> Routing:
    # The ROUTING binding is the same string for the life of an isolate: parse it once.
    return Routing.from_json(text)


def settings_from_bindings(lookup: Callable[[str], str | None]) -> Settings:
    """Settings from the Worker's bindings (or the same names in the environment)."""

    def required(name: str) -> str:
        value = lookup(name)
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(f"binding {name}: missing or empty")
        return value.strip()

    try:
        routing = _routing_from_text(required(contract.ROUTING_BINDING))
    except contract.RoutingError as error:
        raise ConfigurationError(f"binding {contract.ROUTING_BINDING}: {error}") from None
    nomad_addr = required(contract.NOMAD_ADDR_BINDING)
    if not nomad_addr.startswith(("https://", "http://")):
        raise ConfigurationError(f"binding {contract.NOMAD_ADDR_BINDING}: expected an http(s) URL")
    return Settings(
        routing=routing,
        nomad_addr=nomad_addr,
        credentials=NomadCredentials(
            nomad_token=required(contract.NOMAD_TOKEN_BINDING),
            access_client_id=required(contract.ACCESS_CLIENT_ID_BINDING),
            access_client_secret=required(contract.ACCESS_CLIENT_SECRET_BINDING),
        ),
        webhook_secret_key=required(contract.WEBHOOK_SECRET_KEY_BINDING),
        github_read=forks.github_read_from_bindings(lookup),
        status_token=_optional(lookup(contract.STATUS_TOKEN_BINDING)),
        # The reconciler refuses a malformed value, naming the binding; here it means "free".
        plan=(
            plan
            if (plan := _optional(lookup(contract.RECONCILE_PLAN_BINDING)))
            in contract.WORKERS_PLANS
            else contract.DEFAULT_WORKERS_PLAN
        ),
    )


def _optional(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def status_authorized(settings: Settings, headers: Mapping[str, str]) -> bool:
    """True when ``headers`` carry ``Authorization: Bearer <STATUS_TOKEN>`` (constant time).

    No configured token authorizes nobody: a deployment without the binding keeps /status
    closed rather than open.
    """
    expected = settings.status_token
    scheme, _, presented = headers.get("authorization", "").strip().partition(" ")
    if expected is None or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), expected.encode())


def declared_too_large(headers: Mapping[str, str]) -> bool:
    """True when Content-Length announces more than the limit: adapters then skip the read."""
    raw = headers.get("content-length", "").strip()
    # ASCII digits only: str.isdigit() and int() also take other scripts' digits.
    return raw.isascii() and raw.isdigit() and int(raw) > MAX_BODY_BYTES


def _loggable(value: str | None) -> str | None:
    # Header values come from the caller: keep them short in logs. JSON encoding escapes the rest.
    return None if value is None else value[:_MAX_LOGGED_TEXT]


def _repository_from_path(path: str) -> str | None:
    if not path.startswith(WEBHOOK_PATH_PREFIX):
        return None
    repository = path[len(WEBHOOK_PATH_PREFIX) :]
    return repository.lower() if REPOSITORY_PATTERN.match(repository) else None


class _Delivery:
    """Collects the log record of one delivery while it is handled."""

    def __init__(self, request: IncomingRequest, ports: Ports) -> None:
        self._ports = ports
        self._started = ports.monotonic()
        self.log: dict[str, Any] = {
            "msg": "delivery",
            "method": _loggable(request.method),
            "path": _loggable(request.path),
            "delivery": _loggable(request.headers.get(DELIVERY_HEADER)),
            "github_event": _loggable(request.headers.get(EVENT_HEADER)),
        }

    def elapsed(self) -> float:
        return self._ports.monotonic() - self._started

    def reply(
        self,
        status: int,
        outcome: str,
        reason: str,
        *,
        extra: Mapping[str, Any] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Reply:
        document: dict[str, Any] = {"outcome": outcome, "reason": reason}
        if extra:
            document.update(extra)
        self.log.update(
            status=status,
            decision=outcome,
            reason=reason,
            latency_ms=round(self.elapsed() * 1000, 3),
        )
        return Reply(status=status, document=document, log=dict(self.log), headers=headers)


async def handle(
    request: IncomingRequest, settings: Settings, ports: Ports, now: datetime
) -> Reply:
    """Answer one HTTP request to the Worker (see the module docstring for the statuses)."""
    delivery = _Delivery(request, ports)
    method = request.method.upper()
    if request.path == HEALTH_PATH:
        if method not in ("GET", "HEAD"):
            return delivery.reply(405, "rejected", "use GET", headers=(("Allow", "GET, HEAD"),))
        return delivery.reply(200, "healthy", "ok")
    if request.path in (STATUS_PATH, METRICS_PATH):
        if method != "GET":
            return delivery.reply(405, "rejected", "use GET", headers=(("Allow", "GET"),))
        # Checked before the cache: a cached answer is as private as a fresh one.
        if not status_authorized(settings, request.headers):
            reason = f"GET {request.path} needs Authorization: Bearer <STATUS_TOKEN>"
            challenge = (("WWW-Authenticate", 'Bearer realm="status"'),)
            return delivery.reply(401, "rejected", reason, headers=challenge)
        cache = ports.status_cache
        document = cache.fresh(ports.monotonic()) if cache is not None else None
        if document is None:
            try:
                recorded_jobs: set[int] = set()
                document = await ledger_status(
                    ports.ledger,
                    settings.routing,
                    STATUS_MAX_RECORDS.get(settings.plan),
                    job_ids=recorded_jobs,
                )
                document = await with_unrecorded_runners(document, recorded_jobs, settings, ports)
            except LedgerUnavailable as error:
                reason = f"ledger unavailable: {_loggable(str(error))}"
                return delivery.reply(503, "failed", reason)
            if cache is not None:
                cache.keep(ports.monotonic(), document)
        if request.path == METRICS_PATH:
            # Ledger and Nomad figures only (a KV list per 1,000 jobs and a Nomad read per pool,
            # once per cache window): a scrape every few seconds must not cost GitHub requests.
            answer = delivery.reply(200, "metrics", "per-pool figures in Prometheus text format")
            return replace(
                answer, document={}, text=render_metrics(document), content_type=METRICS_TYPE
            )
        if ports.github_rate_limit is not None:
            # Beside the cached counts, not in them: it is the credential's own reading.
            document = {**document, "github_rate_limit": await ports.github_rate_limit()}
        return delivery.reply(200, "status", "per-pool counts from the ledger", extra=document)
    repository = _repository_from_path(request.path)
    if repository is None:
        return delivery.reply(404, "rejected", "not a webhook path: /webhook/{owner}/{repo}")
    delivery.log["repository"] = repository
    if method != "POST":
        return delivery.reply(405, "rejected", "webhooks are POSTed", headers=(("Allow", "POST"),))
    if request.body is None or len(request.body) > MAX_BODY_BYTES:
        return delivery.reply(413, "rejected", f"body larger than {MAX_BODY_BYTES} bytes")
    body = request.body
    secret = contract.webhook_secret_for(settings.webhook_secret_key, repository)
    try:
        verify_signature(secret, body, request.headers.get(SIGNATURE_HEADER))
    except SignatureError as error:
        return delivery.reply(401, "rejected", str(error))
    event_name = request.headers.get(EVENT_HEADER, "").strip()
    if not event_name:
        return delivery.reply(400, "rejected", "missing X-GitHub-Event header")
    delivery_id = request.headers.get(DELIVERY_HEADER, "").strip()
    if not delivery_id:
        return delivery.reply(400, "rejected", "missing X-GitHub-Delivery header")
    try:
        event = parse_event(event_name, body)
    except PayloadError as error:
        return delivery.reply(400, "rejected", str(error))
    if isinstance(event, Ping):
        return delivery.reply(200, "pong", "ping acknowledged", extra={"hook_id": event.hook_id})
    if isinstance(event, OtherEvent):
        return delivery.reply(200, "ignored", "only workflow_job events are acted on")
    return await _handle_workflow_job(
        event, repository, delivery_id, settings, ports, now, delivery
    )


async def _handle_workflow_job(
    event: WorkflowJobEvent,
    repository: str,
    delivery_id: str,
    settings: Settings,
    ports: Ports,
    now: datetime,
    delivery: _Delivery,
) -> Reply:
    job = event.job
    delivery.log.update(action=_loggable(event.action), job_id=job.id, run_id=job.run_id)
    if job.missing:
        delivery.log["missing"] = list(job.missing)
    if event.repository.lower() != repository:
        return delivery.reply(
            400, "rejected", "repository.full_name does not match the webhook path"
        )
    decision = decide(event, settings.routing, now)
    # Before the fork check: a replay then costs one KV read, not a GitHub request.
    stored = (
        await _stored_record(ports.ledger, repository, job.id)
        if isinstance(decision, Dispatch)
        else _UNREAD
    )
    if (
        isinstance(decision, Dispatch)
        and isinstance(stored, LedgerRecord)
        and replays_a_started_job(stored)
    ):
        # A replay of a job a runner already took (or that ended): once Nomad has collected the
        # old child, its token would start a new runner. Nothing new is learned: no write.
        delivery.log.update(pool=decision.pool.name, code=ALREADY_STARTED)
        reason = "the ledger has this job in progress or completed; a queued delivery is a replay"
        return delivery.reply(
            200, "ignored", reason, extra={"code": ALREADY_STARTED, "pool": decision.pool.name}
        )
    if (
        isinstance(decision, Dispatch)
        and settings.routing.fork_policy(repository) == FORK_POLICY_REFUSE
    ):
        decision = await _fork_check(decision, event, repository, settings, ports, delivery)
    observation = functools.partial(
        Observation,
        repository=repository,
        job_id=job.id,
        run_id=job.run_id,
        run_attempt=job.run_attempt,
        action=event.action,
        conclusion=job.conclusion,
        runner_id=job.runner_id,
        runner_name=job.runner_name,
        delivery=delivery_id,
        at=now.timestamp(),
        created_at=job.created_at.timestamp() if job.created_at else None,
        missing_fields=job.missing,
        # A queued delivery's started_at is its queued moment; only a runner's start counts.
        started_at=(
            job.started_at.timestamp()
            if job.started_at and event.action in ("in_progress", "completed")
            else None
        ),
    )
    if isinstance(decision, Ignore):
        delivery.log.update(pool=decision.pool, code=decision.code)
        if decision.pool is not None:
            seen = observation(
                pool=decision.pool,
                child_id=None,
                dispatch_outcome=f"not dispatched: {decision.code}",
            )
            if event.action == "completed" and job.runner_id:
                # A runner finished a job of this pool: its slot goes to the oldest deferred job.
                await _record(seen, ports, delivery, then_fill=(settings, now))
            else:
                await _record(seen, ports, delivery, learn_from=settings)
        extra = {"code": decision.code, "pool": decision.pool}
        if decision.code == forks.LOOKUP_FAILED_CODE:
            # Not a verdict: the job stays queued and the reconciler tries again, as at the cap.
            return delivery.reply(202, "deferred", decision.reason, extra=extra)
        return delivery.reply(200, "ignored", decision.reason, extra=extra)
    return await _dispatch(decision, event, settings, ports, delivery, observation, stored)


async def _fork_check(
    decision: Dispatch,
    event: WorkflowJobEvent,
    repository: str,
    settings: Settings,
    ports: Ports,
    delivery: _Delivery,
) -> Dispatch | Ignore:
    """``decision`` if the job's run is the repository's own, else why it gets no runner.

    One ``GET .../actions/runs/{run_id}`` unless ``ports.run_origins`` knows the run already;
    any failure (no read token, network, timeout, 403, 404, 5xx, a rate limit) keeps the job
    queued for the reconciler instead of dispatching it unverified.
    """
    run_id = event.job.run_id
    cache = ports.run_origins
    origin = cache.get(repository, run_id) if cache is not None else None
    if origin is None:
        try:
            # As GitHub spells it (the path is lower-cased); GitHub matches names in any case.
            origin = await lookup_run_origin(settings.github_read, ports, event.repository, run_id)
        except forks.RunLookupError as error:
            delivery.log["run_origin"] = "lookup failed"
            reason = (
                f"not dispatched now: the run could not be looked up ({_loggable(error.reason)}); "
                "the reconciler tries again"
            )
            return Ignore(reason, forks.LOOKUP_FAILED_CODE, decision.pool.name)
        if cache is not None:
            cache.keep(repository, run_id, origin)
    delivery.log["run_origin"] = origin
    code = forks.code_for(origin)
    if code is None:
        return decision
    return Ignore(forks.reason_for(code), code, decision.pool.name)


async def lookup_run_origin(
    github: forks.GitHubRead | None, ports: Ports, repository: str, run_id: int
) -> str:
    """One run lookup through ``ports.transport``, within :data:`forks.LOOKUP_TIMEOUT_SECONDS`;
    :class:`forks.RunLookupError` for every way it can fail."""
    if github is None:
        raise forks.RunLookupError(
            f"no {contract.GITHUB_READ_TOKEN_BINDING} / {contract.GITHUB_API_URL_BINDING} binding"
        )
    request = forks.run_request(github, repository, run_id)
    try:
        status, body = await asyncio.wait_for(
            ports.transport.send(request), forks.LOOKUP_TIMEOUT_SECONDS
        )
    except TimeoutError:
        raise forks.RunLookupError("GitHub timed out") from None
    except (TransportError, OSError):
        raise forks.RunLookupError("GitHub unreachable") from None
    return forks.interpret_run(status, body, repository)


# What _stored_record answers when it could not tell (KV failed) or was not asked.
_UNREAD: Final = "unread"
# ... and when it read a value that is no record of this version (it will be replaced).
_UNPARSED: Final = "unparsed"


async def _stored_record(
    ledger: LedgerStore, repository: str, job_id: int
) -> LedgerRecord | str | None:
    """The job's ledger record (one KV read): None when there is none, ``_UNPARSED`` for a value
    that is not a record, ``_UNREAD`` when KV failed.

    The caller refuses a replay of a started job with it
    (:func:`handler.ledger.replays_a_started_job`), and leaves a job with no record unwritten
    when its dispatch started or found a child (:func:`_worth_recording`). An unreadable ledger
    says nothing: the dispatch goes ahead, guarded by the idempotency token as before.
    """
    try:
        text = await ledger.get(ledger_key(repository, job_id))
    except LedgerUnavailable:
        return _UNREAD
    if not text:
        return None
    return LedgerRecord.from_json(text) or _UNPARSED


def _worth_recording(seen: Observation, stored: LedgerRecord | str | None) -> bool:
    """False for a dispatch that started or found a child of a job the ledger has no record of,
    from a delivery that lacked no optional field.

    Nomad is then the record: the child's id names the job and its dispatch second, and the
    job's next delivery (in_progress, or completed when it was cancelled) reads it from there
    (:func:`_learned_dispatch`) into the one write that delivery makes anyway. A job queued and
    cancelled thus costs one KV write, not two, and replays of its queued delivery none. A job
    the ledger already has (deferred, failed, or a queued delivery arriving after a later one)
    is written as before, so its record stays true, and so is a delivery that lacked fields:
    the record is where ``missing_fields`` are kept.
    """
    started_or_found = seen.dispatch_outcome in ("dispatched", "already_dispatched")
    return not started_or_found or stored is not None or bool(seen.missing_fields)


async def _dispatch(
    decision: Dispatch,
    event: WorkflowJobEvent,
    settings: Settings,
    ports: Ports,
    delivery: _Delivery,
    observation: Callable[..., Observation],
    stored: LedgerRecord | str | None,
) -> Reply:
    pool = decision.pool
    delivery.log["pool"] = pool.name
    result = await dispatch_job(
        decision, settings, ports, id_prefix=f"gh{event.job.id}", started=delivery._started
    )
    delivery.log["attempts"] = result.attempts
    if result.nomad_status is not None:
        delivery.log["nomad_status"] = result.nomad_status
    if result.active is not None:
        delivery.log["active_runners"] = result.active
    if result.child_id is not None:
        delivery.log["nomad_child"] = result.child_id
    seen = observation(pool=pool.name, child_id=result.child_id, dispatch_outcome=result.outcome)
    if _worth_recording(seen, stored):
        # A job deferred at the cap with no record may be a redelivery of one Nomad already
        # runs a child for: the record then says so, as it would have had the dispatch written.
        await _record(seen, ports, delivery, learn_from=settings if stored is None else None)
    else:
        delivery.log["ledger"] = "not written: Nomad holds the dispatch"
    extra: dict[str, Any] = {"pool": pool.name}
    if result.child_id is not None:
        extra["nomad_job_id"] = result.child_id
    return delivery.reply(result.status, result.outcome, result.reason, extra=extra)


@dataclass(frozen=True)
class DispatchResult:
    """What one dispatch attempt sequence came to, for a webhook reply or the reconciler."""

    outcome: str  # dispatched | already_dispatched | deferred | failed
    status: int  # the HTTP status a webhook delivery is answered with
    reason: str
    child_id: str | None = None
    attempts: int = 0
    active: int | None = None  # the pool's pending + running children, when read
    nomad_status: int | None = None
    requests: int = 0  # requests sent to Nomad (summary reads and dispatches)
    # The repository's live children (all pools), when its own cap made them worth reading.
    repository_active: int | None = None


async def dispatch_job(
    decision: Dispatch,
    settings: Settings,
    ports: Ports,
    *,
    id_prefix: str,
    started: float,
    active: int | None = None,
    repository_active: int | None = None,
) -> DispatchResult:
    """Dispatch ``decision`` once, unless its pool or its repository is at its cap; the one path
    to Nomad.

    Each attempt first reads the pool's job summary (unless the caller passes ``active``, the
    count it already knows), then, when the routing gives the job's repository a cap of its own,
    that repository's live children (:func:`handler.nomad.repository_children_request`, unless
    the caller passes ``repository_active``), and then dispatches with the job id as idempotency
    token. At either cap nothing is dispatched: the outcome is ``deferred`` and the reconciler
    dispatches the job once a runner finishes. The repository's cap is what keeps one
    repository that queues (and cancels) jobs in a loop from holding the whole pool. A failed
    capacity read (either one) fails the attempt like a failed dispatch would:
    dispatching blind could exceed the cap (a one-GPU pool started twice), while refusing only
    delays the job until the next attempt or reconciler run. An attempt that fails with a
    connection error, a timeout or a 5xx is retried once if there is time (``started`` is the
    ``ports.monotonic()`` reading the caller's deadline counts from).
    """
    pool = decision.pool
    known_active = active
    outbound = dispatch_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        nomad_job=pool.nomad_job,
        meta=decision.meta,
        idempotency_token=decision.idempotency_token,
        credentials=settings.credentials,
        id_prefix=id_prefix,
    )
    summary = summary_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        nomad_job=pool.nomad_job,
        credentials=settings.credentials,
    )
    repository = decision.meta[contract.META_REPOSITORY]
    repository_cap = settings.routing.repository_cap(repository)
    repository_children = repository_children_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        repository=repository,
        limit=repository_cap or 1,
        credentials=settings.credentials,
    )
    statuses: list[int] = []
    sent = 0
    repository_count: int | None = repository_active

    async def attempt() -> tuple[int, DispatchAccepted | None]:
        nonlocal sent, repository_count
        count = known_active
        if count is None:
            sent += 1
            status, answer = await ports.transport.send(summary)
            statuses.append(status)
            count = interpret_summary_response(status, answer)
        if count >= pool.max_runners:
            return count, None
        if repository_cap is not None:
            if repository_count is None:
                sent += 1
                status, answer = await ports.transport.send(repository_children)
                statuses.append(status)
                repository_count = interpret_children_response(status, answer)
            if repository_count >= repository_cap:
                return count, None
        sent += 1
        status, answer = await ports.transport.send(outbound)
        statuses.append(status)
        return count, interpret_dispatch_response(status, answer)

    attempts = 0
    failure: tuple[int, str] | None = None  # (our status, reason)
    while True:
        attempts += 1
        retryable = False
        try:
            count, accepted = await asyncio.wait_for(attempt(), ATTEMPT_TIMEOUT_SECONDS)
            failure = None
        except NomadError as error:
            failure = (502, f"Nomad refused the dispatch ({error.status}): {error.reason}")
            retryable = error.retryable
        except (TimeoutError, TransportError, OSError) as error:
            kind = "timed out" if isinstance(error, TimeoutError) else "connection failed"
            failure = (503, f"Nomad unreachable: {kind}")
            retryable = True
        if failure is None or not retryable or attempts >= 2:
            break
        if ports.monotonic() - started > RETRY_WITHIN_SECONDS:
            break
    nomad_status = statuses[-1] if statuses else None
    if failure is not None:
        status, reason = failure
        return DispatchResult(
            "failed", status, reason, attempts=attempts, nomad_status=nomad_status, requests=sent
        )
    if accepted is None:
        if count >= pool.max_runners:
            full = f"pool '{pool.name}' is at its cap ({count} of {pool.max_runners} runners)"
        else:
            full = (
                f"repository '{repository}' is at its cap "
                f"({repository_count} of {repository_cap} runners)"
            )
        return DispatchResult(
            "deferred",
            202,
            f"{full}; the job stays queued and the reconciler dispatches it when one finishes",
            attempts=attempts,
            active=count,
            nomad_status=nomad_status,
            requests=sent,
            repository_active=repository_count,
        )
    outcome = "already_dispatched" if accepted.replay else "dispatched"
    reason = (
        "a runner was already dispatched for this job" if accepted.replay else "runner dispatched"
    )
    return DispatchResult(
        outcome,
        202,
        reason,
        child_id=accepted.child_id,
        attempts=attempts,
        active=count,
        nomad_status=nomad_status,
        requests=sent,
        repository_active=repository_count,
    )


async def _record(
    seen: Observation,
    ports: Ports,
    delivery: _Delivery,
    *,
    then_fill: tuple[Settings, datetime] | None = None,
    learn_from: Settings | None = None,
) -> None:
    """Record ``seen``; with ``then_fill`` (a completion), then give the freed slot away
    (:func:`record_completion`); with ``learn_from``, with the dispatch Nomad holds for the job
    when the ledger lacks it (:func:`_learned_dispatch`). After the answer when the adapter can
    (``ports.defer``)."""
    work: Coroutine[Any, Any, str]
    if then_fill is None:
        learn = (learn_from, ports) if learn_from is not None else None
        work = record_observation(seen, ports.ledger, learn_from=learn)
    else:
        work = record_completion(seen, then_fill[0], ports, then_fill[1])
    if ports.defer is None:
        delivery.log["ledger"] = await work
        return
    # The ledger is a record, not a lock: nothing in the answer depends on it being written.
    ports.defer(delivery.log.get("delivery"), work)
    delivery.log["ledger"] = "deferred"


async def record_observation(
    seen: Observation,
    ledger: LedgerStore,
    *,
    unless_child_recorded: bool = False,
    learn_from: tuple[Settings, Ports] | None = None,
    prior: Observation | None = None,
) -> str:
    """Merge ``seen`` into the job's ledger record; "written", "unchanged" (the merged record
    says nothing new, so nothing is written) or "failed: why" (never raises).

    With ``unless_child_recorded``, a record that already names ``seen.child_id`` is left as it
    is ("unchanged"): a replay then costs a KV read, not a write. With ``learn_from``, a
    delivery after ``queued`` for a job whose record names no child first asks Nomad for the
    job's children (:func:`_learned_dispatch`), and the same write records them; ``prior``
    (what the caller already learned of the job, e.g. from Nomad) is merged into a record that
    names no child before ``seen``. A record that
    turns ``deferred`` for the first time also gets its key in the pool's deferred index
    (:mod:`handler.deferred`): one more write, once per deferred job.
    """
    outcome, _, _ = await _merge_and_store(
        seen,
        ledger,
        unless_child_recorded=unless_child_recorded,
        learn_from=learn_from,
        prior=prior,
    )
    return outcome


async def _merge_and_store(
    seen: Observation,
    ledger: LedgerStore,
    *,
    unless_child_recorded: bool = False,
    learn_from: tuple[Settings, Ports] | None = None,
    prior: Observation | None = None,
) -> tuple[str, LedgerRecord | None, LedgerRecord | None]:
    """:func:`record_observation`'s work; also returns the record as it was before, and as it
    is after (None when nothing could be read)."""
    key = ledger_key(seen.repository, seen.job_id)
    existing: LedgerRecord | None = None
    try:
        stored = await ledger.get(key)
        existing = LedgerRecord.from_json(stored) if stored else None
        if unless_child_recorded and existing is not None and existing.child_id == seen.child_id:
            return "unchanged", existing, existing
        if prior is not None and (existing is None or existing.child_id is None):
            record = merge(merge(existing, prior), seen)
        else:
            record = merge(existing, seen)
        # A queued delivery's own dispatch is in ``seen`` (unless it was deferred at the cap);
        # a later delivery learns it from Nomad: only when it changes the record anyway (a
        # replay costs Nomad nothing), or when an earlier one could not read Nomad.
        unknown_child = existing is None or existing.child_id is None
        asks = seen.action != "queued" or seen.dispatch_outcome == DEFERRED_OUTCOME
        retry = existing is not None and existing.dispatch_outcome == DISPATCH_UNKNOWN_OUTCOME
        if (
            learn_from is not None
            and asks
            and unknown_child
            and (retry or record_changed(existing, record))
        ):
            dispatch = await _learned_dispatch(seen, *learn_from)
            if isinstance(dispatch, Observation):
                record = merge(merge(existing, dispatch), seen)
            elif dispatch == _UNREADABLE and _outcome_open(existing, seen):
                # Not knowing is a decision for the replay guard: a queued replay is refused.
                record = merge(existing, replace(seen, dispatch_outcome=DISPATCH_UNKNOWN_OUTCOME))
        # Read, merge, compare: a replay, or a known body under a new delivery id, changes
        # nothing but bookkeeping and costs no write (KV writes are the scarce quota).
        if not record_changed(existing, record):
            return "unchanged", existing, existing
        await ledger.put(key, record.to_json(), LEDGER_TTL_SECONDS, record.summary())
        waiting = waits_for_a_slot(record)
        if waiting != (existing is not None and waits_for_a_slot(existing)):
            # Into the pool's deferred index on its first deferral; out of it once a runner took
            # it, or it was cancelled: the index holds the jobs a freed slot may go to.
            entry = deferred.DeferredJob(
                pool=record.pool,
                repository=record.repository,
                job_id=record.job_id,
                run_id=record.run_id,
                created_at=record.created_at or record.first_seen,
            )
            if waiting:
                await ledger.put(entry.key(), "", deferred.INDEX_TTL_SECONDS, entry.metadata())
            else:
                await ledger.delete(entry.key())
    except LedgerUnavailable as error:
        return f"failed: {_loggable(str(error))}", existing, None
    return "written", existing, record


def _outcome_open(existing: LedgerRecord | None, seen: Observation) -> bool:
    """True when neither the record nor ``seen`` has decided the job's dispatch outcome."""
    return (existing is None or existing.dispatch_outcome in (None, RECORDED_OUTCOME)) and (
        seen.dispatch_outcome in (None, RECORDED_OUTCOME)
    )


async def _learned_dispatch(
    seen: Observation, settings: Settings, ports: Ports
) -> Observation | str | None:
    """The dispatch Nomad holds for ``seen``'s job, as the observation a recorded dispatch would
    have been: its newest child (where the reconciler's walk starts) dispatched at its oldest
    child's second (queued-to-dispatched counts from the first runner). None when Nomad has no
    child for the job (it never got a runner of its own, or Nomad collected it);
    ``_UNREADABLE`` when Nomad could not be read (the caller marks the record so, and the job's
    next delivery asks again)."""
    try:
        pool = settings.routing.pool(seen.pool)
    except KeyError:
        return None
    request = job_children_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        parent=pool.nomad_job,
        job_id=seen.job_id,
        credentials=settings.credentials,
    )
    try:
        status, body = await asyncio.wait_for(
            ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
        )
        children = interpret_job_children(status, body, pool.nomad_job, seen.job_id)
    except (NomadError, TimeoutError, TransportError, OSError):
        return _UNREADABLE
    if not children:
        return None
    return replace(
        seen,
        action="queued",
        conclusion=None,
        runner_id=None,
        runner_name=None,
        child_id=children[-1].child_id,
        dispatch_outcome="dispatched",
        at=children[0].dispatched_at,
        source="webhook",
        started_at=None,
    )


async def record_completion(
    seen: Observation, settings: Settings, ports: Ports, now: datetime
) -> str:
    """Record a ``completed`` delivery that names a runner, then, the first time the ledger sees
    the job complete, hand the freed slot to the pool's oldest deferred jobs
    (:func:`fill_freed_slots`); the outcome for the log ("written; filled: ...")."""
    outcome, before, after = await _merge_and_store(
        seen, ports.ledger, learn_from=(settings, ports)
    )
    if outcome != "written" or (before is not None and before.state == "completed"):
        # A replay (or a ledger that cannot be written): whoever wrote the completion first
        # gave its slot away; doing it again would hand one slot out twice.
        return outcome
    report = await fill_freed_slots(
        seen.pool,
        settings,
        ports,
        now,
        freed_runner=seen.runner_name,
        # The child dispatched for this job, recorded or just learned from Nomad.
        freed_child=after.child_id if after else None,
    )
    return f"{outcome}; filled: {report.describe()}"


@dataclass
class FillReport:
    """What one completion's freed slot came to; ``describe()`` is its log text."""

    listed: int = 0  # deferred jobs the pool's index listed
    own_slot: bool = False  # the completed job's child still counted, so counted as gone
    dispatched: int = 0
    already_dispatched: int = 0  # another completion (or the reconciler) got there first
    owed: int = 0  # of those dispatched: for jobs that started on another job's runner
    skipped: int = 0  # no runner owed: one is on its way, or the job was cancelled
    held: int = 0  # left in the queue: its repository at its cap, or GitHub did not answer
    operations: int = 0  # outbound requests and KV operations spent
    stopped: str | None = None  # full | budget | failed | index unavailable

    def describe(self) -> str:
        return (
            f"dispatched {self.dispatched} of {self.listed} deferred "
            f"(own slot {'yes' if self.own_slot else 'no'}, owed {self.owed}, "
            f"replays {self.already_dispatched}, "
            f"skipped {self.skipped}, held {self.held}, stopped {self.stopped or 'no'}, "
            f"{self.operations} operations)"
        )


async def fill_freed_slots(
    pool_name: str,
    settings: Settings,
    ports: Ports,
    now: datetime,
    *,
    freed_runner: str | None = None,
    freed_child: str | None = None,
) -> FillReport:
    """Dispatch the pool's oldest deferred jobs into the capacity a finished runner frees.

    GitHub sends ``completed`` the moment a job ends, while the runner's allocation still runs
    its deregister task, so Nomad counts that child for a few seconds more. The finished runner
    is found by its name (``freed_runner``: ours end with their allocation's id, whose ``GET
    /v1/allocation/{id}`` names its child), else, for a runner name that is not ours, by the
    child the ledger dispatched for the job (``freed_child``; GitHub may have given the job to
    another job's runner, so this is the weaker guess). While Nomad still counts that child, its
    slot is this completion's own: the first deferred job gets it whatever the pool's count says
    (two completions at once each fill their own slot, and neither can take the other's, which
    is still counted). Any further job goes only into capacity the pool's count shows free, read
    afresh before each one. Jobs come from the pool's deferred index (:mod:`handler.deferred`),
    oldest ``created_at`` first: the jobs no runner was dispatched for yet. Each is dispatched
    unless the ledger or GitHub (with ``GITHUB_READ_TOKEN``) says it needs no runner any more
    (cancelled before a runner took it): a job that already started, on a runner dispatched for
    another job, still gets its own, which serves that other job (:func:`_still_owed`). The job
    id stays the idempotency token, so a job another completion dispatched meanwhile is a replay
    at Nomad and takes no slot; a dispatch records the child, which takes the job out of the
    index. Bounded per plan by :data:`FILL_LIMITS` (operations, candidates); never raises.
    """
    report = FillReport()
    try:
        pool = settings.routing.pool(pool_name)
    except KeyError:
        return report
    ledger = ports.ledger
    own_slot = False
    allocation = allocation_of_runner(freed_runner)
    if allocation is not None:
        report.operations += 1
        own_slot = await _allocation_still_counted(allocation, pool.nomad_job, settings, ports)
    elif freed_child is not None:
        report.operations += 1
        own_slot = await _still_counted(freed_child, settings, ports)
    report.own_slot = own_slot
    try:
        report.operations += 1
        page = await ledger.list(deferred.pool_prefix(pool.name), None)
    except LedgerUnavailable:
        report.stopped = "index unavailable"
        return report
    waiting = [
        job
        for key, metadata in page.entries
        if (job := deferred.DeferredJob.from_entry(pool.name, key, metadata)) is not None
    ]
    report.listed = len(waiting)
    count: int | None = None  # the pool's count, read afresh after each dispatch
    budget, most = FILL_LIMITS.get(settings.plan, FILL_LIMITS[contract.DEFAULT_WORKERS_PLAN])
    # What tells this completion from others handled at the same moment (see _spread).
    seed = freed_runner or freed_child
    collisions = 0
    for _ in range(most):
        if not waiting:
            break
        job = waiting[0]
        # At most: the pool's summary (unless known), ledger read, GitHub, the repository's
        # children (with a cap of its own), two dispatch attempts, ledger read and write,
        # index delete.
        reserve = (
            (0 if own_slot or count is not None else 1)
            + 1
            + int(settings.github_read is not None)
            + int(settings.routing.repository_cap(job.repository) is not None)
            + 5
        )
        if report.operations + reserve > budget:
            report.stopped = "budget"
            break
        waiting.pop(0)
        if own_slot:
            active = pool.max_runners - 1  # the freed slot: one dispatch, whatever the count
        elif count is not None:
            active = count
        else:
            report.operations += 1
            try:
                status, body = await asyncio.wait_for(
                    ports.transport.send(
                        summary_request(
                            nomad_addr=settings.nomad_addr,
                            namespace=settings.routing.namespace,
                            nomad_job=pool.nomad_job,
                            credentials=settings.credentials,
                        )
                    ),
                    ATTEMPT_TIMEOUT_SECONDS,
                )
                active = interpret_summary_response(status, body)
            except (NomadError, TimeoutError, TransportError, OSError):
                report.stopped = "failed"
                break
            count = active
        if active >= pool.max_runners:
            report.stopped = "full"
            break
        verdict = await _still_owed(job, settings, ports, now, report)
        if verdict in ("gone", "served"):
            report.skipped += 1
            await _forget(job, ledger, report)
            if verdict == "served":  # another fill may be working down the same list
                collisions += 1
                waiting = _spread(waiting, pool.max_runners - 1, seed, collisions)
            continue
        if verdict == "held":
            report.held += 1
            continue
        # The job's own token, whether it still waits or already started on a runner dispatched
        # for another job (which this runner then serves): one runner per job, never two, and a
        # job another completion, the reconciler or a webhook served meanwhile is a replay.
        decision = Dispatch(
            pool=pool,
            meta={
                contract.META_REPOSITORY: job.repository,
                contract.META_JOB_ID: str(job.job_id),
                contract.META_RUN_ID: str(job.run_id),
                contract.META_POOL: pool.name,
            },
            idempotency_token=str(job.job_id),
        )
        result = await dispatch_job(
            decision,
            settings,
            ports,
            id_prefix=f"gh{job.job_id}",
            started=ports.monotonic(),
            active=active,
        )
        report.operations += result.requests
        if result.outcome == "failed":
            report.stopped = "failed"
            break
        if result.outcome == "deferred":  # its repository is at its own cap: the next one
            report.held += 1
            continue
        if result.outcome == "dispatched":
            report.dispatched += 1
            if verdict == "started":
                report.owed += 1
            own_slot = False  # spent; any further job needs capacity the count shows
            count = None
        else:
            report.already_dispatched += 1
            collisions += 1
            waiting = _spread(waiting, pool.max_runners - 1, seed, collisions)
        seen = Observation(
            repository=job.repository,
            job_id=job.job_id,
            run_id=job.run_id,
            run_attempt=None,
            pool=pool.name,
            action="queued",
            conclusion=None,
            runner_id=None,
            runner_name=None,
            delivery="completion",
            child_id=result.child_id,
            dispatch_outcome=result.outcome,
            at=now.timestamp(),
            created_at=job.created_at,
            source="completion",
        )
        # Recording the child takes the job out of the index (the merge's transition deletes its
        # key): no later completion spends a look on a job whose runner is on its way. That
        # runner may take another job; the job it leaves without one is then owed by whichever
        # listed job it took (it stays listed), or, if that one was never listed, left to the
        # reconciler, which replaces this job's child once it is dead.
        written = await record_observation(
            seen, ledger, unless_child_recorded=result.outcome == "already_dispatched"
        )
        report.operations += 3 if written == "written" else 1  # read; write, index delete
    return report


def _spread(
    waiting: list[deferred.DeferredJob], window: int, seed: str | None, collisions: int
) -> list[deferred.DeferredJob]:
    """``waiting`` with its first ``window`` jobs rotated by an offset drawn from ``seed``.

    Completions handled at the same moment (runners finishing together, each in its own
    isolate) list the same queue and go down it in the same order: each would meet, on every
    job, the one that got there first (a replay at Nomad, four operations for nothing) and
    fill few slots before its bounds end it. The first such meeting tells a completion it is
    not alone; from there each goes on from its own point within the next ``window`` jobs (one
    less than the pool's cap: at most that many runners can finish beside the one that got
    there first), so they part instead of meeting again. The order is relaxed only within the
    jobs those completions fill together; one that meets nobody keeps it oldest first, and two
    of a pool of two keep it too.
    """
    width = min(window, len(waiting))
    if seed is None or width < 2:
        return waiting
    digest = hashlib.sha256(f"{seed}:{collisions}".encode()).digest()
    offset = int.from_bytes(digest[:4], "big") % width
    return waiting[offset:width] + waiting[:offset] + waiting[width:]


# Per Workers plan: (operations, outbound requests and KV calls, one completion may spend filling
# its slot; deferred jobs it looks at). The Free plan's 10 ms of CPU per invocation binds first:
# each outbound request costs about 3 ms of CPU in the local runtime (README, Performance), so a
# completion there fills its own slot (18 operations: a dispatch, the checks before it, and a
# job or two found on its way) and leaves further capacity to the next completion or the
# reconciler. A paid plan looks at up
# to 16 jobs (a slot or two frees per completion; the rest is for jobs that turn out to need no
# runner any more, or whose runner is on its way) within 40 operations.
FILL_LIMITS: Final[Mapping[str, tuple[int, int]]] = {"free": (18, 4), "paid": (40, 16)}


async def _allocation_still_counted(
    allocation_id: str, parent: str, settings: Settings, ports: Ports
) -> bool:
    """True when the allocation belongs to a child of ``parent`` and still runs (its deregister
    task): Nomad counts that child; any doubt is False (no slot of its own)."""
    request = allocation_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        allocation_id=allocation_id,
        credentials=settings.credentials,
    )
    try:
        status, body = await asyncio.wait_for(
            ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
        )
        found = interpret_allocation(status, body)
    except (NomadError, TimeoutError, TransportError, OSError):
        return False
    if found is None:
        return False
    job_id, client_status = found
    return job_id.startswith(f"{parent}/dispatch-") and client_status in ("pending", "running")


_UNREADABLE: Final = "unreadable"


async def _child_status(child_id: str, settings: Settings, ports: Ports) -> str | None:
    """Nomad's status of a child (None: gone), or ``_UNREADABLE`` when it could not be read."""
    request = job_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        job_id=child_id,
        credentials=settings.credentials,
    )
    try:
        status, body = await asyncio.wait_for(
            ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
        )
        return interpret_job_status(status, body)
    except (NomadError, TimeoutError, TransportError, OSError):
        return _UNREADABLE


async def _still_counted(child_id: str, settings: Settings, ports: Ports) -> bool:
    """True when Nomad reports the child pending or running; any doubt is False (no slot)."""
    return await _child_status(child_id, settings, ports) in ("pending", "running")


async def _still_owed(
    job: deferred.DeferredJob, settings: Settings, ports: Ports, now: datetime, report: FillReport
) -> str:
    """The verdict on one listed job: "waiting" (still queued: dispatch for it), "started" (a
    runner dispatched for another job took it, so the pool owes that other job one: dispatch
    under this job's token), "served" (the ledger names its child: drop it from the index),
    "gone" (it needs no runner from us: drop it too) or "held" (it cannot be told now: leave
    it)."""
    if now.timestamp() - job.created_at > STALE_AFTER_SECONDS:
        return "gone"  # GitHub has cancelled it, or long since given its runner away
    report.operations += 1
    try:
        stored = await ports.ledger.get(ledger_key(job.repository, job.job_id))
    except LedgerUnavailable:
        stored = None
    record = LedgerRecord.from_json(stored) if stored else None
    if record is not None and record.child_id is not None:
        # A runner was dispatched for it: listed late (KV's list lags behind its delete, or
        # another completion got there a moment ago), or an entry from before the index held
        # only owed jobs.
        return "served"
    if record is not None and not waits_for_a_slot(record):
        return "gone"  # cancelled before a runner took it
    if record is not None and (
        record.state == "in_progress" or (has_started(record) and record.runner_name)
    ):
        # The ledger knows a runner took it: no need to ask GitHub. (A job the ledger has
        # completed with no runner named may be one of GitHub's artefacts, a `skipped` or
        # runner-less `completed` that took no runner: GitHub's runner_id tells.)
        return "started"
    if settings.github_read is None:
        return "waiting"  # nothing more to ask; a wrong guess: one idle runner
    report.operations += 1
    request = deferred.job_state_request(settings.github_read, job.repository, job.job_id)
    try:
        status, body = await asyncio.wait_for(
            ports.transport.send(request), forks.LOOKUP_TIMEOUT_SECONDS
        )
        state = deferred.interpret_job_state(status, body)
    except (deferred.JobLookupError, TimeoutError, TransportError, OSError):
        return "held"
    if not state.owes_a_runner():
        return "gone"
    # Started, though the ledger has not heard yet (its in_progress delivery is on its way).
    return "waiting" if state.status == "queued" else "started"


async def _forget(job: deferred.DeferredJob, ledger: LedgerStore, report: FillReport) -> None:
    report.operations += 1
    # On failure the entry expires, and the next look at it finds the job needs nothing.
    with contextlib.suppress(LedgerUnavailable):
        await ledger.delete(job.key())


async def ledger_status(
    ledger: LedgerStore,
    routing: Routing,
    max_records: int | None = None,
    *,
    job_ids: set[int] | None = None,
) -> dict[str, Any]:
    """:func:`handler.status.summarize` over the ledger's job keys, one list call per page, at
    most ``max_records`` of them (by default the Free plan's bound, the safe one): ``complete``
    is false when the ledger holds more, ``records_read`` says how many were summarized. The
    GitHub job ids of the keys summarized go into ``job_ids`` when given."""
    if max_records is None:
        max_records = STATUS_MAX_RECORDS[contract.DEFAULT_WORKERS_PLAN]
    summaries: list[str | None] = []
    cursor: str | None = None
    for _ in range(STATUS_MAX_PAGES):
        limit = min(LEDGER_PAGE_KEYS, max_records - len(summaries))
        if limit <= 0:
            break
        page = await ledger.list(JOB_KEY_PREFIX, cursor, limit)
        entries = page.entries[:limit]
        summaries.extend(metadata for _, metadata in entries)
        if job_ids is not None:
            job_ids.update(
                int(tail) for key, _ in entries if (tail := key.rpartition(":")[2]).isdigit()
            )
        cursor = page.cursor
        if cursor is None:
            break
    document = summarize(summaries, routing)
    document["complete"] = cursor is None
    document["records_read"] = len(summaries)
    document["window_seconds"] = LEDGER_TTL_SECONDS
    return document


def utc_now() -> datetime:
    return datetime.now(UTC)


async def with_unrecorded_runners(
    document: dict[str, Any], recorded_jobs: set[int], settings: Settings, ports: Ports
) -> dict[str, Any]:
    """``document`` (:func:`ledger_status`) with the runners dispatched for jobs the ledger has
    no record of yet, read from Nomad (one ``/v1/jobs/statuses`` call per pool, all at once).

    A queued delivery that dispatches writes no KV (:func:`_worth_recording`): until the job's
    next delivery, only Nomad knows its runner. Each pool's live children for jobs not in
    ``recorded_jobs`` are counted as ``runners_starting`` and added to ``jobs``, ``dispatched``
    and ``queued_not_running`` (their latencies wait for the record: the child's id has the
    dispatch second, not the job's ``created_at``). When Nomad cannot be read, or the ledger
    was not listed in full (``complete`` false: a recorded job could pass for a new one),
    ``runners_starting`` is None and ``nomad`` says why; the ledger's figures stand. A job
    whose only child is dead (its runner took another job, or failed) is not counted: the
    reconciler records it when it finds the job still queued.
    """
    pools: dict[str, Any] = document.get("pools", {})
    served = [pool for pool in settings.routing.pools if pool.name in pools]
    if not document.get("complete", True):
        for pool in served:
            pools[pool.name]["runners_starting"] = None
        return {**document, "nomad": "not read: the ledger was not listed in full"}

    async def live_jobs(pool: PoolRoute) -> list[int] | str:
        request = live_children_request(
            nomad_addr=settings.nomad_addr,
            namespace=settings.routing.namespace,
            parent=pool.nomad_job,
            limit=2 * pool.max_runners + 10,
            credentials=settings.credentials,
        )
        try:
            status, body = await asyncio.wait_for(
                ports.transport.send(request), ATTEMPT_TIMEOUT_SECONDS
            )
            return interpret_live_children(status, body, pool.nomad_job)
        except NomadError as error:
            return f"{pool.name}: {_loggable(str(error))}"
        except (TimeoutError, TransportError, OSError):
            return f"{pool.name}: unreachable"

    # Side by side: a Nomad that does not answer costs one timeout, not one per pool.
    answers = await asyncio.gather(*(live_jobs(pool) for pool in served))
    problems: list[str] = []
    for pool, answer in zip(served, answers, strict=True):
        counts = pools[pool.name]
        if isinstance(answer, str):
            problems.append(answer)
            counts["runners_starting"] = None
            continue
        starting = sum(1 for job_id in set(answer) if job_id not in recorded_jobs)
        counts["runners_starting"] = starting
        counts["jobs"] += starting
        counts["dispatched"] += starting
        counts["queued_not_running"] += starting
    return {**document, "nomad": "; ".join(problems) if problems else "ok"}
