"""The per-pool queue of deferred jobs, as plain data: index keys, and GitHub's word on a job.

A job held back at its pool's (or its repository's) cap gets, beside its ledger record, one KV
key ``deferred:{pool}:{created_at in ms, 13 digits}:{repository}:{job id}`` (empty value, the
job's coordinates as metadata), written once, when its record first turns ``deferred``. KV lists
keys in lexicographic order, so one list call under ``deferred:{pool}:`` returns the pool's
deferred jobs oldest ``created_at`` first, across its repositories, with everything a dispatch
needs: no read per job. The index holds the jobs still owed a runner: the key is deleted once a
runner is dispatched under the job's own token (its child recorded), or the job is found to need
none (cancelled before a runner took it, or too old); it expires after
:data:`INDEX_TTL_SECONDS` anyway (GitHub cancels a job that waited 24 h). A job that started on
a runner dispatched for another job stays owed (see :func:`handler.ledger.waits_for_a_slot`).
KV's list is eventually consistent (a key written in one location may take up to ~60 s to be
listed in another, a deleted one may be listed as long), so the index is a hint, never a lock:
each entry is checked against the ledger and, where the ledger cannot tell, against GitHub
(:func:`job_state_request`) before it is dispatched, and Nomad's idempotency token (the job id)
keeps a second dispatch of one job a no-op.

Standard library only, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from handler.forks import GitHubRead
from handler.nomad import HttpRequest

DEFERRED_KEY_PREFIX: Final = "deferred:"
# A day and an hour: GitHub cancels a job after about 24 h in the queue.
INDEX_TTL_SECONDS: Final = 25 * 3600
_GITHUB_API_VERSION: Final = "2022-11-28"
_USER_AGENT: Final = "nomad-github-runners-dispatch"


def pool_prefix(pool: str) -> str:
    """The prefix under which ``pool``'s deferred jobs are listed."""
    return f"{DEFERRED_KEY_PREFIX}{pool}:"


@dataclass(frozen=True)
class DeferredJob:
    """One job waiting at its pool's cap, as its index key holds it."""

    pool: str
    repository: str  # lower-cased, as the ledger keys it
    job_id: int
    run_id: int
    created_at: float  # unix seconds: the job's created_at, else when it was first deferred

    def key(self) -> str:
        # Milliseconds, zero-padded: lexicographic order is time order until the year 2286.
        stamp = f"{max(0, round(self.created_at * 1000)):013d}"
        return f"{pool_prefix(self.pool)}{stamp}:{self.repository}:{self.job_id}"

    def metadata(self) -> str:
        return json.dumps(
            {"r": self.repository, "j": self.job_id, "u": self.run_id, "q": self.created_at},
            separators=(",", ":"),
        )

    @classmethod
    def from_entry(cls, pool: str, key: str, metadata: str | None) -> DeferredJob | None:
        """The job an index entry names, or None when its metadata is unreadable."""
        try:
            document: Any = json.loads(metadata) if metadata else None
        except ValueError:
            return None
        if not isinstance(document, dict) or not key.startswith(pool_prefix(pool)):
            return None
        repository, job_id, run_id = document.get("r"), document.get("j"), document.get("u")
        created = document.get("q")
        if (
            not isinstance(repository, str)
            or type(job_id) is not int
            or type(run_id) is not int
            or not isinstance(created, int | float)
            or isinstance(created, bool)
        ):
            return None
        return cls(pool, repository, job_id, run_id, float(created))


class JobLookupError(Exception):
    """GitHub could not say what state a job is in; ``reason`` says why (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def job_state_request(github: GitHubRead, repository: str, job_id: int) -> HttpRequest:
    """``GET /repos/{o}/{r}/actions/jobs/{job_id}`` with the read token ("Actions: read")."""
    owner, name = repository.split("/", 1)
    url = (
        f"{github.api_url.rstrip('/')}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        f"/actions/jobs/{job_id}"
    )
    headers = (
        ("Accept", "application/vnd.github+json"),
        ("Authorization", f"Bearer {github.token}"),
        ("X-GitHub-Api-Version", _GITHUB_API_VERSION),
        ("User-Agent", _USER_AGENT),
    )
    return HttpRequest("GET", url, headers, b"")


@dataclass(frozen=True)
class JobState:
    """GitHub's word on one job: its ``status`` and whether a runner was ever assigned to it."""

    status: str  # queued, in_progress, completed, waiting, ...
    assigned: bool  # a runner took it: in progress, or completed with a runner_id

    def owes_a_runner(self) -> bool:
        """True when the job still needs the runner dispatched under its token: queued, or
        started (on some runner, which another queued job then lacks). False for a job that
        completed without a runner (cancelled before assignment) or waits for an approval
        (GitHub queues it again, and its queued delivery dispatches)."""
        return self.status in ("queued", "in_progress") or (
            self.status == "completed" and self.assigned
        )


def interpret_job_state(status: int, body: bytes) -> JobState:
    """The job's state from GitHub's answer; :class:`JobLookupError` for any other answer than
    a 200 with a status string. ``runner_id`` is null (or 0) until a runner is assigned."""
    if status != 200:
        raise JobLookupError(f"GitHub answered {status}")
    try:
        document: Any = json.loads(body)
    except ValueError:
        raise JobLookupError("GitHub's job answer is not JSON") from None
    state = document.get("status") if isinstance(document, dict) else None
    if not isinstance(state, str) or not state:
        raise JobLookupError("GitHub's job answer has no status")
    runner = document.get("runner_id")
    assigned = state == "in_progress" or (
        type(runner) is int and runner > 0  # not a bool, not the 0 of an unassigned job
    )
    return JobState(state, assigned)


def successor_token(job_id: int, dead_child: str) -> str:
    """The idempotency token of the runner that replaces ``dead_child`` for job ``job_id``: the
    same wherever it is derived (the reconciler, a freed slot), so one dead child is replaced
    once."""
    return f"{job_id}-{hashlib.sha256(dead_child.encode()).hexdigest()[:16]}"
