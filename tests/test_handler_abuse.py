"""Bounded cost for abusers: the figures README.md quotes (Limits, Security model), measured here.

An abuser with one captured signed delivery can replay it at will (the signature covers no
timestamp; the delivery id header is not signed), and anyone who can push a workflow can queue
and cancel jobs in a loop. What that costs is counted on the real core (``service.handle``,
``reconcile.reconcile``) against the Nomad and GitHub stand-ins, with the in-memory ledger
wrapped to count KV operations (``CountingLedger``): KV writes are the scarce quota (1,000 a day
on the Workers Free plan). ``tests/test_handler_entry.py`` repeats the first figure in the real
Workers runtime.
"""

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta

import pytest

from handler.contract import Routing
from handler.ledger import LedgerRecord, ledger_key
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
from tests.standins.webhooks import (
    REPOSITORY,
    ROUTING_DOCUMENT,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)

ABUSER = "octo-org/abuser"
OTHER = "octo-org/bystander"
POOL_JOB = "github-runner-linux-x64"


class CountingLedger(MemoryLedger):
    """The in-memory ledger, counting what KV would bill; ``fail_writes`` makes every put fail."""

    def __init__(self, *, fail_writes: bool = False) -> None:
        super().__init__()
        self.writes = 0
        self.reads = 0
        self.deletes = 0
        self.fail_writes = fail_writes

    async def delete(self, key):
        self.deletes += 1
        await super().delete(key)

    async def get(self, key):
        self.reads += 1
        return await super().get(key)

    async def put(self, key, value, ttl_seconds, metadata=None):
        if self.fail_writes:
            raise LedgerUnavailable("KV 429: too many writes")
        self.writes += 1
        await super().put(key, value, ttl_seconds, metadata)


def routing_with(**changes) -> Routing:
    """The test routing with ``changes``; fork runs allowed for every repository (the fork
    policy is tested in tests/test_handler_forks.py, and its run lookup is not what is counted
    here)."""
    document = {**ROUTING_DOCUMENT, **changes}
    repositories = document["repositories"]
    document["fork_pull_requests"] = dict.fromkeys(repositories, "allow")
    return Routing.from_document(document)


class Webhooks:
    def __init__(self, nomad, ledger, routing=None):
        values = bindings(nomad.url)
        if routing is not None:
            values["ROUTING"] = routing.to_json()
        self.settings = settings_from_bindings(values.get)
        self.ports = Ports(UrllibTransport(), ledger, time.monotonic)

    def send(self, sent):
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        return asyncio.run(handle(request, self.settings, self.ports, datetime.now(UTC)))


@pytest.fixture
def nomad():
    with NomadStandIn() as stand_in:
        register_pools(stand_in)
        yield stand_in


def children(nomad, job_id=None):
    found = nomad.children(POOL_JOB)
    return [c for c in found if job_id is None or c.idempotency_token == str(job_id)]


class TestReplays:
    def test_50_replays_of_one_delivery_cost_no_write_and_one_runner(self, nomad):
        """A dispatch of a job the ledger has no record of is recorded by Nomad alone (its
        child's id names the job): the first delivery and its 49 replays write nothing."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        sent = delivery(workflow_job(job_id=61001))
        outcomes = [hooks.send(sent).document["outcome"] for _ in range(50)]
        assert outcomes == ["dispatched"] + ["already_dispatched"] * 49
        assert ledger.writes == 0 and len(children(nomad, 61001)) == 1

    def test_the_same_body_under_50_new_delivery_ids_costs_no_write(self, nomad):
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        body = workflow_job(job_id=61002)
        for _ in range(50):
            hooks.send(delivery(body))  # a fresh X-GitHub-Delivery each time
        assert ledger.writes == 0 and len(children(nomad, 61002)) == 1

    def test_20_replays_of_a_stale_delivery_cost_one_write_and_no_runner(self, nomad):
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        stale = workflow_job(job_id=61003, created_at=datetime.now(UTC) - timedelta(hours=30))
        replies = [hooks.send(delivery(stale)) for _ in range(20)]
        assert {reply.document["code"] for reply in replies} == {"stale"}
        assert ledger.writes == 1 and children(nomad) == []

    def test_a_stale_replay_of_a_job_the_ledger_has_as_completed_costs_one_write(self, nomad):
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        created = datetime.now(UTC) - timedelta(hours=30)
        hooks.send(delivery(workflow_job("completed", job_id=61004, created_at=created)))
        before = ledger.writes
        stale = workflow_job(job_id=61004, created_at=created)
        for _ in range(20):
            hooks.send(delivery(stale))
        assert ledger.writes - before == 1 and children(nomad) == []

    def test_10_jobs_queued_and_cancelled_cost_one_write_each_their_redeliveries_none(self, nomad):
        """The dispatch writes nothing (Nomad holds it); the cancellation's one write records
        it, child and dispatch second read from Nomad; every delivery sent twice adds nothing.
        A queued replay after that is refused by the record."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        for job_id in range(61100, 61110):
            queued = delivery(workflow_job(job_id=job_id))
            cancelled = delivery(workflow_job("completed", job_id=job_id, conclusion="cancelled"))
            for sent in (queued, cancelled, queued, cancelled):
                hooks.send(sent)
        assert ledger.writes == 10
        for job_id in range(61100, 61110):
            record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
            (child,) = children(nomad, job_id)
            assert record.cancelled_before_assignment and record.child_id == child.id
            assert record.dispatched_at == float(child.id.split("-")[-2])
        assert len(children(nomad)) == 10

    def test_a_cancellation_nomad_cannot_answer_for_is_written_without_a_child(self, nomad):
        """Nomad down when the cancellation comes: the record says cancelled, with no child
        (no runner is claimed that cannot be shown); a redelivery later fills the child in."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        hooks.send(delivery(workflow_job(job_id=61120)))
        cancelled = delivery(workflow_job("completed", job_id=61120, conclusion="cancelled"))
        nomad.one_shot_faults.append("500")
        hooks.send(cancelled)
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, 61120)])
        assert record.cancelled_before_assignment and record.child_id is None
        hooks.send(cancelled)
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, 61120)])
        assert record.child_id == children(nomad, 61120)[0].id and ledger.writes == 2


class TestReplayOfAStartedJob:
    """A queued delivery replayed after its job started must not start a runner, not even once
    Nomad has collected the old child and its idempotency token is free again."""

    def prepare(self, nomad, ledger, job_id, action="in_progress"):
        hooks = Webhooks(nomad, ledger)
        queued = delivery(workflow_job(job_id=job_id))
        assert hooks.send(queued).document["outcome"] == "dispatched"
        later = workflow_job(action, job_id=job_id, runner_id=7, conclusion="success")
        hooks.send(delivery(later))
        # Nomad's job GC (4 h by default) removes the finished child: the token is free.
        with nomad._lock:
            for key in [k for k, job in nomad.jobs.items() if job.idempotency_token]:
                if nomad.jobs[key].idempotency_token == str(job_id):
                    del nomad.jobs[key]
        return hooks, queued

    @pytest.mark.parametrize("action", ["in_progress", "completed"])
    def test_is_ignored_without_a_write(self, nomad, action):
        ledger = CountingLedger()
        hooks, queued = self.prepare(nomad, ledger, 61200, action)
        before = ledger.writes
        reply = hooks.send(queued)
        assert reply.status == 200 and reply.document["code"] == "already_started"
        assert children(nomad, 61200) == [] and ledger.writes == before

    def test_is_ignored_when_nomad_could_not_say_whether_it_had_a_runner(self, nomad):
        """The in_progress delivery could not read the job's children (Nomad down): its record
        says so, which the guard takes for a decision, so the replay is still refused."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        queued = delivery(workflow_job(job_id=61210))
        assert hooks.send(queued).document["outcome"] == "dispatched"
        nomad.one_shot_faults.append("500")
        hooks.send(delivery(workflow_job("in_progress", job_id=61210, runner_id=7)))
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, 61210)])
        assert record.child_id is None and record.dispatch_outcome.startswith("unknown")
        with nomad._lock:
            for key in [k for k, job in nomad.jobs.items() if job.idempotency_token == "61210"]:
                del nomad.jobs[key]
        reply = hooks.send(queued)
        assert reply.status == 200 and reply.document["code"] == "already_started"
        assert children(nomad, 61210) == []

    def test_replays_of_a_later_delivery_ask_nomad_once(self, nomad):
        """A completion for a job Nomad has no child of, sent 50 times: one children read (the
        one that wrote the record), none for the replays, and one write."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        done = delivery(workflow_job("completed", job_id=61211, runner_id=7, conclusion="success"))
        for _ in range(50):
            hooks.send(done)
        lookups = [
            r
            for r in nomad.requests
            if r.path == "/v1/jobs/statuses" and '"61211"' in r.query.get("filter", "")
        ]
        assert len(lookups) == 1 and ledger.writes == 1

    def test_a_first_queued_delivery_arriving_after_completed_still_dispatches(self, nomad):
        """Out of order, not a replay: the runner that ran this job was started for another,
        which needs this delivery's runner."""
        ledger = CountingLedger()
        hooks = Webhooks(nomad, ledger)
        done = workflow_job("completed", job_id=61202, runner_id=7, conclusion="success")
        hooks.send(delivery(done))
        queued = delivery(workflow_job(job_id=61202))
        assert hooks.send(queued).document["outcome"] == "dispatched"
        assert hooks.send(queued).document["code"] == "already_started"  # now it is a replay
        assert len(children(nomad, 61202)) == 1

    def test_without_the_ledger_it_would_have_started_a_runner(self, nomad):
        """The control: the same replay with the record gone dispatches again."""
        hooks, queued = self.prepare(nomad, CountingLedger(), 61201)
        hooks.ports = Ports(UrllibTransport(), CountingLedger(), time.monotonic)
        assert hooks.send(queued).document["outcome"] == "dispatched"
        assert len(children(nomad, 61201)) == 1


class TestOneRepositoryCannotStarveTheOthers:
    """The abuser queues and cancels in a loop; its runners stay until their idle timeout (no
    job of their own is left for them). The bystander queues one job."""

    def routing(self, caps):
        pools = [dict(pool) for pool in ROUTING_DOCUMENT["pools"]]
        pools[0]["max_runners"] = 4  # linux-x64
        repositories = {ABUSER: ["linux-x64"], OTHER: ["linux-x64"]}
        return routing_with(pools=pools, repositories=repositories, repository_max_runners=caps)

    def loop(self, nomad, routing, ledger=None):
        ledger = CountingLedger() if ledger is None else ledger
        hooks = Webhooks(nomad, ledger, routing)
        outcomes = []
        for job_id in range(62000, 62010):
            queued = workflow_job(job_id=job_id, repository=ABUSER)
            outcomes.append(hooks.send(delivery(queued, repository=ABUSER)).document["outcome"])
            cancel = workflow_job(
                "completed", job_id=job_id, conclusion="cancelled", repository=ABUSER
            )
            hooks.send(delivery(cancel, repository=ABUSER))
        bystander = delivery(workflow_job(job_id=62100, repository=OTHER), repository=OTHER)
        return outcomes, hooks.send(bystander)

    def test_with_a_repository_cap_the_other_is_dispatched_at_once(self, nomad):
        outcomes, reply = self.loop(nomad, self.routing({ABUSER: 2, OTHER: 2}))
        assert outcomes == ["dispatched"] * 2 + ["deferred"] * 8
        assert reply.document["outcome"] == "dispatched"
        assert len(children(nomad)) == 3  # 2 for the abuser (idling out), 1 for the bystander

    def test_without_one_the_other_waits_for_the_abusers_idle_timeouts(self, nomad):
        """The control: the pool's cap alone lets one repository hold all of it."""
        outcomes, reply = self.loop(nomad, self.routing({}))
        assert outcomes == ["dispatched"] * 4 + ["deferred"] * 6
        assert reply.document["outcome"] == "deferred"
        assert "pool 'linux-x64' is at its cap" in reply.document["reason"]

    def test_what_the_loop_costs_in_kv(self, nomad):
        """The README's figure: a job dispatched then cancelled costs one write; one cancelled
        while deferred at the cap three (its record, its entry in the pool's deferred queue,
        the cancellation) and a delete (the queue entry)."""
        ledger = CountingLedger()
        outcomes, _ = self.loop(nomad, self.routing({ABUSER: 2, OTHER: 2}), ledger)
        assert outcomes.count("dispatched") == 2 and outcomes.count("deferred") == 8
        assert (ledger.writes, ledger.deletes) == (2 * 1 + 8 * 3, 8)

    def test_the_cap_counts_the_repositorys_children_through_jobs_statuses(self, nomad):
        self.loop(nomad, self.routing({ABUSER: 2, OTHER: 2}))
        reads = [
            r
            for r in nomad.requests
            if r.path == "/v1/jobs/statuses" and "Meta.github_repository" in r.query["filter"]
        ]
        assert reads and all(r.query["include_children"] == "true" for r in reads)
        assert all(r.query["per_page"] == "2" for r in reads)
        assert 'Meta.github_repository matches "(?i)^octo-org/abuser$"' in reads[0].query["filter"]

    def test_dead_children_free_the_repositorys_slots(self, nomad):
        routing = self.routing({ABUSER: 1})
        hooks = Webhooks(nomad, CountingLedger(), routing)
        first = delivery(workflow_job(job_id=62200, repository=ABUSER), repository=ABUSER)
        second = delivery(workflow_job(job_id=62201, repository=ABUSER), repository=ABUSER)
        assert hooks.send(first).document["outcome"] == "dispatched"
        deferred = hooks.send(second)
        assert deferred.document["outcome"] == "deferred"
        assert "repository 'octo-org/abuser' is at its cap (1 of 1" in deferred.document["reason"]
        nomad.set_status(children(nomad, 62200)[0].id, "dead")
        assert hooks.send(second).document["outcome"] == "dispatched"

    def test_the_reconciler_holds_the_repository_to_its_cap_too(self, nomad):
        routing = self.routing({ABUSER: 2})
        grants = {ACTIONS_READ_TOKEN: {ABUSER: "actions_read", OTHER: "actions_read"}}
        with GitHubStandIn(tokens=grants) as github:
            for job_id in range(62300, 62305):
                github.queue_job(ABUSER, rest_job(job_id, ABUSER))
            github.queue_job(OTHER, rest_job(62310, OTHER))
            values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
            settings = settings_from_bindings(values.get)
            read = GitHubReadSettings(github.url, ACTIONS_READ_TOKEN, request_budget=100)
            transport = UrllibTransport()
            ports = Ports(transport, CountingLedger(), time.monotonic)
            report = asyncio.run(
                reconcile(settings, read, ports, transport, datetime.now(UTC), slot=0)
            )
        assert (report.dispatched, report.deferred) == (3, 3)
        tokens = sorted(c.idempotency_token for c in children(nomad))
        assert len([t for t in tokens if t.startswith("6230")]) == 2 and "62310" in tokens


def rest_job(job_id, repository):
    created = datetime.now(UTC) - timedelta(seconds=5)
    payload = workflow_job(
        job_id=job_id, run_id=job_id + 10**6, created_at=created, repository=repository
    )
    return payload["workflow_job"]


class TestReconcilerCoverageWithKvWritesFailing:
    """No cursor to lose: with every KV write failing, the rotation still reaches every
    repository within ceil(repositories / (budget / 2)) runs."""

    @pytest.mark.parametrize(("budget", "start"), [(40, 0), (40, 7), (10, 0), (10, 13)])
    def test_30_repositories(self, nomad, budget, start):
        repos = [f"octo-org/repo-{n:02d}" for n in range(30)]
        routing = routing_with(repositories={repo: ["linux-x64"] for repo in repos})
        register_pools(nomad, routing)
        runs = math.ceil(len(repos) / (budget / 2))
        grants = {ACTIONS_READ_TOKEN: dict.fromkeys(repos, "actions_read")}
        with GitHubStandIn(tokens=grants) as github:
            values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
            settings = settings_from_bindings(values.get)
            read = GitHubReadSettings(github.url, ACTIONS_READ_TOKEN, request_budget=budget)
            transport = UrllibTransport()
            ledger = CountingLedger(fail_writes=True)
            ports = Ports(transport, ledger, time.monotonic)
            visited: list[set[str]] = []
            for slot in range(start, start + 2 * runs):
                sent_before = len(github.calls())
                asyncio.run(
                    reconcile(settings, read, ports, transport, datetime.now(UTC), slot=slot)
                )
                visited.append(repositories_listed(github.calls()[sent_before:]))
        assert ledger.writes == 0
        for first in range(len(visited) - runs + 1):
            covered = set().union(*visited[first : first + runs])
            assert covered == set(repos), (budget, first, sorted(set(repos) - covered))
        assert runs == {40: 2, 10: 6}[budget]


def repositories_listed(calls) -> set[str]:
    """Repositories whose two runs lists (queued and in_progress) were both read."""
    statuses: dict[str, set[str]] = {}
    for call in calls:
        route, _, query = call.path.partition("?")
        if route.endswith("/actions/runs"):
            owner, name = route.split("/")[2:4]
            statuses.setdefault(f"{owner}/{name}", set()).add(query)
    return {repo for repo, seen in statuses.items() if len(seen) == 2}
