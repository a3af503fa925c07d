"""Benchmark: CPU time per invocation of the dispatch Worker, beside the Workers Free plan's 10 ms.

Runs the Worker in the real local Workers runtime (wrangler 3.92.0, Pyodide 0.26: what production
runs at the compatibility date 2025-08-14) against the Nomad and GitHub stand-ins, and measures the
CPU time the Worker's ``workerd`` process spends on each invocation: its process CPU clock
(``clock_gettime`` on the process's CPU-time clock, nanoseconds, every thread) read when the
process is idle before the request and again once it is idle after the answer, so work deferred
with ``waitUntil`` (the ledger write) is counted too. Waiting on I/O costs no CPU there, as in
Cloudflare's accounting. The figure is an upper bound of what Cloudflare would count: the process
also parses HTTP, runs the local KV simulator and drives the sockets of outbound requests, work
that in production happens outside the isolate. Inside the Worker no clock can measure it:
``time.perf_counter``, ``time.process_time`` and ``time.monotonic`` stand still while the Worker
computes (the runtime's timer mitigation; checked in this runtime, where a loop of 3 million
additions read 0.0 ms on all three).

Cases: ``GET /healthz`` (the floor of any request through the entry), one signed delivery of a
GitHub-hosted job (verify + parse + decide, no I/O), one signed queued self-hosted delivery
(verify + parse + decide + the fork check's run lookup at the GitHub stand-in, each job of a run
of its own + capacity read + dispatch at the Nomad stand-in + ledger write), one ``completed``
delivery at a full pool (``gpu``, cap 1) with one job deferred, whose work after the answer
(``waitUntil``) records the completion and fills the freed slot (the finished runner's
allocation read, the deferred index's list, the job's ledger read and GitHub lookup, the
dispatch, the job's ledger read, write and index delete: the operations a Free-plan completion
spends on its own slot; the deferred job's queued delivery, before each, is not counted), and one
reconciler run (``Default.scheduled``) over 20 repositories whose runs lists hold 0, 10 or 100
runs of GitHub's full size (``GitHubStandIn(full_run_objects=True)``), each run in progress with
one job in progress (nothing to dispatch: the cost of looking). Before each case the Cron handler
runs until the rotation has visited every repository (each list's ETag is in KV); then "every
list changed" moves every run on before each measured run (each list answers 200 with a body),
"no list changed" does not (each list the reconciler kept an ETag for answers 304). Each case
runs with ``RECONCILE_PLAN`` = ``free`` and ``paid`` (``[reconcile] plan``): with no request
budget set, ``free`` is 10 requests and runs lists of 20, ``paid`` (the bound before the plan
setting) 40 requests and lists of 100. The breakdown lines use the test adapter's route that
reads the bindings and sends N capacity reads through the entry's ``FetchTransport``: N = 0 is
its floor, and (N = 10 minus the floor) / 10 the cost of one outbound request.

The local machine's CPU is not Cloudflare's: compare the figures with each other and with the
limit's order of magnitude, not to the tenth of a millisecond.
Run: ``.venv/bin/python bench/cpu_budget.py [deliveries] [reconciler runs]``.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.contract import Routing
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    ROUTING_DOCUMENT,
    Delivery,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)
from tests.worker_runtime.harness import LocalWorker

DELIVERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 100
RECONCILER_RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
REPOSITORIES = [f"octo-org/service-{index:02d}" for index in range(20)]
DELIVERED_TO = REPOSITORIES[0]  # the deliveries' repository: one of the 20
RUNS_PER_LIST = (0, 10, 100)
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


def measure(clock: CpuClock, invoke: Callable[[], int], times: int, expect: int) -> list[float]:
    samples = []
    for _ in range(times):
        before = clock.idle()
        status = invoke()
        assert status == expect, f"status {status}, expected {expect}"
        samples.append((clock.idle() - before) / 1e6)
    return samples


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

    def get(self, path: str) -> int:
        self.connection.request("GET", path)
        return self._status()

    def post(self, sent: Delivery) -> int:
        self.connection.request("POST", sent.path, body=sent.body, headers=sent.headers)
        return self._status()

    def _status(self) -> int:
        response = self.connection.getresponse()
        response.read()
        return response.status

    def cpu(self, invoke: Callable[[], int], times: int, expect: int) -> list[float]:
        return measure(self.clock, invoke, times, expect)


def delivery_rows(session: Session, github: GitHubStandIn) -> list[tuple[str, list[float]]]:
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
        (
            "GET /healthz (floor of a request)",
            session.cpu(lambda: session.get("/healthz"), DELIVERIES, 200),
        ),
        (
            "delivery: verify + parse + decide (GitHub-hosted job)",
            session.cpu(lambda: session.post(next(hosted)), DELIVERIES, 200),
        ),
        (
            "delivery: + fork check + capacity read + dispatch + ledger write",
            session.cpu(lambda: session.post(next(queued)), DELIVERIES, 202),
        ),
    ]


GPU = ("self-hosted", "linux", "x64", "gpu")


def completion_rows(
    session: Session, github: GitHubStandIn, nomad: NomadStandIn
) -> list[tuple[str, list[float]]]:
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
    samples = []
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
        samples.extend(
            session.cpu(
                lambda sent=done: session.post(delivery(sent, repository=DELIVERED_TO)), 1, 200
            )
        )
        child_of(waiting)  # the freed slot went to the deferred job
        nomad.set_status(child.id, "dead")
    return [("completion at the cap: record + fill its slot (8 operations)", samples)]


def breakdown_rows(session: Session) -> list[tuple[str, list[float]]]:
    """What one outbound request costs in this process, beside the route's own floor."""
    reads = 10
    floor = session.cpu(lambda: session.get("/__test/nomad-reads/0"), DELIVERIES, 200)
    fetches = session.cpu(lambda: session.get(f"/__test/nomad-reads/{reads}"), DELIVERIES, 200)
    base = statistics.median(floor)
    return [
        ("test route: bindings read, no request (its floor)", floor),
        (
            "  + one outbound request (FetchTransport), each",
            [(sample - base) / reads for sample in fetches],
        ),
    ]


def reconciler_rows(
    session: Session, github: GitHubStandIn, plan: str
) -> list[tuple[str, list[float]]]:
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
            rows.append((f"{name}, every list changed", session.cpu(changed, RECONCILER_RUNS, 200)))
            prime()
        rows.append((f"{name}, no list changed", session.cpu(run, RECONCILER_RUNS, 200)))
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
    rows: list[tuple[str, list[float]]] = []
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
                for job in warm_up:  # Pyodide, imports, the routing cache
                    session.post(delivery(job, repository=DELIVERED_TO))
                    session.get("/healthz")
                if plan == "free":
                    rows.extend(delivery_rows(session, github))
                    rows.extend(completion_rows(session, github, nomad))
                    rows.extend(breakdown_rows(session))
                rows.extend(reconciler_rows(session, github, plan))
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


def print_table(rows: list[tuple[str, list[float]]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(
        "CPU per invocation, local Workers runtime (wrangler 3.92.0, Pyodide 0.26),"
        f" {DELIVERIES} deliveries / {RECONCILER_RUNS} reconciler runs per line"
    )
    print(f"  {'case':<{width}}  median ms   p95 ms   Free plan limit")
    for name, samples in rows:
        median, p95 = statistics.median(samples), percentile(samples, 0.95)
        verdict = "within" if p95 < FREE_PLAN_CPU_MS else "over"
        print(
            f"  {name:<{width}}  {median:9.2f}  {p95:7.2f}   {FREE_PLAN_CPU_MS:.0f} ms ({verdict})"
        )


if __name__ == "__main__":
    main()
