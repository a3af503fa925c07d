"""The KV ledger: what happened to each GitHub job we own, for clean-up and status later.

One KV entry per GitHub job, key ``job:{owner/repo lower}:{job id}``, value a small JSON record
(see :class:`LedgerRecord`), written with an expiration TTL of :data:`LEDGER_TTL_SECONDS` (four
days: longer than GitHub's 3-day redelivery window and the 24 h queue limit, so every delivery
that can still arrive finds its record). Only jobs that match a pool are recorded: GitHub-hosted
jobs would spend KV's write quota on work that is not ours. The dispatch of a job with no record
yet is not written at all: the child's id in Nomad records it, and the job's next delivery
copies it in (``service._worth_recording``, ``service._learned_dispatch``).

KV is eventually consistent and allows about one write per second per key, so the ledger is a
record, never a lock: exactly-once rests on Nomad's idempotency token. :func:`merge` is written
for out-of-order deliveries: a record never moves back to an earlier state, and a child id once
known is kept (until the reconciler replaces a dead one with a new child). A job that
completes with ``conclusion: cancelled`` and no runner is marked ``cancelled_before_assignment``:
its dispatched runner (if any) has no job of its own left and ends at its pool's idle timeout,
which ``GET /status`` counts as cleaned up. A record also names the optional payload fields some
delivery of the job lacked (``missing_fields``).

Every KV write costs quota (1,000 a day on the Free plan), and a signed delivery can be replayed
at will (its signature covers no timestamp, and the delivery id header is not signed at all). So
:func:`merge` moves every field one way only (state and last action forward, an outcome never
replaced by a mere "recorded", missing fields a union), which makes a second merge of any
delivery already merged a no-op; :func:`record_changed` tells the caller whether the merged
record differs from the stored one in anything but its bookkeeping (``updated_at``,
``deliveries``), and only then is it worth a write. Standard library only, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

LEDGER_TTL_SECONDS: Final = 4 * 24 * 3600
LEDGER_VERSION: Final = 1
# States in the order a job goes through them; merge never moves a record backwards.
STATES: Final[tuple[str, ...]] = ("queued", "waiting", "in_progress", "completed")
_MAX_DELIVERIES: Final = 8
_MAX_MISSING: Final = 16


JOB_KEY_PREFIX: Final = "job:"


def ledger_key(repository: str, job_id: int) -> str:
    return f"{JOB_KEY_PREFIX}{repository.lower()}:{job_id}"


@dataclass(frozen=True)
class LedgerRecord:
    repository: str
    job_id: int
    run_id: int
    run_attempt: int | None  # None: no delivery carried one
    pool: str
    state: str  # one of STATES, or an unknown action GitHub may add
    last_action: str  # the latest action seen in the job's order (never moves back either)
    conclusion: str | None
    runner_name: str | None
    child_id: str | None  # the Nomad child dispatched for this job, once known
    dispatch_outcome: str | None  # "dispatched", "replayed", "failed", or why it was not
    cancelled_before_assignment: bool
    first_seen: float  # unix seconds
    updated_at: float
    # The last few X-GitHub-Delivery ids that changed the record, newest last.
    deliveries: tuple[str, ...]
    # Added for status and recovery; records written before them read back with the defaults.
    created_at: float | None = None  # the GitHub job's created_at (unix seconds)
    dispatched_at: float | None = None  # when a NEW child was dispatched (not a replay)
    reconciled: bool = False  # that dispatch came from the reconciler, not from a webhook
    # Optional payload fields some delivery of this job lacked or carried malformed (names only,
    # from handler.events.OPTIONAL_FIELDS, so at most a handful).
    missing_fields: tuple[str, ...] = ()
    # Time to runner: when a runner took the job (the ``started_at`` of its in_progress or
    # completed delivery, GitHub's clock), and when it was first deferred at a cap.
    started_at: float | None = None
    deferred_at: float | None = None

    def to_json(self) -> str:
        document = asdict(self)
        document["v"] = LEDGER_VERSION
        document["deliveries"] = list(self.deliveries)
        document["missing_fields"] = list(self.missing_fields)
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LedgerRecord | None:
        """The stored record, or None when it is unreadable or from another version."""
        try:
            document: Any = json.loads(text)
            if not isinstance(document, dict) or document.pop("v", None) != LEDGER_VERSION:
                return None
            document["deliveries"] = tuple(document.get("deliveries", ()))
            document["missing_fields"] = tuple(document.get("missing_fields", ()))
            return cls(**document)
        except (TypeError, ValueError):
            return None

    def summary(self) -> str:
        """The compact form stored as the KV key's metadata, so status needs only list calls.

        KV allows 1024 bytes of metadata per key; this stays far below (no repository name,
        no runner name). Keys: p pool, s state, o dispatch outcome, q created_at, d dispatched_at,
        t started_at, f first deferred at, r reconciled, x cancelled before assignment, c child
        known.
        """
        document = {
            "p": self.pool,
            "s": self.state,
            "o": self.dispatch_outcome,
            "q": self.created_at,
            "d": self.dispatched_at,
            "t": self.started_at,
            "f": self.deferred_at,
            "r": int(self.reconciled),
            "x": int(self.cancelled_before_assignment),
            "c": int(self.child_id is not None),
        }
        return json.dumps(document, separators=(",", ":"))


@dataclass(frozen=True)
class Observation:
    """One delivery about one of our jobs, and what the Worker did with it."""

    repository: str
    job_id: int
    run_id: int
    run_attempt: int | None
    pool: str
    action: str
    conclusion: str | None
    runner_id: int | None
    runner_name: str | None
    delivery: str
    child_id: str | None
    dispatch_outcome: str | None
    at: float
    created_at: float | None = None  # the job's created_at, unix seconds
    source: str = "webhook"  # or "reconciler", or "completion" (a slot freed by one)
    missing_fields: tuple[str, ...] = ()  # optional payload fields this delivery lacked
    # When a runner took the job: only from in_progress and completed deliveries (a queued one's
    # started_at is its queued moment).
    started_at: float | None = None


# The dispatch outcome of a job held back at its pool's or its repository's cap.
DEFERRED_OUTCOME: Final = "deferred"
# The outcome of a delivery that was only recorded (not a queued one): it fills an empty outcome
# and never replaces what a dispatch attempt found (dispatched, deferred, failed, ...).
RECORDED_OUTCOME: Final = "not dispatched: recorded"
# The outcome of a job whose later delivery could not learn from Nomad whether a child was
# dispatched for it (the dispatch of a new job is recorded by Nomad only): a decision for
# replays_a_started_job (a queued replay is refused, as if a child were known), asked again at
# the job's next delivery. It replaces only an empty or "recorded" outcome.
DISPATCH_UNKNOWN_OUTCOME: Final = "unknown: Nomad unreadable"
# Fields that only say when and through which delivery the record last changed.
_BOOKKEEPING_FIELDS: Final = frozenset({"updated_at", "deliveries"})


def _rank(state: str) -> int:
    return STATES.index(state) if state in STATES else -1


def has_started(record: LedgerRecord) -> bool:
    """True once the job is known to be ``in_progress`` or later: a runner has taken it, or it
    has ended."""
    return _rank(record.state) >= _rank("in_progress")


def replays_a_started_job(record: LedgerRecord) -> bool:
    """True when a ``queued`` delivery for this job can only be a replay that must not dispatch:
    the job has started (:func:`has_started`) and a queued delivery was handled before (a child
    was dispatched, or a dispatch was decided against: deferred, failed, stale...).

    A queued delivery arriving for the first time after its job's ``completed`` (GitHub does not
    order deliveries) still dispatches: the runner that ran this job was started for another
    one, which now needs this delivery's runner (one runner per queued job is the only balance
    that holds).
    """
    decided = record.child_id is not None or record.dispatch_outcome not in (
        None,
        RECORDED_OUTCOME,
    )
    return has_started(record) and decided


def waits_for_a_slot(record: LedgerRecord) -> bool:
    """True while the job, deferred at a cap once, has had no runner dispatched under its own
    token, and was not cancelled before assignment: the jobs the pool's deferred index lists
    (:mod:`handler.deferred`), each owed one runner by a freed slot.

    Such a job may have started already: GitHub gives a queued job to any idle runner with its
    labels, so it may have taken a runner dispatched for another job, which that other job now
    lacks. One runner per queued job is the only balance that holds, so the job stays owed (and
    listed) until a runner is dispatched under its token, whoever that runner ends up serving.
    Once a child is recorded for it the job is no longer listed: no later freed slot pays for
    looking at it again.
    """
    return (
        record.deferred_at is not None
        and record.child_id is None
        and not record.cancelled_before_assignment
    )


def record_changed(stored: LedgerRecord | None, merged: LedgerRecord) -> bool:
    """True when ``merged`` says something ``stored`` does not: the write is worth its quota.

    ``updated_at`` and ``deliveries`` are left out of the comparison: a replayed delivery, or a
    known body under a new delivery id, moves only those, and costs no write.
    """
    if stored is None:
        return True
    return any(
        getattr(stored, name) != getattr(merged, name)
        for name in LedgerRecord.__dataclass_fields__
        if name not in _BOOKKEEPING_FIELDS
    )


def _merged_outcome(existing: LedgerRecord, seen: Observation) -> str | None:
    # A dispatch that started a child stays the outcome; a later note does not hide it.
    if existing.child_id:
        return existing.dispatch_outcome
    if seen.dispatch_outcome is None:
        return existing.dispatch_outcome
    if seen.dispatch_outcome == RECORDED_OUTCOME and existing.dispatch_outcome is not None:
        return existing.dispatch_outcome
    return seen.dispatch_outcome


def merge(existing: LedgerRecord | None, seen: Observation) -> LedgerRecord:
    """The record after ``seen``, given what was stored (None when nothing was)."""
    cancelled = (
        seen.action == "completed" and seen.conclusion == "cancelled" and seen.runner_id is None
    )
    new_child = seen.dispatch_outcome == "dispatched" and seen.child_id is not None
    deferred = seen.dispatch_outcome == DEFERRED_OUTCOME
    if existing is None:
        return LedgerRecord(
            repository=seen.repository,
            job_id=seen.job_id,
            run_id=seen.run_id,
            run_attempt=seen.run_attempt,
            pool=seen.pool,
            state=seen.action,
            last_action=seen.action,
            conclusion=seen.conclusion,
            runner_name=seen.runner_name,
            child_id=seen.child_id,
            dispatch_outcome=seen.dispatch_outcome,
            cancelled_before_assignment=cancelled,
            first_seen=seen.at,
            updated_at=seen.at,
            deliveries=(seen.delivery,),
            created_at=seen.created_at,
            dispatched_at=seen.at if new_child else None,
            reconciled=new_child and seen.source == "reconciler",
            missing_fields=_missing(seen.missing_fields),
            started_at=seen.started_at,
            deferred_at=seen.at if deferred else None,
        )
    forward = _rank(seen.action) >= _rank(existing.state)
    # Only the first dispatch that started a child counts: a later replay changes nothing.
    first_child = new_child and existing.child_id is None
    # Forward only, like the state: two replayed bodies sent in turn must not flip a field.
    later_action = _rank(seen.action) >= _rank(existing.last_action)
    deliveries = existing.deliveries
    if seen.delivery not in deliveries:
        deliveries = (*deliveries, seen.delivery)[-_MAX_DELIVERIES:]
    return replace(
        existing,
        state=seen.action if forward else existing.state,
        last_action=seen.action if later_action else existing.last_action,
        conclusion=seen.conclusion if forward and seen.conclusion else existing.conclusion,
        runner_name=seen.runner_name or existing.runner_name,
        # A second new child only comes from the reconciler replacing a dead one: keep the live.
        child_id=seen.child_id if new_child else existing.child_id or seen.child_id,
        dispatch_outcome=_merged_outcome(existing, seen),
        cancelled_before_assignment=existing.cancelled_before_assignment or cancelled,
        first_seen=min(existing.first_seen, seen.at),
        updated_at=max(existing.updated_at, seen.at),
        deliveries=deliveries,
        created_at=existing.created_at or seen.created_at,
        dispatched_at=existing.dispatched_at or (seen.at if first_child else None),
        reconciled=existing.reconciled or (first_child and seen.source == "reconciler"),
        run_attempt=existing.run_attempt or seen.run_attempt,
        missing_fields=_missing((*existing.missing_fields, *seen.missing_fields)),
        # The first start and the first deferral count; later ones (a replay) change nothing.
        started_at=existing.started_at or seen.started_at,
        deferred_at=existing.deferred_at or (seen.at if deferred else None),
    )


def _missing(names: tuple[str, ...]) -> tuple[str, ...]:
    # Sorted and bounded: a record stays small whatever a sender leaves out.
    return tuple(sorted(set(names)))[:_MAX_MISSING]
