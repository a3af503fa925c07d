"""Per-pool status computed from the ledger: what happened to the jobs of the last four days.

``summarize(summaries, routing)`` takes the compact metadata of each ledger key
(:meth:`handler.ledger.LedgerRecord.summary`, returned by KV's list call, 1000 keys per call, so
status costs one list call per 1000 jobs and no read per job) and returns a JSON-ready document,
per pool:

* ``jobs``: ledger records (jobs of ours seen by a webhook or the reconciler);
* ``dispatched``: jobs a runner was dispatched for, of which ``reconciled`` by the reconciler;
* ``deferred`` (waiting for the pool's or the repository's cap) and ``failed`` (Nomad refused
  or was unreachable):
  jobs with no runner yet, which the reconciler retries while they are queued;
* ``ignored``: jobs of ours not dispatched, by reason code (``recorded``: only later actions
  were seen; ``awaiting_approval``; ``stale``; ``fork_pull_request`` and
  ``head_repository_unknown`` from the fork policy; ``run_lookup_failed`` until the reconciler
  dispatches the job);
* ``cancelled_before_assignment``: jobs cancelled before any runner took them, and of those
  ``cleaned_up_by_idle_timeout``: the ones a runner had been dispatched for. That runner has no
  job of its own left; it takes another queued job with its labels or exits at its pool's idle
  timeout, and its deregister task removes it from GitHub (see runner_job/README.md);
* ``latency_ms``: queued-to-dispatched latency (the job's ``created_at`` to the dispatch that
  started its runner): count, p50, p95.

Aggregates only: no repository, job id, runner name or secret. Standard library only, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, Final

from handler.contract import Routing

IGNORED_PREFIX: Final = "not dispatched: "


def _empty() -> dict[str, Any]:
    return {
        "jobs": 0,
        "dispatched": 0,
        "reconciled": 0,
        "deferred": 0,
        "failed": 0,
        "ignored": {},
        "cancelled_before_assignment": 0,
        "cleaned_up_by_idle_timeout": 0,
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (non-empty)."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def summarize(summaries: Iterable[str | None], routing: Routing) -> dict[str, Any]:
    pools: dict[str, dict[str, Any]] = {pool.name: _empty() for pool in routing.pools}
    latencies: dict[str, list[float]] = {name: [] for name in pools}
    unreadable = 0
    for text in summaries:
        try:
            item: Any = json.loads(text) if text else None
        except ValueError:
            item = None
        if not isinstance(item, dict) or not isinstance(item.get("p"), str):
            unreadable += 1  # a record written before metadata existed, or damaged
            continue
        name = item["p"]
        counts = pools.setdefault(name, _empty())
        latencies.setdefault(name, [])
        counts["jobs"] += 1
        raw_outcome = item.get("o")
        outcome = raw_outcome if isinstance(raw_outcome, str) else ""
        has_child = bool(item.get("c"))
        if has_child:
            counts["dispatched"] += 1
            counts["reconciled"] += bool(item.get("r"))
        elif outcome == "deferred":
            counts["deferred"] += 1
        elif outcome == "failed":
            counts["failed"] += 1
        elif outcome.startswith(IGNORED_PREFIX):
            code = outcome[len(IGNORED_PREFIX) :]
            counts["ignored"][code] = counts["ignored"].get(code, 0) + 1
        if item.get("x"):
            counts["cancelled_before_assignment"] += 1
            counts["cleaned_up_by_idle_timeout"] += has_child
        created, dispatched = item.get("q"), item.get("d")
        if isinstance(created, int | float) and isinstance(dispatched, int | float):
            latencies[name].append(max(0.0, (dispatched - created) * 1000.0))
    for name, values in latencies.items():
        values.sort()
        pools[name]["latency_ms"] = {
            "count": len(values),
            "p50": round(percentile(values, 0.50), 1) if values else None,
            "p95": round(percentile(values, 0.95), 1) if values else None,
        }
    return {"pools": pools, "unreadable_records": unreadable}
