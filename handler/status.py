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
  started its runner): count, p50, p95;
* time to runner, in seconds, each as ``count``, ``p50``, ``p95``, ``max``:
  ``queue_to_dispatch_seconds`` (the same span as ``latency_ms``: our part) and
  ``queue_to_running_seconds`` (``created_at`` to the ``started_at`` of the job's in_progress
  or completed delivery: what the user waits for, both from GitHub's clock);
* ``deferred_at_cap``: jobs held back at a cap at least once (``jobs``) and how long those that
  got a runner waited for its dispatch (``wait_seconds``);
* ``queued_not_running``: jobs the ledger has queued, with no runner started yet (the service
  adds ``runners_starting``, the runners only Nomad knows of: ``service.with_unrecorded_runners``).

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
        "deferred_at_cap": {"jobs": 0},
        "queued_not_running": 0,
    }


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def distribution(values: list[float]) -> dict[str, Any]:
    """``count``, ``p50``, ``p95`` (nearest rank), ``max`` and ``sum`` of ``values``, in seconds
    to the millisecond; None for each quantile when there is no value."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p95": None, "max": None, "sum": 0.0}
    return {
        "count": len(ordered),
        "sum": round(sum(ordered), 3),
        "p50": round(percentile(ordered, 0.50), 3),
        "p95": round(percentile(ordered, 0.95), 3),
        "max": round(ordered[-1], 3),
    }


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values`` (non-empty)."""
    rank = max(1, math.ceil(fraction * len(values)))
    return values[rank - 1]


def _parse_all(summaries: list[str | None]) -> list[Any]:
    """Each summary parsed, None where it is missing or not JSON.

    One ``json.loads`` of them all joined into one array where every one is JSON: a call per
    record cost about as much as the parse itself in the Workers runtime (Pyodide), where this
    function is most of ``/status``'s CPU (bench/cpu_budget.py). A damaged record (not JSON,
    or JSON that would merge with its neighbours) sends it back to one parse per record.
    """
    if all(text and text[0] == "{" and text[-1] == "}" for text in summaries):
        try:
            items: Any = json.loads("[" + ",".join(summaries) + "]")  # type: ignore[arg-type]
        except ValueError:
            pass
        else:
            if isinstance(items, list) and len(items) == len(summaries):
                return items
    parsed: list[Any] = []
    for text in summaries:
        try:
            parsed.append(json.loads(text) if text else None)
        except ValueError:
            parsed.append(None)
    return parsed


def summarize(summaries: Iterable[str | None], routing: Routing) -> dict[str, Any]:
    pools: dict[str, dict[str, Any]] = {pool.name: _empty() for pool in routing.pools}
    latencies: dict[str, list[float]] = {name: [] for name in pools}
    spans: dict[str, dict[str, list[float]]] = {}
    unreadable = 0
    for item in _parse_all(list(summaries)):
        if not isinstance(item, dict) or not isinstance(item.get("p"), str):
            unreadable += 1  # a record written before metadata existed, or damaged
            continue
        name = item["p"]
        counts = pools.get(name)
        if counts is None:
            counts = pools[name] = _empty()
            latencies[name] = []
        pool_spans = spans.get(name)
        if pool_spans is None:
            pool_spans = spans[name] = {"dispatch": [], "running": [], "deferred": []}
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
        cancelled = item.get("x")
        if cancelled:
            counts["cancelled_before_assignment"] += 1
            counts["cleaned_up_by_idle_timeout"] += has_child
        created, dispatched = _number(item.get("q")), _number(item.get("d"))
        if created is not None:
            if dispatched is not None:
                waited = max(0.0, dispatched - created)
                latencies[name].append(waited * 1000.0)
                pool_spans["dispatch"].append(waited)
                if _number(item.get("f")) is not None:
                    pool_spans["deferred"].append(waited)
            started = _number(item.get("t"))
            if started is not None:
                pool_spans["running"].append(max(0.0, started - created))
        if "f" in item and _number(item["f"]) is not None:
            counts["deferred_at_cap"]["jobs"] += 1
        if not cancelled and item.get("s") == "queued":
            counts["queued_not_running"] += 1
    for name, values in latencies.items():
        values.sort()
        pools[name]["latency_ms"] = {
            "count": len(values),
            "p50": round(percentile(values, 0.50), 1) if values else None,
            "p95": round(percentile(values, 0.95), 1) if values else None,
        }
        pool_spans = spans.get(name, {})
        pools[name]["queue_to_dispatch_seconds"] = distribution(pool_spans.get("dispatch", []))
        pools[name]["queue_to_running_seconds"] = distribution(pool_spans.get("running", []))
        pools[name]["deferred_at_cap"]["wait_seconds"] = distribution(
            pool_spans.get("deferred", [])
        )
    return {"pools": pools, "unreadable_records": unreadable}
