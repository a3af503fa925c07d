"""Decide what one ``workflow_job`` delivery means: dispatch a runner, or ignore it with a reason.

``decide(event, routing, now)`` is pure. The rules, in order:

1. the repository must be one we serve (``Routing.repositories``);
2. the job must ask for a self-hosted runner (``self-hosted`` among its labels) and ALL its labels,
   compared case-insensitively, must be among one pool's labels, that pool being allowed for the
   repository. This is GitHub's own rule (a runner takes a job when it has every label the job
   asks for), so a dispatched runner can actually take the job. When several pools qualify, the
   pool with the FEWEST labels wins (the tightest fit, leaving richer pools for jobs that need
   them), ties broken by pool name, so the choice never depends on configuration order;
3. only ``queued`` dispatches; ``waiting``, ``in_progress``, ``completed`` and unknown actions of
   our jobs are acknowledged and recorded in the ledger, never dispatched;
4. a ``queued`` delivery whose job still has ``status: waiting`` (an environment awaiting
   approval) is ignored: GitHub sends ``queued`` again once it is approved, and dispatching now
   would spend the job's idempotency token on a runner that idles out before the approval. Only
   an explicit ``waiting`` counts: a delivery without a status (older GitHub Enterprise Server
   versions know no ``waiting``) is decided as queued;
5. a ``queued`` delivery for a job queued more than 24 h ago is ignored: GitHub cancels jobs that
   waited that long, so a redelivery of it must not start a runner. The age comes from
   ``created_at``, or from ``started_at`` (GitHub sets it to the same moment on a queued job)
   when a sender omits ``created_at``. With neither, the age is unknown and the job is
   dispatched: a user expects a queued job to get a runner, and the worst case, a redelivery
   of a job GitHub already cancelled, costs one runner that exits at its pool's idle timeout.

The idempotency token is the GitHub job id: one runner per job attempt (a re-run gets a new id).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from handler.contract import (
    META_JOB_ID,
    META_POOL,
    META_REPOSITORY,
    META_RUN_ID,
    PoolRoute,
    Routing,
)
from handler.events import WorkflowJobEvent

SELF_HOSTED: Final = "self-hosted"
STALE_AFTER: Final = timedelta(hours=24)


@dataclass(frozen=True)
class Ignore:
    """Acknowledge without dispatching. ``pool`` is set when the job is ours (ledger-worthy)."""

    reason: str
    code: str
    pool: str | None = None


@dataclass(frozen=True)
class Dispatch:
    """Dispatch one runner of ``pool`` for this job, once (Nomad idempotency token)."""

    pool: PoolRoute
    meta: Mapping[str, str]
    idempotency_token: str


Decision = Ignore | Dispatch


def choose_pool(labels: tuple[str, ...], routing: Routing, repository: str) -> PoolRoute | None:
    """The tightest-fitting pool allowed for ``repository`` that has every one of ``labels``."""
    wanted = frozenset(label.lower() for label in labels)
    if SELF_HOSTED not in wanted:
        return None
    allowed = routing.repositories.get(repository.lower(), ())
    candidates = [pool for pool in routing.pools if pool.name in allowed and wanted <= pool.labels]
    if not candidates:
        return None
    return min(candidates, key=lambda pool: (len(pool.labels), pool.name))


def decide(event: WorkflowJobEvent, routing: Routing, now: datetime) -> Decision:
    """Apply the module's rules to one parsed ``workflow_job`` delivery."""
    repository = event.repository.lower()
    if repository not in routing.repositories:
        return Ignore("repository is not served by this Worker", "repository_not_served")
    job = event.job
    if SELF_HOSTED not in {label.lower() for label in job.labels}:
        return Ignore("job does not ask for a self-hosted runner", "not_self_hosted")
    pool = choose_pool(job.labels, routing, repository)
    if pool is None:
        return Ignore(
            "no runner pool of this repository has all of the job's labels", "no_matching_pool"
        )
    if event.action != "queued":
        return Ignore(
            f"action '{event.action}' is recorded, never dispatched", "recorded", pool.name
        )
    if job.status == "waiting":
        return Ignore(
            "job is waiting for an environment approval; GitHub queues it again once approved",
            "awaiting_approval",
            pool.name,
        )
    queued_at = job.queued_at
    if queued_at is not None and now - queued_at > STALE_AFTER:
        return Ignore(
            "job was created more than 24 h ago; GitHub has cancelled it", "stale", pool.name
        )
    meta = {
        META_REPOSITORY: event.repository,
        META_JOB_ID: str(job.id),
        META_RUN_ID: str(job.run_id),
        META_POOL: pool.name,
    }
    return Dispatch(pool=pool, meta=meta, idempotency_token=str(job.id))
