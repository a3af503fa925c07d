"""Benchmark: bursts at a pool's cap in compressed (simulated) time, reconciler-only vs freed slots.

A burst of N jobs (N = 20, 100; in runs of 10 jobs over two repositories) is queued at t = 0 on
one pool of cap C (C = 2, 4, 10); each job runs D seconds: fixed (60 s, 180 s) or drawn from a
long-tailed distribution (lognormal, median 60 s, sigma 1, seeded). Everything that decides runs
for real: every delivery goes through ``service.handle`` (signature, parse, decide, cap, ledger,
the freed-slot dispatch after the answer), every reconciler run through ``reconcile.reconcile``,
against the Nomad stand-in's rules and the GitHub stand-in's runs/jobs endpoints, both called
in-process; the in-memory ledger is KV's model (lexicographic list pages). Only the clock is
simulated, and the world around the Worker:

* a dispatched child becomes a registered, idle runner S = 10 s later (placement, image cached,
  JIT registration); GitHub gives an idle runner the oldest queued job at once (one runner per
  job: GitHub may give any idle runner any matching job, only the count holds). The jobs of a
  burst share one ``created_at``, so the deferred index (by ``created_at``, then repository)
  and GitHub's order (job id) differ: runners often take jobs they were not dispatched for;
* the job's ``in_progress`` delivery carries ``started_at``; D seconds later its ``completed``
  delivery arrives, and the runner's allocation runs its deregister task R = 5 s more, still
  counted by Nomad (the race the design handles);
* the Cron Trigger runs the reconciler every 5 minutes, its first run 150 s after the burst (the
  average phase).

Freed slots run with ``[reconcile] plan`` "free" (a completion spends at most 18 operations on
its slot, 4 candidates) and "paid" (40, 16). "reconciler only" is the same core with the deferred
index hidden from it (its list answers
empty), which is what it did before: a deferred job waited for a reconciler run.

Completions that arrive at the same instant (C runners of fixed D finish together) are handled
one after another by default: each completion's work after the answer ends before the next
delivery, as when deliveries are a fill's length apart (a few hundred ms of round trips). With
``--overlap`` their work runs concurrently, interleaved at every outbound request, as isolates
handling them at the same moment would: the worst case, where their fills list the same queue.

Ideal: the same jobs, FIFO, on C slots that each take the next job the moment a job ends, paying
the same S per runner: makespan, and each job's wait (created_at to started_at). Printed: makespan
/ ideal, p50 and p95 wait against the ideal's, peak Nomad count (pending + running children;
up to cap + the runners finishing at that moment, whose allocations still deregister beside
their successors), dispatches (N when every job got exactly one runner; more: a spare, such as
the reconciler replacing the dead child of a job whose runner took another job, while another
runner is on its way for it; none twice is checked apart), ``owed`` (freed-slot dispatches for
jobs that had started on another job's runner), ``ops`` (the most operations one completion
spent: outbound requests and KV calls), and for each case whether the goal holds: makespan
within 1.05x of the ideal and p95 wait within one job duration (the median D) of the ideal's.
Run: ``.venv/bin/python bench/scheduling.py [--overlap]``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.contract import PoolRoute, Routing
from handler.deferred import DEFERRED_KEY_PREFIX
from handler.local_server import MemoryLedger
from handler.nomad import HttpRequest
from handler.reconcile import GitHubReadSettings, reconcile, run_slot
from handler.service import IncomingRequest, LedgerPage, Ports, handle, settings_from_bindings
from handler.status import percentile
from tests.standins.burst import DirectNomad
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import bindings, delivery, register_pools, workflow_job

LABELS = ("self-hosted", "linux", "x64")
PARENT = "github-runner-sim"
REPOSITORIES = ("sim-org/app", "sim-org/lib")
NOMAD_URL = "http://nomad.sim"
GITHUB_URL = "http://github.sim"
START_SECONDS = 10.0
DEREGISTER_SECONDS = 5.0
RECONCILE_EVERY = 300.0
RECONCILE_FIRST = 150.0
JOBS_PER_RUN = 10
# GitHub cancels a job after about 24 h in the queue: the simulation stops there.
HORIZON = 24 * 3600.0
EPOCH = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


class HiddenIndex(MemoryLedger):
    """The ledger as the core saw it before freed slots: no deferred index to list."""

    async def list(self, prefix: str, cursor: str | None) -> LedgerPage:
        if prefix.startswith(DEFERRED_KEY_PREFIX):
            return LedgerPage(entries=(), cursor=None)
        return await super().list(prefix, cursor)


class InProcess:
    """One transport for both services: Nomad's and GitHub's stand-in rules, no sockets.

    With ``interleave``, each request first yields to the event loop, as a request over the
    network does: work running concurrently then interleaves at every request."""

    def __init__(self, nomad: NomadStandIn, github: GitHubStandIn, *, interleave: bool) -> None:
        self.nomad = DirectNomad(nomad)
        self.github = github
        self.interleave = interleave

    async def send(self, request: HttpRequest) -> tuple[int, bytes]:
        if self.interleave:
            await asyncio.sleep(0)
        status, _, body = await self.exchange(request)
        return status, body

    async def exchange(self, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(request.url)
        if request.url.startswith(NOMAD_URL):
            status, body = await self.nomad.send(request)
            return status, {}, body
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {name.lower(): value for name, value in request.headers}
        status, answer, extra = self.github.handle(request.method, path, headers, None)
        return status, dict(extra), b"" if answer is None else json.dumps(answer).encode()


@dataclass
class Job:
    id: int
    repository: str
    run_id: int
    duration: float
    created: float = 0.0
    runner_name: str | None = None  # the runner GitHub gave it: ours carry their allocation id
    started: float | None = None
    completed: float | None = None


@dataclass
class World:
    """The simulated clock, the event queue and everything outside the Worker."""

    jobs: dict[int, Job]
    cap: int
    hide_index: bool
    plan: str = "free"  # [reconcile] plan: bounds the freed-slot work per completion
    # Deliveries of one instant have their work after the answer run concurrently (interleaved
    # at each request), as isolates handling completions that arrive together would; without
    # it, each completion's work ends before the next delivery.
    overlap: bool = False
    nomad: NomadStandIn = field(default_factory=NomadStandIn)
    github: GitHubStandIn = field(default_factory=lambda: GitHubStandIn(tokens={}))
    clock: float = 0.0
    events: list[tuple[float, int, Callable[[], Awaitable[None]]]] = field(default_factory=list)
    order: itertools.count[int] = field(default_factory=itertools.count)
    queued: list[int] = field(default_factory=list)  # GitHub's queue, oldest first
    known_children: set[str] = field(default_factory=set)
    peak_count: int = 0
    deferred_work: list[Coroutine[Any, Any, str]] = field(default_factory=list)
    fills: list[str] = field(default_factory=list)  # each completion's "filled: ..." report

    def __post_init__(self) -> None:
        routing = Routing(
            namespace="github-runners",
            pools=(PoolRoute("sim", frozenset(LABELS), PARENT, self.cap),),
            repositories={repository: ("sim",) for repository in REPOSITORIES},
            fork_pull_requests={repository: "allow" for repository in REPOSITORIES},
        )
        register_pools(self.nomad, routing)
        self.github.tokens = {ACTIONS_READ_TOKEN: dict.fromkeys(REPOSITORIES, "actions_read")}
        values = bindings(NOMAD_URL) | {
            "ROUTING": routing.to_json(),
            "GITHUB_API_URL": GITHUB_URL,
            "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
            "RECONCILE_PLAN": self.plan,
        }
        self.settings = settings_from_bindings(values.get)
        self.transport = InProcess(self.nomad, self.github, interleave=self.overlap)
        self.ledger = HiddenIndex() if self.hide_index else MemoryLedger()
        self.ports = Ports(
            transport=self.transport,
            ledger=self.ledger,
            monotonic=time.monotonic,
            defer=lambda _delivery, work: self.deferred_work.append(work),
        )

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.clock)

    def at(self, when: float, action: Callable[[], Awaitable[None]]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    def payload(self, job: Job, action: str, **extra: Any) -> dict[str, Any]:
        payload = workflow_job(
            action,
            job_id=job.id,
            run_id=job.run_id,
            repository=job.repository,
            labels=LABELS,
            created_at=EPOCH + timedelta(seconds=job.created),
            **extra,
        )
        if job.runner_name is not None and action != "queued":
            payload["workflow_job"]["runner_name"] = job.runner_name
        if job.started is not None:
            payload["workflow_job"]["started_at"] = (
                EPOCH + timedelta(seconds=job.started)
            ).strftime("%Y-%m-%dT%H:%M:%SZ")
        return payload

    async def deliver(self, job: Job, action: str, **extra: Any) -> None:
        sent = delivery(self.payload(job, action, **extra), repository=job.repository)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        await handle(request, self.settings, self.ports, self.now())
        if not self.overlap:
            await self.after_reply()

    async def after_reply(self) -> None:
        # waitUntil: the work after the answer runs at the same instant, before the next event
        # (with ``overlap``, the work of all the instant's deliveries together).
        while self.deferred_work:
            work, self.deferred_work = self.deferred_work, []
            outcomes = await asyncio.gather(*work)
            self.fills.extend(
                outcome.split("filled: ", 1)[1] for outcome in outcomes if "filled: " in outcome
            )
        self.notice_children()

    def notice_children(self) -> None:
        live = 0
        for child in self.nomad.children(PARENT):
            if child.status != "dead":
                live += 1
            if child.id not in self.known_children:
                self.known_children.add(child.id)
                self.at(self.clock + START_SECONDS, self.runner_ready(child.id))
        self.peak_count = max(self.peak_count, live)

    def runner_ready(self, child_id: str) -> Callable[[], Awaitable[None]]:
        async def ready() -> None:
            self.nomad.set_status(child_id, "running")
            if not self.queued:
                # An idle runner with nothing to take: exits at its idle timeout (never here).
                self.at(self.clock + 300, self.child_dead(child_id))
                return
            job = self.jobs[self.queued.pop(0)]
            job.started = self.clock
            job.runner_name = self.nomad.runner_name(child_id, "sim")
            self.github.set_job_status(job.id, "in_progress", runner_id=1)
            await self.deliver(job, "in_progress", runner_id=1)
            self.at(self.clock + job.duration, self.job_done(job, child_id))

        return ready

    def job_done(self, job: Job, child_id: str) -> Callable[[], Awaitable[None]]:
        async def done() -> None:
            job.completed = self.clock
            self.github.set_job_status(job.id, "completed", "success")
            await self.deliver(job, "completed", conclusion="success", runner_id=1)
            self.at(self.clock + DEREGISTER_SECONDS, self.child_dead(child_id))

        return done

    def child_dead(self, child_id: str) -> Callable[[], Awaitable[None]]:
        async def dead() -> None:
            self.nomad.set_status(child_id, "dead")

        return dead

    async def reconciler(self) -> None:
        read = GitHubReadSettings(GITHUB_URL, ACTIONS_READ_TOKEN)
        ports = Ports(self.transport, self.ledger, time.monotonic)
        slot = run_slot(self.now(), int(RECONCILE_EVERY // 60))  # as the Cron Trigger's time
        await reconcile(self.settings, read, ports, self.transport, self.now(), slot=slot)
        self.notice_children()
        if any(job.completed is None for job in self.jobs.values()):
            self.at(self.clock + RECONCILE_EVERY, self.reconciler)

    async def run(self) -> None:
        for job in self.jobs.values():
            payload = self.payload(job, "queued")
            self.github.queue_job(job.repository, payload["workflow_job"])
            self.queued.append(job.id)
        for job in self.jobs.values():
            await self.deliver(job, "queued")
        if self.overlap:
            await self.after_reply()
        self.at(RECONCILE_FIRST, self.reconciler)
        while (
            self.events
            and self.clock < HORIZON
            and any(job.completed is None for job in self.jobs.values())
        ):
            self.clock, _, action = heapq.heappop(self.events)
            await action()
            if self.overlap and not (self.events and self.events[0][0] == self.clock):
                await self.after_reply()


def ideal(jobs: list[Job], cap: int) -> tuple[float, list[float]]:
    """FIFO on ``cap`` slots, each taking the next job the moment its job ends, paying S."""
    free = [0.0] * cap
    waits, ends = [], []
    for job in jobs:
        slot = min(range(cap), key=free.__getitem__)
        start = free[slot] + START_SECONDS
        waits.append(start - job.created)
        free[slot] = start + job.duration
        ends.append(free[slot])
    return max(ends), waits


def make_jobs(count: int, durations: str, seed: int) -> list[Job]:
    rng = random.Random(seed)  # noqa: S311 - reproducible durations, not a secret
    jobs = []
    for n in range(count):
        if durations == "lognormal":
            duration = min(3600.0, rng.lognormvariate(0.0, 1.0) * 60.0)
        else:
            duration = float(durations)
        run = n // JOBS_PER_RUN
        jobs.append(
            Job(
                id=9_000_000 + n,
                repository=REPOSITORIES[run % len(REPOSITORIES)],
                run_id=8_000_000 + run,
                duration=duration,
            )
        )
    return jobs


def simulate(
    count: int,
    cap: int,
    durations: str,
    *,
    hide_index: bool,
    plan: str = "free",
    overlap: bool = False,
) -> dict[str, Any]:
    jobs = make_jobs(count, durations, seed=11 + count + cap)
    world = World({job.id: job for job in jobs}, cap, hide_index, plan, overlap)
    asyncio.run(world.run())
    makespan = max(HORIZON if job.completed is None else job.completed for job in jobs)
    waits = sorted((HORIZON if job.started is None else job.started) - job.created for job in jobs)
    tokens = [child.idempotency_token for child in world.nomad.children(PARENT)]
    return {
        "makespan": makespan,
        "p50": percentile(waits, 0.5),
        "p95": percentile(waits, 0.95),
        "peak": world.peak_count,
        "dispatches": len(tokens),
        "twice": len(tokens) - len(set(tokens)),
        "unfinished": sum(job.completed is None for job in jobs),
        "jobs": jobs,
        # The most operations one completion spent, and the dispatches for jobs that had
        # started on another job's runner (the runner they owed that job).
        "operations": max((_figure(fill, " operations)") for fill in world.fills), default=0),
        "owed": sum(_figure(fill, "owed ") for fill in world.fills),
    }


def _figure(report: str, label: str) -> int:
    """The number before ``label`` (``"9 operations)"``) or after it (``"owed 2"``) in a fill's
    log text."""
    if label.startswith(" "):
        return int(report.split(label, 1)[0].rsplit(" ", 1)[-1])
    return int(report.split(label, 1)[1].split(",", 1)[0])


def main() -> None:
    overlap = "--overlap" in sys.argv[1:]
    print(
        f"S = {START_SECONDS:.0f} s start, R = {DEREGISTER_SECONDS:.0f} s deregister, reconciler"
        f" every {RECONCILE_EVERY:.0f} s from t = {RECONCILE_FIRST:.0f} s; waits in seconds;"
        f" completions of one instant handled {'together' if overlap else 'one after another'}"
    )
    header = (
        f"{'N':>4} {'C':>3} {'D':>9} | {'behaviour':<16} {'makespan':>9} {'/ideal':>7} "
        f"{'p50':>7} {'p95':>7} {'ideal p50/p95':>14} {'peak':>5} {'runners':>8} {'owed':>5}"
        f" {'ops':>4} | goal"
    )
    print(header)
    print("-" * len(header))
    failures = {"free": 0, "paid": 0}
    started = time.perf_counter()
    for count in (20, 100):
        for cap in (2, 4, 10):
            for durations in ("60", "180", "lognormal"):
                jobs = make_jobs(count, durations, seed=11 + count + cap)
                best, ideal_waits = ideal(jobs, cap)
                ideal_waits.sort()
                ideal_p50 = percentile(ideal_waits, 0.5)
                ideal_p95 = percentile(ideal_waits, 0.95)
                typical = statistics.median(job.duration for job in jobs)
                label = "lognorm" if durations == "lognormal" else f"{durations} s"
                for name, hide, plan in (
                    ("reconciler only", True, "free"),
                    ("freed, Free plan", False, "free"),
                    ("freed, paid plan", False, "paid"),
                ):
                    if hide and overlap:
                        continue  # no freed slots: nothing runs after the answer to overlap
                    result = simulate(
                        count, cap, durations, hide_index=hide, plan=plan, overlap=overlap
                    )
                    ratio = result["makespan"] / best
                    met = ratio <= 1.05 and result["p95"] <= ideal_p95 + typical
                    sound = result["twice"] == 0 and result["unfinished"] == 0
                    if not hide:
                        failures[plan] += not (met and sound)
                    verdict = "met" if met else "missed"
                    if result["unfinished"]:
                        verdict += f", {result['unfinished']} never ran in 24 h"
                    elif not sound:
                        verdict += " UNSOUND"
                    print(
                        f"{count:>4} {cap:>3} {label:>9} | {name:<16} {result['makespan']:>8.0f}s"
                        f" {ratio:>6.2f}x {result['p50']:>7.0f} {result['p95']:>7.0f}"
                        f" {ideal_p50:>6.0f}/{ideal_p95:<7.0f} {result['peak']:>5}"
                        f" {result['dispatches']:>8} {result['owed']:>5}"
                        f" {result['operations']:>4} | {verdict}",
                        flush=True,
                    )
    elapsed = time.perf_counter() - started
    print(
        f"freed slots: goal missed or unsound in {failures['free']} of 18 cases on the Free plan,"
        f" {failures['paid']} of 18 on a paid plan; {elapsed:.1f} s wall"
    )


if __name__ == "__main__":
    main()
