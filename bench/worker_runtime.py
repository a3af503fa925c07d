"""Benchmark: signed deliveries through the real local Workers runtime to the Nomad stand-in.

Starts the Nomad stand-in and ``wrangler dev`` (tests/worker_runtime/harness.py), warms Pyodide
up, then POSTs 500 signed ``workflow_job``/``queued`` self-hosted deliveries, each for a new job
(so each dispatches a new child and writes the KV ledger), over one keep-alive connection, and
prints the client-side round-trip p50/p99. Baseline in the same process: ``GET /healthz``
through the same runtime (no signature, no Nomad, no KV), and the ratio between the two.
Goal (issue 2): p50 under 10 ms. Run: ``.venv/bin/python bench/worker_runtime.py [N]``.
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.contract import Routing
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import ROUTING_DOCUMENT, bindings, delivery, workflow_job
from tests.worker_runtime.harness import LocalWorker

DELIVERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> None:
    # A cap the bench never reaches: every delivery takes the full dispatch path.
    document = json.loads(json.dumps(ROUTING_DOCUMENT))
    for pool in document["pools"]:
        pool["max_runners"] = 1_000_000
    routing = Routing.from_document(document)
    with NomadStandIn() as nomad, tempfile.TemporaryDirectory(prefix="bench-worker-") as work:
        for pool in routing.pools:
            from handler.contract import DISPATCH_META_KEYS

            nomad.register_job(pool.nomad_job, meta_required=DISPATCH_META_KEYS)
        values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
        started = time.monotonic()
        with LocalWorker(values, Path(work)) as worker:
            cold = time.monotonic() - started
            connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)

            def request(method: str, path: str, headers: dict[str, str], body: bytes) -> int:
                connection.request(method, path, body=body or None, headers=headers)
                response = connection.getresponse()
                response.read()
                return response.status

            for index in range(20):  # warm-up, not measured
                sent = delivery(workflow_job(job_id=10_000_000 + index))
                request("POST", sent.path, sent.headers, sent.body)

            def measure(deliveries: list) -> tuple[list[float], dict[int, int]]:  # type: ignore[type-arg]
                samples: list[float] = []
                statuses: dict[int, int] = {}
                for sent in deliveries:
                    begin = time.perf_counter()
                    status = request("POST", sent.path, sent.headers, sent.body)
                    samples.append((time.perf_counter() - begin) * 1000)
                    statuses[status] = statuses.get(status, 0) + 1
                return samples, statuses

            health: list[float] = []
            for _ in range(DELIVERIES):
                begin = time.perf_counter()
                assert request("GET", "/healthz", {}, b"") == 200
                health.append((time.perf_counter() - begin) * 1000)
            # Signed but GitHub-hosted: verify + parse + decide in Pyodide, no outbound I/O.
            ignored, _ = measure(
                [delivery(workflow_job(labels=["ubuntu-latest"])) for _ in range(DELIVERIES)]
            )
            # Our job, in_progress: only a ledger update (KV, after the answer), no Nomad call.
            recorded, _ = measure(
                [
                    delivery(workflow_job("in_progress", job_id=30_000_000 + i, runner_id=1))
                    for i in range(DELIVERIES)
                ]
            )
            samples, statuses = measure(
                [delivery(workflow_job(job_id=20_000_000 + i)) for i in range(DELIVERIES)]
            )
            connection.close()
        children = sum(len(nomad.children(pool.nomad_job)) for pool in routing.pools)
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    h50, i50 = percentile(health, 0.50), percentile(ignored, 0.50)
    r50 = percentile(recorded, 0.50)
    print(f"Workers runtime (wrangler 3.92.0, local), {DELIVERIES} signed deliveries:")
    print(f"  statuses {statuses}, Nomad children created {children}")
    print(
        f"  dispatch p50 {p50:.2f} ms   p99 {p99:.2f} ms   mean {statistics.fmean(samples):.2f} ms"
    )
    print(f"  baseline GET /healthz p50 {h50:.2f} ms   ratio {p50 / h50:.2f}x")
    print(f"  signed GitHub-hosted delivery (ignored, no I/O) p50 {i50:.2f} ms")
    print(
        f"  signed in_progress of our job (ledger only, written after the answer) p50 {r50:.2f} ms"
    )
    print(
        f"  cold start to first 200 (includes wrangler start): {cold:.1f} s   (goal: p50 < 10 ms)"
    )


if __name__ == "__main__":
    main()
