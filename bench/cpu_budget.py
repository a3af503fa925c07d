"""Benchmark: CPU time per invocation of the dispatch Worker, beside the Workers Free plan's 10 ms.

Runs the Worker in the real local Workers runtime (wrangler 3.92.0, Pyodide 0.26: what production
runs at the compatibility date 2025-08-14) against the Nomad and GitHub stand-ins, and measures the
CPU time the Worker's ``workerd`` process spends on each invocation: its process CPU clock
(``clock_gettime`` on the process's CPU-time clock, nanoseconds, every thread) read when the
process is idle before the request and again once it is idle after the answer, so work deferred
with ``waitUntil`` (a ledger write) is counted too. Inside the Worker no clock can measure it:
``time.perf_counter``, ``time.process_time`` and ``time.monotonic`` stand still while the Worker
computes (the runtime's timer mitigation; checked in this runtime, where a loop of 3 million
additions read 0.0 ms on all three), and the local runtime reports no CPU time of its own (its
trace outcome carries 0: workerd ``src/workerd/server/server.c++``).

What Cloudflare counts (workerd ``src/workerd/io/limit-enforcer.h``, ``io-context.c++``): the
CPU limit is enforced by ``LimitEnforcer::enterJs``, a scope opened each time the runtime
enters the isolate to run the Worker's code (``IoContext::runImpl``: the callback and its
microtasks) and closed before the isolate lock is released. Waiting on a subrequest or a KV
operation happens outside that scope (those are counted as operations, ``newSubrequest`` and
``newKvRequest``, not as CPU); the sockets, HTTP parsing and KV service behind them run outside
the isolate. The process clock read here counts all of that as well: in the local runtime the
KV simulator is another worker in the same ``workerd`` process.

So each case is measured twice per sample, in the same process: the invocation itself (raw),
then a baseline that makes exactly the same outbound requests and KV calls with none of the
handler's work (the adapter's ``/__test/io/arm`` records every call of the entry's
``FetchTransport`` and ``KvLedger`` during the invocation, ``/__test/io/replay`` makes them again
through the same classes and drops the answers). own = raw - baseline is the handler's own CPU:
verifying, parsing, deciding, the reconciler's and ``/status``'s logic, JSON, the entry's
request and answer. What Cloudflare counts lies between own and raw: it adds to own the
isolate's share of each I/O call (building the JS request, converting the answer to Python
bytes and KV results to Python values), which the baseline holds together with the local
simulation and cannot tell apart from it. A control line (a test route with no I/O against its
empty replay) shows the method's noise.

Cases: the control, ``GET /healthz`` (the floor of any request through the entry), one signed
delivery of a GitHub-hosted job (verify + parse + decide, no I/O), one signed queued self-hosted
delivery (verify + parse + decide + the job's ledger read + the fork check's run lookup at the
GitHub stand-in, each job of a run of its own + capacity read + dispatch at the Nomad stand-in), one
``completed`` delivery at a full pool (``gpu``, cap 1) with one job deferred, whose work after the
answer (``waitUntil``) records the completion and fills the freed slot (the finished runner's
allocation read, the deferred index's list, the job's ledger read and GitHub lookup, the dispatch,
the job's ledger read, write and index delete: the operations a Free-plan completion spends on its
own slot; the deferred job's queued delivery, before each, is not counted), one reconciler run
(``Default.scheduled``) over 20 repositories whose runs lists hold 0, 10 or 100 runs of GitHub's
full size (``GitHubStandIn(full_run_objects=True)``), each run in progress with one job in progress
(nothing to dispatch: the cost of looking), and ``GET /status`` computed afresh on ledgers of 0, 50,
1,000 and 3,000 records (``bench/status_ledger.py``'s records, stored as the Worker stores them).
Before each reconciler case the Cron handler runs until the rotation has visited every repository
(each list's ETag is in KV); then "every list changed" moves every run on before each measured run
(each list answers 200 with a body), "no list changed" does not (each list the reconciler kept an
ETag for answers 304). Each case runs with ``RECONCILE_PLAN`` = ``free`` and ``paid`` (``[reconcile]
plan``).

The local machine's CPU is not Cloudflare's: compare the figures with each other and with the
limit's order of magnitude, not to the tenth of a millisecond.
Run: ``.venv/bin/python bench/cpu_budget.py [deliveries] [reconciler runs] [sections]``
(sections: a comma-separated subset of control,deliveries,reconciler,status; default all).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.status_ledger import CountingLedger
from bench.status_ledger import fill as fill_ledger
from handler.contract import Routing
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    ROUTING_DOCUMENT,
    Delivery,
    bindings,
    delivery,
    register_pools,
    status_headers,
    workflow_job,
)
from tests.worker_runtime.harness import LocalWorker

DELIVERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 100
RECONCILER_RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
SECTIONS = ("control", "deliveries", "reconciler", "status")
CHOSEN = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else set(SECTIONS)
assert not CHOSEN - set(SECTIONS), f"sections: {', '.join(SECTIONS)}"
REPOSITORIES = [f"octo-org/service-{index:02d}" for index in range(20)]
DELIVERED_TO = REPOSITORIES[0]  # the deliveries' repository: one of the 20
RUNS_PER_LIST = (0, 10, 100)
STATUS_RECORDS = (0, 50, 1_000, 3_000)
STATUS_SAMPLES = 15
FREE_PLAN_CPU_MS = 10.0
# The process counts as idle once its CPU clock moves less than this over one poll interval.
IDLE_NS_PER_POLL = 50_000
POLL_SECONDS = 0.03


def _process_group(pgid: int) -> list[tuple[int, str]]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append((int(entry), cmdline))
    return members


def worker_process(worker: LocalWorker) -> int:
    """The ``workerd`` running the Worker; the other one serves wrangler's dev proxy on the port."""
    assert worker.process is not None
    candidates = [
        pid
        for pid, cmdline in _process_group(worker.process.pid)
        if "workerd" in cmdline.split(" ", 1)[0] and f"entry=127.0.0.1:{worker.port}" not in cmdline
    ]
    assert len(candidates) == 1, f"expected one Worker workerd, found {candidates}"
    return candidates[0]


class CpuClock:
    """The CPU time of another process, in nanoseconds (Linux process CPU-time clock id)."""

    def __init__(self, pid: int) -> None:
        # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED) from the kernel's posix-timers.h.
        self.clock_id = ((~pid) << 3) | 2

    def now(self) -> int:
        return time.clock_gettime_ns(self.clock_id)

    def idle(self) -> int:
        """Wait until the process stops computing; its clock then."""
        last = self.now()
        while True:
            time.sleep(POLL_SECONDS)
            current = self.now()
            if current - last < IDLE_NS_PER_POLL:
                return current
            last = current


@dataclass
class Row:
    """One case: per sample, the invocation's CPU and its I/O replay's, in milliseconds."""

    name: str
    raw: list[float]
    baseline: list[float]
    fetches: int  # outbound requests of the last sample (its replay's count)
    kv_calls: int

    @property
    def own(self) -> list[float]:
        return [raw - base for raw, base in zip(self.raw, self.baseline, strict=True)]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fill(github: GitHubStandIn, runs_per_list: int) -> None:
    """Each repository: ``runs_per_list`` runs in progress, each with one job in progress."""
    with github._lock:
        github.runs.clear()
        github.jobs.clear()
    for number, repository in enumerate(REPOSITORIES):
        for index in range(runs_per_list):
            run_id = 1_000_000 * (number + 1) + index
            job = workflow_job(job_id=run_id, run_id=run_id, repository=repository)
            github.queue_job(repository, job["workflow_job"])
            github.set_job_status(run_id, "in_progress")


class Session:
    """One keep-alive connection to the Worker and the CPU clock of its process."""

    def __init__(self, worker: LocalWorker) -> None:
        self.clock = CpuClock(worker_process(worker))
        self.connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=60)
        # Cron runs five minutes apart, as the default schedule fires them: the reconciler's
        # rotation takes its place from the scheduled time.
        self.scheduled_ms = int(time.time() // 300 * 300_000)

    def scheduled(self) -> int:
        """One Cron Trigger run (the next one of ``*/5 * * * *``)."""
        self.scheduled_ms += 300_000
        return self.get(f"/__test/scheduled?time={self.scheduled_ms}")  # cron: */5 by default

    def get(self, path: str, headers: dict[str, str] | None = None) -> int:
        self.connection.request("GET", path, headers=headers or {})
        return self._status()

    def post(self, sent: Delivery) -> int:
        self.connection.request("POST", sent.path, body=sent.body, headers=sent.headers)
        return self._status()

    def _status(self) -> int:
        response = self.connection.getresponse()
        response.read()
        return response.status

    def post_json(self, path: str, document: object) -> int:
        self.connection.request("POST", path, body=json.dumps(document).encode())
        return self._status()

    def replay(self) -> dict[str, int]:
        self.connection.request("GET", "/__test/io/replay")
        response = self.connection.getresponse()
        counts: dict[str, int] = json.loads(response.read())
        assert response.status == 200, response.status
        return counts

    def cpu(self, name: str, invoke: Callable[[], int], times: int, expect: int) -> Row:
        """``times`` samples of ``invoke``, each followed by its I/O replay, both measured."""
        row = Row(name, [], [], 0, 0)
        for _ in range(times):
            self.get("/__test/io/arm")  # also empties the /status cache
            before = self.clock.idle()
            status = invoke()
            after = self.clock.idle()
            assert status == expect, f"{name}: status {status}, expected {expect}"
            counts = self.replay()
            replayed = self.clock.idle()
            assert counts["errors"] == 0, f"{name}: the replay failed: {counts}"
            row.raw.append((after - before) / 1e6)
            row.baseline.append((replayed - after) / 1e6)
            row.fetches, row.kv_calls = counts["fetch"], counts["kv"]
        return row


def control_row(session: Session) -> Row:
    """The method's own noise: a test route with no I/O against its (empty) replay."""
    return session.cpu(
        "control: a test route, no I/O (own should read ~0)",
        lambda: session.get("/__test/io/arm"),
        DELIVERIES,
        200,
    )


def delivery_rows(session: Session, github: GitHubStandIn) -> list[Row]:
    hosted = iter(
        [
            delivery(
                workflow_job(labels=["ubuntu-latest"], repository=DELIVERED_TO),
                repository=DELIVERED_TO,
            )
            for _ in range(DELIVERIES)
        ]
    )
    # Each job of a run of its own, known to GitHub: every delivery pays the fork check's run
    # lookup (the Worker keeps a run's verdict, so jobs of one run would share one lookup).
    jobs = [
        workflow_job(job_id=20_000_000 + index, run_id=30_000_000 + index, repository=DELIVERED_TO)
        for index in range(DELIVERIES)
    ]
    for job in jobs:
        github.queue_job(DELIVERED_TO, job["workflow_job"])
    queued = iter([delivery(job, repository=DELIVERED_TO) for job in jobs])
    return [
        session.cpu(
            "GET /healthz (floor of a request through the entry)",
            lambda: session.get("/healthz"),
            DELIVERIES,
            200,
        ),
        session.cpu(
            "delivery: verify + parse + decide (GitHub-hosted job)",
            lambda: session.post(next(hosted)),
            DELIVERIES,
            200,
        ),
        session.cpu(
            "delivery: + ledger read + fork check + capacity read + dispatch",
            lambda: session.post(next(queued)),
            DELIVERIES,
            202,
        ),
    ]


GPU = ("self-hosted", "linux", "x64", "gpu")


def completion_row(session: Session, github: GitHubStandIn, nomad: NomadStandIn) -> Row:
    """A completion at the ``gpu`` pool's cap (1) that gives its slot to the one deferred job."""
    parent = "github-runner-gpu"

    def job(job_id: int) -> dict[str, Any]:
        payload = workflow_job(job_id=job_id, run_id=job_id, labels=GPU, repository=DELIVERED_TO)
        github.queue_job(DELIVERED_TO, payload["workflow_job"])
        return payload

    def child_of(job_id: int) -> Any:
        (child,) = [c for c in nomad.children(parent) if c.idempotency_token == str(job_id)]
        return child

    first = 40_000_000
    assert session.post(delivery(job(first), repository=DELIVERED_TO)) == 202  # takes the slot
    row = Row("completion at the cap: record + fill its slot (8 operations)", [], [], 0, 0)
    for index in range(1, DELIVERIES + 1):
        finishing, waiting = first + index - 1, first + index
        child = child_of(finishing)
        nomad.set_status(child.id, "running")  # its deregister task still runs
        assert session.post(delivery(job(waiting), repository=DELIVERED_TO)) == 202  # deferred
        done = workflow_job(
            "completed",
            job_id=finishing,
            run_id=finishing,
            labels=GPU,
            repository=DELIVERED_TO,
            conclusion="success",
            runner_id=7,
        )
        done["workflow_job"]["runner_name"] = nomad.runner_name(child.id, "gpu")
        github.set_job_status(finishing, "completed", "success", runner_id=7)
        sample = session.cpu(
            row.name,
            lambda sent=done: session.post(delivery(sent, repository=DELIVERED_TO)),
            1,
            200,
        )
        row.raw.extend(sample.raw)
        row.baseline.extend(sample.baseline)
        row.fetches, row.kv_calls = sample.fetches, sample.kv_calls
        child_of(waiting)  # the freed slot went to the deferred job (the replay reused its token)
        nomad.set_status(child.id, "dead")
    return row


def reconciler_rows(session: Session, github: GitHubStandIn, plan: str) -> list[Row]:
    rows = []

    def run() -> int:
        return session.scheduled()

    def changed() -> int:
        github.touch_runs()
        return run()

    def prime() -> None:
        """Enough runs for the rotation to visit every repository: each list's ETag is in KV."""
        for _ in range(len(REPOSITORIES) + 2):
            run()

    for runs in RUNS_PER_LIST:
        fill(github, runs)
        prime()
        name = f"reconciler, plan {plan}: 20 repositories, {runs} runs"
        if runs:  # an empty list never changes
            rows.append(session.cpu(f"{name}, every list changed", changed, RECONCILER_RUNS, 200))
            prime()
        rows.append(session.cpu(f"{name}, no list changed", run, RECONCILER_RUNS, 200))
    return rows


def ledger_entries(count: int) -> list[list[str | None]]:
    """``count`` realistic ledger records as the Worker stores them: key, value, metadata."""
    ledger = CountingLedger()
    fill_ledger(ledger, count)
    return [[key, value, metadata] for key, (value, _, metadata) in ledger._entries.items()]


def status_rows(session: Session, plan: str, nomad: NomadStandIn, routing: Routing) -> list[Row]:
    """``GET /status`` computed afresh (the isolate's cache emptied) on ledgers of growing size.

    A complete answer also reads each pool's live children from Nomad; the deliveries above left
    100-odd children pending (the bench's pools have no cap), so they are ended first: each
    pool's read answers an empty list, as on a quiet cluster."""
    for pool in routing.pools:
        for child in nomad.children(pool.nomad_job):
            nomad.set_status(child.id, "dead")
    rows = []
    entries = ledger_entries(max(STATUS_RECORDS))
    stored = 0
    for records in STATUS_RECORDS:
        for first in range(stored, records, 500):
            batch = entries[first : min(records, first + 500)]
            assert session.post_json("/__test/kv-fill", batch) == 200
        stored = records
        rows.append(
            session.cpu(
                f"GET /status, plan {plan}: {records:,} ledger records",
                lambda: session.get("/status", status_headers()),
                STATUS_SAMPLES,
                200,
            )
        )
    return rows


def main() -> None:
    document = json.loads(json.dumps(ROUTING_DOCUMENT))
    for pool in document["pools"]:
        pool["max_runners"] = 1_000_000  # every queued delivery takes the full dispatch path
    document["repositories"] = {repository: ["linux-x64"] for repository in REPOSITORIES}
    # One pool at a cap of 1, for the completion case.
    (gpu,) = [pool for pool in document["pools"] if pool["name"] == "gpu"]
    gpu["max_runners"] = 1
    document["repositories"][DELIVERED_TO] = ["linux-x64", "gpu"]
    routing = Routing.from_document(document)
    grants = {ACTIONS_READ_TOKEN: {name: "actions_read" for name in REPOSITORIES}}
    rows: list[Row] = []
    with (
        NomadStandIn() as nomad,
        GitHubStandIn(tokens=grants, full_run_objects=True) as github,
    ):
        # A fresh hour's quota on every answer: thousands of bench requests must not read as a
        # quota running low (the reconciler would stop after one request).
        github.rate_limit_remaining = 5000
        register_pools(nomad, routing)
        for plan in ("free", "paid"):
            values = bindings(nomad.url) | {
                "ROUTING": routing.to_json(),
                "GITHUB_API_URL": github.url,
                "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
                "RECONCILE_PLAN": plan,
            }
            with (
                tempfile.TemporaryDirectory(prefix="bench-cpu-") as work,
                LocalWorker(values, Path(work)) as worker,
            ):
                session = Session(worker)
                warm_up = [
                    workflow_job(job_id=10_000_000 + i, run_id=11_000_000, repository=DELIVERED_TO)
                    for i in range(10)
                ]
                github.queue_job(DELIVERED_TO, warm_up[0]["workflow_job"])
                for job in warm_up:  # Pyodide, imports, the routing cache, the replay route
                    session.post(delivery(job, repository=DELIVERED_TO))
                    session.get("/healthz")
                    session.get("/__test/io/arm")
                    session.replay()
                if plan == "free" and "control" in CHOSEN:
                    rows.append(control_row(session))
                if plan == "free" and "deliveries" in CHOSEN:
                    rows.extend(delivery_rows(session, github))
                    rows.append(completion_row(session, github, nomad))
                if "reconciler" in CHOSEN:
                    rows.extend(reconciler_rows(session, github, plan))
                if "status" in CHOSEN:
                    rows.extend(status_rows(session, plan, nomad, routing))
                reports = [
                    json.loads(line)
                    for line in worker.output().splitlines()
                    if line.startswith("{") and '"reconcile"' in line
                ]
                stops = sorted({str(report.get("stopped")) for report in reports})
                sent = sorted({report.get("github_requests") for report in reports})
                print(f"plan {plan}: reconciler runs sent {sent} GitHub requests, stopped: {stops}")
                # Every run must be the full run of its plan, not one cut short by a fault.
                assert set(stops) <= {"None", "budget"}, stops
                session.connection.close()
    print_table(rows)


def print_table(rows: list[Row]) -> None:
    width = max(len(row.name) for row in rows)
    print(
        "CPU per invocation, local Workers runtime (wrangler 3.92.0, Pyodide 0.26),"
        f" {DELIVERIES} deliveries / {RECONCILER_RUNS} reconciler runs /"
        f" {STATUS_SAMPLES} status answers per line; ms of the workerd process's CPU"
    )
    print(
        "  raw: the invocation; I/O: the same requests and KV calls replayed with none of the"
        " handler's work;\n  own = raw - I/O per sample: the handler's own CPU (Free plan: 10 ms)"
    )
    print(
        f"  {'case':<{width}}  fetch  KV   raw p50   I/O p50   own p50   own p95"
        "   raw/I/O  own p95 vs 10 ms"
    )
    for row in rows:
        raw, base = statistics.median(row.raw), statistics.median(row.baseline)
        own, own_p95 = statistics.median(row.own), percentile(row.own, 0.95)
        verdict = "within" if own_p95 < FREE_PLAN_CPU_MS else "over"
        ratio = raw / base if base > 0 else float("inf")
        print(
            f"  {row.name:<{width}}  {row.fetches:5d} {row.kv_calls:3d}  {raw:8.2f}  {base:8.2f}"
            f"  {own:8.2f}  {own_p95:8.2f}  {ratio:8.2f}  {verdict}"
        )


if __name__ == "__main__":
    main()
