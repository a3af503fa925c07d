"""``GET /metrics``: the ``/status`` document in Prometheus' text exposition format (0.0.4).

``render_metrics(document)`` takes what :func:`handler.status.summarize` (plus ``complete`` and
``window_seconds``) returns and writes one ``# HELP`` and one ``# TYPE`` line per family, then
its samples, one per pool (label ``pool``). Names follow Prometheus' conventions: the
``github_runners_`` prefix, base units in the name (``_seconds``), ``_jobs`` for counts of jobs.

Every figure describes the ledger's window (its last four days), not the life of the Worker: a
record that expires leaves the figures, so counts can fall. That makes them gauges, never
counters (no ``_total``: ``rate()`` over a value that falls would read it as a reset). The time
spans are summaries, quantiles 0.5, 0.95 and 1 (the maximum) with ``_sum`` and ``_count`` over
the same window; alert on the quantiles (``github_runners_queue_to_running_seconds{quantile=
"0.95"} > 600``), not on ``rate()`` of ``_count``. Spans with no job yet have no quantile samples,
only ``_count 0`` and ``_sum 0``. Standard library only, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
PREFIX: Final = "github_runners_"
_QUANTILES: Final = (("0.5", "p50"), ("0.95", "p95"), ("1", "max"))

# (metric name, HELP text, path of the count in a pool's status document)
_POOL_GAUGES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    (
        "ledger_jobs",
        "Jobs of the pool in the ledger's window, and those only Nomad knows of yet.",
        ("jobs",),
    ),
    (
        "dispatched_jobs",
        "Jobs of the pool a runner was dispatched for, in the ledger's window.",
        ("dispatched",),
    ),
    (
        "reconciled_jobs",
        "Jobs of the pool whose runner the reconciler dispatched, in the ledger's window.",
        ("reconciled",),
    ),
    (
        "waiting_at_cap_jobs",
        "Jobs of the pool deferred at a cap with no runner yet.",
        ("deferred",),
    ),
    (
        "deferred_jobs",
        "Jobs of the pool deferred at a cap at least once, in the ledger's window.",
        ("deferred_at_cap", "jobs"),
    ),
    (
        "failed_jobs",
        "Jobs of the pool whose dispatch failed and has not succeeded since.",
        ("failed",),
    ),
    (
        "queued_not_running_jobs",
        "Jobs of the pool queued at GitHub with no runner started yet, as ledger and Nomad know.",
        ("queued_not_running",),
    ),
    (
        "starting_jobs",
        "Jobs of the pool whose runner Nomad runs, with no delivery since their queued one.",
        ("runners_starting",),
    ),
    (
        "cancelled_before_assignment_jobs",
        "Jobs of the pool cancelled before any runner took them, in the ledger's window.",
        ("cancelled_before_assignment",),
    ),
)
# (metric name, HELP text, key of the distribution in a pool's status document)
_POOL_SUMMARIES: Final[tuple[tuple[str, str, tuple[str, ...]], ...]] = (
    (
        "queue_to_dispatch_seconds",
        "From a job's created_at to the dispatch of its runner, over the ledger's window.",
        ("queue_to_dispatch_seconds",),
    ),
    (
        "queue_to_running_seconds",
        "From a job's created_at to its started_at (GitHub's clock), over the ledger's window.",
        ("queue_to_running_seconds",),
    ),
    (
        "deferred_wait_seconds",
        "From created_at to dispatch, of jobs deferred at a cap, over the ledger's window.",
        ("deferred_at_cap", "wait_seconds"),
    ),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _at(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def render_metrics(status: Mapping[str, Any]) -> str:
    """The exposition text of one ``/status`` document (ends with a newline)."""
    pools: Mapping[str, Any] = status.get("pools") or {}
    lines: list[str] = []
    for name, help_text, path in _POOL_GAUGES:
        metric = PREFIX + name
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for pool, counts in sorted(pools.items()):
            value = _at(counts, path)
            if isinstance(value, int | float) and not isinstance(value, bool):
                lines.append(f'{metric}{{pool="{_escape(pool)}"}} {_number(value)}')
    ignored = PREFIX + "ignored_jobs"
    lines += [
        f"# HELP {ignored} Jobs of the pool not dispatched, by reason code, in the window.",
        f"# TYPE {ignored} gauge",
    ]
    for pool, counts in sorted(pools.items()):
        for code, value in sorted((counts.get("ignored") or {}).items()):
            labels = f'pool="{_escape(pool)}",code="{_escape(str(code))}"'
            lines.append(f"{ignored}{{{labels}}} {_number(value)}")
    for name, help_text, path in _POOL_SUMMARIES:
        metric = PREFIX + name
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} summary"]
        for pool, counts in sorted(pools.items()):
            spread = _at(counts, path) or {}
            label = f'pool="{_escape(pool)}"'
            for quantile, key in _QUANTILES:
                value = spread.get(key)
                if isinstance(value, int | float):
                    lines.append(f'{metric}{{{label},quantile="{quantile}"}} {_number(value)}')
            lines.append(f"{metric}_sum{{{label}}} {_number(spread.get('sum') or 0)}")
            lines.append(f"{metric}_count{{{label}}} {_number(spread.get('count') or 0)}")
    for name, help_text, value in (
        (
            "ledger_unreadable_records",
            "Ledger records without readable metadata (older format or damaged).",
            status.get("unreadable_records", 0),
        ),
        (
            "ledger_complete",
            "1 when every ledger key was summarized, 0 when the answer stopped at its bound.",
            1 if status.get("complete") else 0,
        ),
        (
            "ledger_records_read",
            "Ledger records this answer summarized (at most the Workers plan's bound).",
            status.get("records_read", 0),
        ),
        (
            "ledger_window_seconds",
            "How far back the ledger reaches: its records' time to live.",
            status.get("window_seconds", 0),
        ),
    ):
        metric = PREFIX + name
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines.append(f"{metric} {_number(value)}")
    return "\n".join(lines) + "\n"
