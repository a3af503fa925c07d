"""Benchmark: the issue-5 burst (1,000 queued jobs, 50 repositories, 20 % redelivered, completed
events out of order: 2,200 deliveries) through three setups, printing throughput and checking
that the Nomad stand-in saw exactly 1,000 dispatched children, none twice:

1. the handler core under CPython, Nomad's rules in-process (``DirectNomad``): the baseline;
2. the CPython local server (``handler.local_server``) over HTTP to the Nomad stand-in over HTTP;
3. the real local Workers runtime (wrangler 3.92.0, workerd, Pyodide; KV persisted on disk) to
   the Nomad stand-in over HTTP.

Setups 2 and 3 are driven by 8 client threads. Figures are events per second of wall time for
the whole burst, and the ratio to the baseline measured in this same process.
Run: ``.venv/bin/python bench/burst.py [JOBS]`` (default 1000).
"""

from __future__ import annotations

import asyncio
import http.client
import io
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.local_server import MemoryLedger, UrllibTransport, make_server
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.standins.burst import Burst, DirectNomad, burst, burst_routing, children_by_token
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import Delivery, bindings, register_pools
from tests.worker_runtime.harness import LocalWorker

JOBS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
REPOSITORIES = 50
CLIENTS = 8


def check(nomad: NomadStandIn, events: Burst, label: str) -> None:
    tokens = children_by_token(nomad)
    duplicates = sum(count - 1 for count in tokens.values())
    lost = len(set(map(str, events.job_ids)) - set(tokens))
    print(f"  {label}: children {len(tokens)}, duplicates {duplicates}, lost {lost}")
    assert len(tokens) == len(events.job_ids) and duplicates == 0 and lost == 0


def core(events: Burst) -> float:
    routing = burst_routing(REPOSITORIES)
    nomad = NomadStandIn()
    register_pools(nomad, routing)
    values = bindings("http://nomad.invalid") | {"ROUTING": routing.to_json()}
    settings = settings_from_bindings(values.get)
    ports = Ports(DirectNomad(nomad), MemoryLedger(), time.monotonic)

    async def run() -> None:
        for start in range(0, len(events.deliveries), 100):
            chunk = events.deliveries[start : start + 100]
            await asyncio.gather(
                *(
                    handle(
                        IncomingRequest("POST", sent.path, sent.headers, sent.body),
                        settings,
                        ports,
                        datetime.now(UTC),
                    )
                    for sent in chunk
                )
            )

    started = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - started
    check(nomad, events, "core")
    return len(events.deliveries) / seconds


def over_http(port: int, deliveries: list[Delivery]) -> float:
    local = threading.local()

    def post(sent: Delivery) -> int:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        local.connection.request("POST", sent.path, body=sent.body, headers=sent.headers)
        response = local.connection.getresponse()
        response.read()
        return response.status

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        statuses = list(pool.map(post, deliveries))
    seconds = time.perf_counter() - started
    bad = [status for status in statuses if status not in (200, 202)]
    assert not bad, f"unexpected statuses: {sorted(set(bad))}"
    return len(deliveries) / seconds


def local_server(events: Burst) -> float:
    routing = burst_routing(REPOSITORIES)
    with NomadStandIn() as nomad:
        register_pools(nomad, routing)
        values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
        ports = Ports(UrllibTransport(), MemoryLedger(), time.monotonic)
        server = make_server(settings_from_bindings(values.get), ports, port=0, log=io.StringIO())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            rate = over_http(server.server_address[1], events.deliveries)
        finally:
            server.shutdown()
            server.server_close()
        check(nomad, events, "CPython local server")
    return rate


def workers_runtime(events: Burst) -> float:
    routing = burst_routing(REPOSITORIES)
    with NomadStandIn() as nomad, tempfile.TemporaryDirectory(prefix="bench-burst-") as work:
        register_pools(nomad, routing)
        values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
        with LocalWorker(values, Path(work)) as worker:
            rate = over_http(worker.port, events.deliveries)
        check(nomad, events, "Workers runtime")
    return rate


def main() -> None:
    events = burst(jobs=JOBS, repositories=REPOSITORIES, redelivered=0.2)
    print(
        f"burst: {JOBS} jobs, {REPOSITORIES} repositories, {len(events.deliveries)} deliveries "
        f"({events.redelivered} redelivered, {events.completed_before_queued} completed before "
        "their queued)"
    )
    baseline = core(events)
    served = local_server(events)
    runtime = workers_runtime(events)
    print(f"{'setup':<42} {'events/s':>9} {'vs core':>8}")
    for label, rate in (
        ("handler core, CPython, in-process Nomad", baseline),
        ("CPython local server, HTTP, 8 clients", served),
        ("local Workers runtime, HTTP, 8 clients", runtime),
    ):
        print(f"{label:<42} {rate:>9.0f} {rate / baseline:>8.2f}")


if __name__ == "__main__":
    main()
