"""Benchmark: ``GET /status`` and ``GET /metrics`` on a ledger of 10,000 job records.

The records are realistic (four pools, every outcome, time-to-runner spans, a share deferred at
the cap), written through ``ledger.merge`` and stored as the Worker stores them (value plus the
``summary()`` metadata) in the in-memory ledger, which pages lists as KV does (1,000 keys per
call). Each answer goes through ``service.handle`` with the status token, no cache, with
``RECONCILE_PLAN`` = ``paid`` (every record, up to 20,000) and ``free`` (the first 50: the Free
plan's bound, ``service.STATUS_MAX_RECORDS``). Printed: the KV operations one answer costs (list
calls, reads, writes), and the time per answer under CPython (median of 20; the Worker's Pyodide
is several times slower: bench/cpu_budget.py measures it in the local Workers runtime).
Run: ``.venv/bin/python bench/status_ledger.py [RECORDS]``.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.ledger import LEDGER_TTL_SECONDS, Observation, ledger_key, merge
from handler.local_server import MemoryLedger
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.standins.webhooks import ROUTING, bindings, status_headers

RECORDS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000


class CountingLedger(MemoryLedger):
    def __init__(self) -> None:
        super().__init__()
        self.calls = {"list": 0, "get": 0, "put": 0, "delete": 0}

    async def list(self, prefix, cursor, limit=1000):  # type: ignore[no-untyped-def]
        self.calls["list"] += 1
        return await super().list(prefix, cursor, limit)

    async def get(self, key):  # type: ignore[no-untyped-def]
        self.calls["get"] += 1
        return await super().get(key)

    async def put(self, key, value, ttl_seconds, metadata=None):  # type: ignore[no-untyped-def]
        self.calls["put"] += 1
        await super().put(key, value, ttl_seconds, metadata)


def fill(ledger: CountingLedger, count: int) -> None:
    rng = random.Random(3)  # noqa: S311 - reproducible data
    pools = [pool.name for pool in ROUTING.pools]
    base = time.time() - 3 * 24 * 3600
    for n in range(count):
        created = base + n * 20.0
        common = {
            "repository": f"org/repo-{n % 40}",
            "job_id": 50_000_000 + n,
            "run_id": 60_000_000 + n // 5,
            "run_attempt": 1,
            "pool": pools[n % len(pools)],
            "conclusion": None,
            "runner_id": None,
            "runner_name": None,
            "child_id": None,
            "dispatch_outcome": None,
            "created_at": created,
        }
        record = None
        if rng.random() < 0.3:
            seen = Observation(
                action="queued",
                delivery=f"q{n}",
                at=created,
                **common | {"dispatch_outcome": "deferred"},
            )
            record = merge(record, seen)
        dispatched = created + rng.expovariate(1 / 30)
        seen = Observation(
            action="queued",
            delivery=f"d{n}",
            at=dispatched,
            **common | {"child_id": f"c{n}", "dispatch_outcome": "dispatched"},
        )
        record = merge(record, seen)
        if rng.random() < 0.95:
            started = dispatched + 10 + rng.expovariate(1 / 5)
            seen = Observation(
                action="in_progress", delivery=f"i{n}", at=started, started_at=started, **common
            )
            record = merge(record, seen)
            seen = Observation(
                action="completed",
                delivery=f"c{n}",
                at=started + 60,
                started_at=started,
                **common | {"conclusion": "success", "runner_id": 1},
            )
            record = merge(record, seen)
        key = ledger_key(record.repository, record.job_id)
        asyncio.run(ledger.put(key, record.to_json(), LEDGER_TTL_SECONDS, record.summary()))


class NoLiveChildren:
    """Nomad as /status reads it (each pool's live children): none, so only the ledger counts."""

    async def send(self, request: object) -> tuple[int, bytes]:
        return 200, b"[]"


def main() -> None:
    ledger = CountingLedger()
    fill(ledger, RECORDS)
    for plan in ("paid", "free"):
        values = bindings("http://127.0.0.1:9") | {"RECONCILE_PLAN": plan}
        settings = settings_from_bindings(values.get)
        ports = Ports(transport=NoLiveChildren(), ledger=ledger, monotonic=time.monotonic)  # type: ignore[arg-type]
        for path in ("/status", "/metrics"):
            request = IncomingRequest("GET", path, status_headers(), b"")
            timings = []
            for _ in range(20):
                ledger.calls = dict.fromkeys(ledger.calls, 0)
                started = time.perf_counter()
                reply = asyncio.run(handle(request, settings, ports, datetime.now(UTC)))
                timings.append(time.perf_counter() - started)
                assert reply.status == 200, reply.document
            size = len(reply.text or "") if path == "/metrics" else len(str(reply.document))
            read = reply.document.get("records_read", "-") if path == "/status" else "-"
            print(
                f"plan {plan} {path:<9} {RECORDS} records (summarized: {read}): median"
                f" {statistics.median(timings) * 1000:.1f} ms, max {max(timings) * 1000:.1f} ms"
                f" (CPython); KV per answer: {ledger.calls['list']} list, {ledger.calls['get']}"
                f" get, {ledger.calls['put']} put; answer {size} bytes"
            )


if __name__ == "__main__":
    main()
