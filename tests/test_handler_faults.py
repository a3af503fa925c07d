"""Fault injection: Nomad down, slow, 500 and 403 during bursts of webhooks; GitHub errors and rate
limits for the reconciler; KV errors. Measured: jobs lost 0, duplicate dispatches 0, every webhook
answered inside GitHub's 10 s.

CPython, against the stand-ins over real HTTP. "Lost 0" means: once Nomad is back, every queued
job has exactly one Nomad child (webhook or reconciler), keyed by its GitHub job id. The register
task's own GitHub failures (5xx, 401, rate limit) are tested with the runner scripts in
tests/test_runner_scripts.py.
"""

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from handler import service
from handler.contract import PoolRoute, Routing
from handler.local_server import MemoryLedger, UrllibTransport
from handler.reconcile import GitHubReadSettings, reconcile
from handler.service import (
    IncomingRequest,
    LedgerUnavailable,
    Ports,
    handle,
    settings_from_bindings,
)
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import LINUX_LABELS, bindings, delivery, register_pools, workflow_job

REPOS = ("octo-org/alpha", "octo-org/beta", "octo-org/gamma")
ROUTING = Routing(
    namespace="github-runners",
    pools=(PoolRoute("linux-x64", frozenset(LINUX_LABELS), "github-runner-linux-x64", 500),),
    repositories={repo: ("linux-x64",) for repo in REPOS},
    # Nomad and GitHub faults here, not the fork check (tests/test_handler_forks.py has its own).
    fork_pull_requests=dict.fromkeys(REPOS, "allow"),
)
GITHUB_DEADLINE = 10.0


class Scene:
    """Stand-ins, a shared ledger, and the two ways jobs reach Nomad: webhooks and reconciler."""

    def __init__(self, github, nomad, ledger=None):
        self.github = github
        self.nomad = nomad
        self.ledger = ledger or MemoryLedger()
        values = bindings(nomad.url) | {"ROUTING": ROUTING.to_json()}
        self.settings = settings_from_bindings(values.get)
        self.transport = UrllibTransport()
        self.ports = Ports(self.transport, self.ledger, time.monotonic)
        self.jobs: list[tuple[str, int]] = []

    def queue(self, count, first_id):
        """``count`` queued jobs over the repositories, known to GitHub; webhooks not sent yet."""
        sent = []
        for n in range(count):
            repo, job_id = REPOS[n % len(REPOS)], first_id + n
            payload = workflow_job(job_id=job_id, run_id=job_id * 10, repository=repo)
            self.github.queue_job(repo, payload["workflow_job"])
            self.jobs.append((repo, job_id))
            sent.append(delivery(payload, repository=repo))
        return sent

    async def _post(self, sent):
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        started = time.monotonic()
        reply = await handle(request, self.settings, self.ports, datetime.now(UTC))
        return reply, time.monotonic() - started

    def burst(self, deliveries):
        """All deliveries at once; (replies, slowest answer in seconds)."""

        async def everything():
            return await asyncio.gather(*(self._post(sent) for sent in deliveries))

        results = asyncio.run(everything())
        return [reply for reply, _ in results], max(seconds for _, seconds in results)

    def reconcile_until_done(self, runs=8):
        read = GitHubReadSettings(self.github.url, ACTIONS_READ_TOKEN)
        reports = []
        for _ in range(runs):
            report = asyncio.run(
                reconcile(self.settings, read, self.ports, self.transport, datetime.now(UTC))
            )
            reports.append(report)
            if not self.missing():
                break
        return reports

    def tokens(self):
        return Counter(c.idempotency_token for c in self.nomad.children("github-runner-linux-x64"))

    def missing(self):
        tokens = self.tokens()
        return [job_id for _, job_id in self.jobs if tokens[str(job_id)] == 0]

    def assert_exactly_once(self):
        tokens = self.tokens()
        assert self.missing() == [], "jobs lost"
        assert [t for t, n in tokens.items() if n > 1] == [], "duplicate dispatches"
        assert sorted(int(t) for t in tokens) == sorted(job_id for _, job_id in self.jobs)


@pytest.fixture
def scene():
    grants = {ACTIONS_READ_TOKEN: dict.fromkeys(REPOS, "actions_read")}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn(slow_seconds=4.0) as nomad:
        register_pools(nomad, ROUTING)
        yield Scene(github, nomad)


REAL_TIMEOUTS = (service.ATTEMPT_TIMEOUT_SECONDS, service.RETRY_WITHIN_SECONDS)


@pytest.fixture
def quick_timeouts(monkeypatch):
    """Scaled-down timeouts keep these tests fast (the real ones are measured in the slow test);
    calling the fixture's value restores the real ones, for the part of a test after a fault,
    where a loaded machine must not turn a slow answer into a failure."""
    monkeypatch.setattr(service, "ATTEMPT_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(service, "RETRY_WITHIN_SECONDS", 0.35)

    def restore():
        monkeypatch.setattr(service, "ATTEMPT_TIMEOUT_SECONDS", REAL_TIMEOUTS[0])
        monkeypatch.setattr(service, "RETRY_WITHIN_SECONDS", REAL_TIMEOUTS[1])

    return restore


@pytest.mark.parametrize("fault", ["down", "slow", "500", "403"])
def test_jobs_failed_during_a_nomad_fault_are_recovered_exactly_once(scene, quick_timeouts, fault):
    deliveries = scene.queue(12, first_id=10_000)
    with scene.nomad.faulty(fault):
        replies, slowest = scene.burst(deliveries)
    assert {reply.document["outcome"] for reply in replies} == {"failed"}
    assert {reply.status for reply in replies} == ({502} if fault in ("500", "403") else {503})
    # Each delivery gives up after two scaled-down attempts (0.3 s, retried within 0.35 s): well
    # under the stand-in's 4 s hang, with room for a loaded machine. Without the timeouts a
    # "slow" delivery would take 4 s or more.
    assert slowest < 2.5
    assert scene.tokens() == Counter()
    # Nomad is back: GitHub's deliveries are gone for good, the reconciler finds the jobs.
    quick_timeouts()
    reports = scene.reconcile_until_done()
    scene.assert_exactly_once()
    assert sum(report.dispatched for report in reports) == 12
    # A late redelivery of every webhook now starts nothing.
    replies, _ = scene.burst(deliveries)
    assert {reply.document["outcome"] for reply in replies} == {"already_dispatched"}
    scene.assert_exactly_once()


def test_one_shot_faults_inside_a_burst_lose_nothing_and_duplicate_nothing(scene, quick_timeouts):
    deliveries = scene.queue(30, first_id=20_000)
    scene.nomad.one_shot_faults.extend(["500", "down", "500", "403", "down", "500"])
    replies, slowest = scene.burst(deliveries + deliveries[:10])  # some redelivered at once
    assert slowest < 2.0
    outcomes = Counter(reply.document["outcome"] for reply in replies)
    assert set(outcomes) <= {"dispatched", "already_dispatched", "failed"}
    scene.reconcile_until_done()
    scene.assert_exactly_once()


def test_webhooks_are_answered_inside_ten_seconds_while_nomad_hangs(scene):
    """Real timeouts: Nomad answers each request after 6 s; GitHub gives up after 10 s."""
    scene.nomad.slow_seconds = 6.0
    deliveries = scene.queue(6, first_id=30_000)
    with scene.nomad.faulty("slow"):
        replies, slowest = scene.burst(deliveries)
    assert slowest < GITHUB_DEADLINE
    assert {reply.status for reply in replies} == {503}
    # urllib's own socket timeout and the attempt's timeout are both 4 s: either may fire first.
    reasons = [reply.document["reason"] for reply in replies]
    assert all(reason.startswith("Nomad unreachable") for reason in reasons), reasons


def test_github_errors_and_rate_limits_only_delay_the_reconciler(scene, quick_timeouts):
    deliveries = scene.queue(9, first_id=40_000)
    with scene.nomad.faulty("down"):
        scene.burst(deliveries)
    read = GitHubReadSettings(scene.github.url, ACTIONS_READ_TOKEN)

    def run():
        return asyncio.run(
            reconcile(scene.settings, read, scene.ports, scene.transport, datetime.now(UTC))
        )

    scene.github.fail_next(502, times=len(REPOS))  # each repository's first request
    report = run()
    assert report.dispatched == 0 and len(report.errors) == len(REPOS)
    scene.github.rate_limited = True
    assert run().stopped == "rate_limited"
    scene.github.rate_limited = False
    scene.github.fail_next(429, headers={"retry-after": "60"})
    assert run().stopped == "rate_limited"
    scene.reconcile_until_done()
    scene.assert_exactly_once()


class FlakyKv(MemoryLedger):
    """KV that fails every other operation (429 on a hot key, a 5xx)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def _maybe_fail(self):
        self.calls += 1
        if self.calls % 2:
            raise LedgerUnavailable("KV 429 Too Many Requests")

    async def get(self, key):
        self._maybe_fail()
        return await super().get(key)

    async def put(self, key, value, ttl_seconds, metadata=None):
        self._maybe_fail()
        await super().put(key, value, ttl_seconds, metadata)


def test_kv_errors_never_cost_a_job_or_a_duplicate(quick_timeouts):
    grants = {ACTIONS_READ_TOKEN: dict.fromkeys(REPOS, "actions_read")}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad, ROUTING)
        scene = Scene(github, nomad, ledger=FlakyKv())
        deliveries = scene.queue(12, first_id=50_000)
        replies, _ = scene.burst(deliveries[:8])
        assert {reply.document["outcome"] for reply in replies} == {"dispatched"}
        assert any(reply.log["ledger"].startswith("failed") for reply in replies)
        # Four webhooks were lost outright; the reconciler works through the flaky KV too.
        scene.reconcile_until_done()
        scene.assert_exactly_once()
