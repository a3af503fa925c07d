"""Benchmark: signed deliveries through the real local Workers runtime to the Nomad stand-in.

Starts the Nomad stand-in (in its own process, so it shares no GIL with the measuring client) and
``wrangler dev`` (tests/worker_runtime/harness.py), warms Pyodide up, then sends, over one
keep-alive connection, 500 requests per line and prints client-side round-trip percentiles:
``GET /healthz`` (the baseline: same runtime, no signature, no Nomad, no KV), signed GitHub-hosted
deliveries (verify + parse + decide, no I/O), signed queued self-hosted deliveries each for a new
job (capacity read + dispatch at the stand-in, ledger written after the answer) back to back and
paced one per 20 ms, and deliveries to a pool at its cap (one capacity read, deferred).
Then the breakdown of the outbound cost: the same capacity read (GET of the job summary) sent
from CPython to the stand-in (new connection each time, and one kept-alive connection), and from
inside the Worker through the entry's ``FetchTransport`` (test-only route of the adapter: 0, 1
or 2 reads per request, interleaved, so the difference is the cost of one outbound request).
Goal (issue 2): dispatch p50 under 10 ms. Run: ``.venv/bin/python bench/worker_runtime.py [N]``.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.contract import DISPATCH_META_KEYS, Routing
from handler.nomad import HttpRequest, summary_request
from handler.service import settings_from_bindings
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import ROUTING_DOCUMENT, Delivery, bindings, delivery, workflow_job
from tests.worker_runtime.harness import LocalWorker

DELIVERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 500


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _repo(arm: dict[str, object]) -> dict[str, str]:
    return {"repository": str(arm["repository"])}


def _post(sent: Delivery) -> tuple[str, str, dict[str, str], bytes]:
    return "POST", sent.path, sent.headers, sent.body


def cpython_reads(summary: HttpRequest, count: int) -> tuple[list[float], list[float]]:
    """Round trips of ``summary`` from this process: a new connection each, then one kept."""
    parts = urlsplit(summary.url)
    target = f"{parts.path}?{parts.query}"
    headers = dict(summary.headers)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    fresh: list[float] = []
    for _ in range(count):
        begin = time.perf_counter()
        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        response.read()
        connection.close()
        fresh.append((time.perf_counter() - begin) * 1000)
        assert response.status == 200, response.status
    kept: list[float] = []
    connection = http.client.HTTPConnection(host, port, timeout=10)
    for _ in range(count):
        begin = time.perf_counter()
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        response.read()
        kept.append((time.perf_counter() - begin) * 1000)
        assert response.status == 200, response.status
    connection.close()
    return fresh, kept


def serve_nomad(routing_json: str, pipe: Connection) -> None:
    """The Nomad stand-in in its own process: no GIL shared with the measuring client."""
    routing = Routing.from_json(routing_json)
    with NomadStandIn() as nomad:
        for pool in routing.pools:
            nomad.register_job(pool.nomad_job, meta_required=DISPATCH_META_KEYS)
        pipe.send(nomad.url)
        pipe.recv()  # until the bench is done
        pipe.send(sum(len(nomad.children(pool.nomad_job)) for pool in routing.pools))


def main() -> None:
    # A cap the bench never reaches: every delivery takes the full dispatch path.
    document = json.loads(json.dumps(ROUTING_DOCUMENT))
    for pool in document["pools"]:
        # A cap the bench never reaches (the full dispatch path), except "arm": cap 1, so once
        # it has a runner each delivery is only a capacity read and a deferral.
        pool["max_runners"] = 1 if pool["name"] == "arm" else 1_000_000
    routing = Routing.from_document(document)
    ours, theirs = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(
        target=serve_nomad, args=(routing.to_json(), theirs), daemon=True
    )
    server.start()
    nomad_url = ours.recv()
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as work:
        values = bindings(nomad_url) | {"ROUTING": routing.to_json()}
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

            def measure(
                deliveries: list[Delivery], pace: float = 0.0
            ) -> tuple[list[float], dict[int, int]]:
                samples: list[float] = []
                statuses: dict[int, int] = {}
                for sent in deliveries:
                    begin = time.perf_counter()
                    status = request("POST", sent.path, sent.headers, sent.body)
                    samples.append((time.perf_counter() - begin) * 1000)
                    statuses[status] = statuses.get(status, 0) + 1
                    if pace:
                        time.sleep(pace)
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
            # Back to back: each delivery also waits for the previous one's ledger write.
            samples, statuses = measure(
                [delivery(workflow_job(job_id=20_000_000 + i)) for i in range(DELIVERIES)]
            )
            # Paced, one every 20 ms: what one webhook waits for when the isolate is not busy.
            paced, paced_statuses = measure(
                [delivery(workflow_job(job_id=30_000_000 + i)) for i in range(DELIVERIES)],
                pace=0.02,
            )
            arm = {"repository": "octo-org/octo-repo", "labels": ["self-hosted", "arm64"]}
            request(*_post(delivery(workflow_job(job_id=40_000_000, **arm), **_repo(arm))))
            capped, capped_statuses = measure(
                [
                    delivery(workflow_job(job_id=40_000_001 + i, **arm), **_repo(arm))
                    for i in range(DELIVERIES)
                ],
                pace=0.02,
            )
            # n capacity reads per request from inside the Worker, interleaved: n=1 minus n=0 is
            # one outbound request's cost there, free of the per-request runtime overhead.
            reads: dict[int, list[float]] = {0: [], 1: [], 2: []}
            for _ in range(DELIVERIES):
                for count, timings in reads.items():
                    begin = time.perf_counter()
                    assert request("GET", f"/__test/nomad-reads/{count}", {}, b"") == 200
                    timings.append((time.perf_counter() - begin) * 1000)
            connection.close()
        settings = settings_from_bindings(values.get)
        fresh, kept = cpython_reads(
            summary_request(
                nomad_addr=settings.nomad_addr,
                namespace=settings.routing.namespace,
                nomad_job=settings.routing.pools[0].nomad_job,
                credentials=settings.credentials,
            ),
            DELIVERIES,
        )
    ours.send("stop")
    children = ours.recv()
    server.join(timeout=10)
    for status, count in [*paced_statuses.items(), *capped_statuses.items()]:
        statuses[status] = statuses.get(status, 0) + count
    p50, p99 = percentile(samples, 0.50), percentile(samples, 0.99)
    q50, q99 = percentile(paced, 0.50), percentile(paced, 0.99)
    h50, i50 = percentile(health, 0.50), percentile(ignored, 0.50)
    c50 = percentile(capped, 0.50)
    print(f"Workers runtime (wrangler 3.92.0, local), {DELIVERIES} signed deliveries per line:")
    print(f"  statuses {statuses}, Nomad children created {children}")
    print(f"  dispatch, paced 20 ms   p50 {q50:.2f} ms   p99 {q99:.2f} ms   (goal: p50 < 10 ms)")
    print(f"  dispatch, back to back  p50 {p50:.2f} ms   p99 {p99:.2f} ms")
    print(f"  baseline GET /healthz   p50 {h50:.2f} ms   paced dispatch ratio {q50 / h50:.2f}x")
    print(f"  signed GitHub-hosted delivery (ignored, no I/O) p50 {i50:.2f} ms")
    print(f"  pool at its cap (one capacity read, deferred), paced p50 {c50:.2f} ms")
    print(f"  cold start to first 200 (includes wrangler start): {cold:.1f} s")
    r0, r1, r2 = (percentile(reads[count], 0.50) for count in (0, 1, 2))
    print("One capacity read (GET job summary at the stand-in), p50:")
    print(f"  from CPython, new connection each      {percentile(fresh, 0.50):.2f} ms")
    print(f"  from CPython, one kept-alive connection {percentile(kept, 0.50):.2f} ms")
    print(
        f"  from inside the Worker (FetchTransport) {r1 - r0:.2f} ms"
        f"   (two reads: {r2 - r0:.2f} ms; route with no read {r0:.2f} ms)"
    )
    print(
        f"  dispatch (2 requests) minus ignored delivery: {q50 - i50:.2f} ms paced,"
        f" {p50 - i50:.2f} ms back to back; at the cap (1 request): {c50 - i50:.2f} ms"
    )


if __name__ == "__main__":
    main()
