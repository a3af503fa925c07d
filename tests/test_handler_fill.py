"""The work-conserving cap under CPython: a completion hands its slot to the oldest deferred job.

The real core (``service.handle``) against the Nomad and GitHub stand-ins over HTTP, with the
in-memory ledger. The pool is ``linux-x64-large`` (cap 2). A finished runner's child stays
``running`` at the stand-in after its job's ``completed`` delivery, as a real allocation does
while its deregister task runs.
"""

import asyncio
import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from handler.deferred import (
    DEFERRED_KEY_PREFIX,
    DeferredJob,
    JobLookupError,
    interpret_job_state,
    pool_prefix,
)
from handler.ledger import LedgerRecord, ledger_key, waits_for_a_slot
from handler.local_server import MemoryLedger, UrllibTransport
from handler.nomad import allocation_of_runner
from handler.service import (
    FILL_LIMITS,
    IncomingRequest,
    Ports,
    _spread,
    handle,
    settings_from_bindings,
)
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import REPOSITORY, bindings, delivery, register_pools, workflow_job

LARGE = ("self-hosted", "linux", "x64", "large")
POOL = "linux-x64-large"
PARENT = "github-runner-linux-x64-large"
KEY = REPOSITORY.lower()


class CountingLedger(MemoryLedger):
    def __init__(self):
        super().__init__()
        self.puts: list[str] = []
        self.lists = 0

    async def put(self, key, value, ttl_seconds, metadata=None):
        self.puts.append(key)
        await super().put(key, value, ttl_seconds, metadata)

    async def list(self, prefix, cursor):
        self.lists += 1
        return await super().list(prefix, cursor)


class Scene:
    def __init__(self, github, nomad, *, read_token=True):
        self.github, self.nomad = github, nomad
        self.ledger = CountingLedger()
        values = bindings(nomad.url)
        if read_token:
            values |= {"GITHUB_API_URL": github.url, "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN}
        self.settings = settings_from_bindings(values.get)
        self.ports = Ports(UrllibTransport(), self.ledger, time.monotonic)
        self.now = datetime.now(UTC)

    def job(self, job_id, *, age_minutes):
        payload = workflow_job(
            job_id=job_id,
            run_id=job_id + 100,
            labels=LARGE,
            created_at=self.now - timedelta(minutes=age_minutes),
        )
        self.github.queue_job(REPOSITORY, payload["workflow_job"])
        return payload

    async def post_async(self, payload):
        sent = delivery(payload)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        return await handle(request, self.settings, self.ports, datetime.now(UTC))

    def post(self, payload):
        return asyncio.run(self.post_async(payload))

    def queue(self, job_id, *, age_minutes):
        return self.post(self.job(job_id, age_minutes=age_minutes))

    def completed(self, job_id, *, conclusion="success", runner_id=7):
        payload = workflow_job(
            "completed",
            job_id=job_id,
            run_id=job_id + 100,
            labels=LARGE,
            conclusion=conclusion,
            runner_id=runner_id,
        )
        self.github.set_job_status(job_id, "completed", conclusion)
        return payload

    def tokens(self):
        return sorted(c.idempotency_token for c in self.nomad.children(PARENT))

    def record(self, job_id):
        return LedgerRecord.from_json(self.ledger.snapshot()[ledger_key(REPOSITORY, job_id)])

    def index(self):
        return sorted(k for k in self.ledger.snapshot() if k.startswith(DEFERRED_KEY_PREFIX))

    def listed(self):
        """The job ids the deferred index lists, in its (oldest first) order."""
        return [key.rsplit(":", 1)[-1] for key in self.index()]

    def job_lookups(self):
        return [c for c in self.github.calls("GET") if "/actions/jobs/" in c.path]

    def at_cap_with_three_deferred(self):
        """Jobs 1 and 2 hold the cap; 3, 4 and 5 are deferred, 5 the oldest and 3 the newest."""
        for job_id in (1, 2):
            assert self.queue(job_id, age_minutes=30).document["outcome"] == "dispatched"
        for child in self.nomad.children(PARENT):
            self.nomad.set_status(child.id, "running")
        for job_id, age in ((3, 1), (4, 5), (5, 10)):
            assert self.queue(job_id, age_minutes=age).document["outcome"] == "deferred"


@pytest.fixture
def scene():
    grants = {ACTIONS_READ_TOKEN: {KEY: "actions_read"}}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad)
        yield Scene(github, nomad)


class TestTheFreedSlot:
    def test_a_completion_at_the_cap_dispatches_the_oldest_deferred_job_once(self, scene):
        scene.at_cap_with_three_deferred()
        assert scene.tokens() == ["1", "2"]
        reply = scene.post(scene.completed(1))
        assert reply.status == 200 and reply.document["outcome"] == "ignored"
        assert reply.log["ledger"].startswith("written; filled: dispatched 1 of 3")
        # Job 5 was queued first (oldest created_at), though delivered last.
        assert scene.tokens() == ["1", "2", "5"]
        record = scene.record(5)
        assert record.child_id is not None and record.dispatched_at is not None
        # The same completion again (a redelivery) gives nothing away a second time.
        again = scene.post(scene.completed(1))
        assert again.log["ledger"] == "unchanged" and scene.tokens() == ["1", "2", "5"]
        # Job 5 left the queue with its dispatch: no later completion looks at it again. Its
        # in_progress delivery changes nothing there.
        assert scene.listed() == ["4", "3"]
        running = workflow_job("in_progress", job_id=5, run_id=105, labels=LARGE, runner_id=4)
        assert scene.post(running).status == 200
        assert scene.listed() == ["4", "3"]

    def test_two_completions_at_once_dispatch_two_never_three(self, scene):
        scene.at_cap_with_three_deferred()

        async def both():
            return await asyncio.gather(
                scene.post_async(scene.completed(1)), scene.post_async(scene.completed(2))
            )

        replies = asyncio.run(both())
        assert all(reply.status == 200 for reply in replies)
        # The two oldest, each once; the newest still waits, alone in the queue.
        assert scene.tokens() == ["1", "2", "4", "5"]
        assert scene.listed() == ["3"]

    def test_a_job_cancelled_at_github_meanwhile_is_skipped(self, scene):
        """The ledger never heard of the cancellation (its delivery was lost): GitHub's answer
        for the job says so, and the next oldest gets the slot."""
        scene.at_cap_with_three_deferred()
        scene.github.set_job_status(5, "completed", "cancelled")
        reply = scene.post(scene.completed(1))
        assert "skipped 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "4"]
        assert all(not k.endswith(":5") for k in scene.index())  # dropped from the queue
        (lookup, *_) = scene.job_lookups()
        assert lookup.headers["authorization"] == f"Bearer {ACTIONS_READ_TOKEN}"

    def test_a_job_the_ledger_knows_cancelled_is_skipped_without_asking_github(self, scene):
        scene.at_cap_with_three_deferred()
        scene.post(scene.completed(5, conclusion="cancelled", runner_id=None))
        assert scene.record(5).cancelled_before_assignment
        before = len(scene.job_lookups())
        scene.post(scene.completed(1))
        assert scene.tokens() == ["1", "2", "4"]
        # One lookup: job 4's; job 5 was settled by the ledger alone.
        assert [c.path.rsplit("/", 1)[-1] for c in scene.job_lookups()[before:]] == ["4"]

    def test_a_job_started_on_another_jobs_runner_gets_its_own_for_that_job(self, scene):
        """Job 5 got the first freed slot, but GitHub gave that runner to job 4, which had none:
        job 4 stays in the queue, owed, and the next freed slot dispatches under job 4's own
        token, whose runner is the one job 5 now lacks. No GitHub lookup: the ledger knows job
        4 started. Every job one runner, none twice."""
        scene.at_cap_with_three_deferred()
        scene.post(scene.completed(1))
        (fifth,) = [c for c in scene.nomad.children(PARENT) if c.idempotency_token == "5"]
        runner = workflow_job("in_progress", job_id=4, run_id=104, labels=LARGE, runner_id=4)
        runner["workflow_job"]["runner_name"] = scene.nomad.runner_name(fifth.id, POOL)
        assert scene.post(runner).status == 200  # job 4 started, on job 5's runner
        scene.github.set_job_status(4, "in_progress", runner_id=4)
        assert scene.listed() == ["4", "3"]  # still owed a runner
        lookups = len(scene.job_lookups())
        reply = scene.post(scene.completed(2))
        assert "dispatched 1 of 2" in reply.log["ledger"] and "owed 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "4", "5"]
        assert len(scene.job_lookups()) == lookups
        assert scene.listed() == ["3"]
        record = scene.record(4)
        assert record.state == "in_progress" and record.child_id is not None
        # The reconciler's successor token for job 5's child is not spent: job 5 keeps its
        # child in the ledger, and a later freed slot never looks at it.
        assert scene.record(5).child_id == fifth.id

    def test_a_job_github_has_started_before_the_ledger_heard_is_owed_too(self, scene):
        """The race: a runner took job 5 (dispatched for another job) a moment ago and its
        in_progress delivery is still on its way; GitHub's answer says in_progress."""
        scene.at_cap_with_three_deferred()
        scene.github.set_job_status(5, "in_progress", runner_id=9)
        reply = scene.post(scene.completed(1))
        assert "dispatched 1 of 3" in reply.log["ledger"] and "owed 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "5"]
        # Its in_progress delivery, arriving now, neither lists it again nor dispatches.
        running = workflow_job("in_progress", job_id=5, run_id=105, labels=LARGE, runner_id=9)
        assert scene.post(running).status == 200
        assert scene.listed() == ["4", "3"] and scene.tokens() == ["1", "2", "5"]

    def test_a_job_that_completed_on_some_runner_is_owed_one_without_a_runner_is_not(self, scene):
        scene.at_cap_with_three_deferred()
        scene.github.set_job_status(5, "completed", "cancelled")  # never assigned
        scene.github.set_job_status(4, "completed", "success", runner_id=9)  # ran somewhere
        reply = scene.post(scene.completed(1))
        assert "skipped 1" in reply.log["ledger"] and "owed 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "4"]
        assert scene.listed() == ["3"]

    def test_a_runnerless_completion_the_ledger_has_is_settled_by_github(self, scene):
        """``completed`` with ``skipped`` (or ``success``) and no runner is one of GitHub's
        artefacts, not a runner taken: the ledger cannot tell, GitHub's runner_id does. A job
        the ledger has completed on a named runner is owed without asking."""
        scene.at_cap_with_three_deferred()
        skipped = workflow_job(
            "completed", job_id=5, run_id=105, labels=LARGE, conclusion="skipped", runner_id=None
        )
        skipped["workflow_job"]["runner_name"] = None
        scene.post(skipped)
        scene.github.set_job_status(5, "completed", "skipped")
        ran = workflow_job(
            "completed", job_id=4, run_id=104, labels=LARGE, conclusion="success", runner_id=9
        )
        ran["workflow_job"]["runner_name"] = "somebody-elses-runner"
        scene.post(ran)
        assert scene.listed() == ["5", "4", "3"]  # neither took a runner of its own
        lookups = len(scene.job_lookups())
        reply = scene.post(scene.completed(1))
        assert "skipped 1" in reply.log["ledger"] and "owed 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "4"]
        assert [c.path.rsplit("/", 1)[-1] for c in scene.job_lookups()[lookups:]] == ["5"]

    def test_a_listing_of_a_job_already_dispatched_costs_one_read_and_no_runner(self, scene):
        """KV's list may still show a key deleted elsewhere (up to ~60 s): the ledger, which
        names the job's child, settles it without GitHub or Nomad, and the next job gets the
        slot."""
        scene.at_cap_with_three_deferred()
        scene.post(scene.completed(1))  # job 5 dispatched, its key deleted
        stale = DeferredJob(POOL, KEY, 5, 105, scene.record(5).created_at)
        asyncio.run(scene.ledger.put(stale.key(), "", 60, stale.metadata()))
        lookups = len(scene.job_lookups())
        reply = scene.post(scene.completed(2))
        assert "dispatched 1 of 3" in reply.log["ledger"] and "skipped 1" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "4", "5"]
        # One lookup, job 4's; job 5 was settled by the ledger alone (and dropped again).
        assert [c.path.rsplit("/", 1)[-1] for c in scene.job_lookups()[lookups:]] == ["4"]
        assert scene.listed() == ["3"]

    def test_a_cancellation_before_assignment_frees_no_slot(self, scene):
        """A job cancelled before a runner took it leaves its runner idle, not finished: that
        runner takes a queued job itself."""
        scene.at_cap_with_three_deferred()
        scene.post(scene.completed(1, conclusion="cancelled", runner_id=None))
        assert scene.tokens() == ["1", "2"]

    def test_a_child_already_gone_frees_only_what_the_count_shows(self, scene):
        """When the finished child is already dead at Nomad, the pool's count is the truth."""
        scene.at_cap_with_three_deferred()
        (first,) = [c for c in scene.nomad.children(PARENT) if c.idempotency_token == "1"]
        scene.nomad.set_status(first.id, "dead")
        reply = scene.post(scene.completed(1))
        assert "own slot no" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "5"]  # one free slot, one dispatch

    def test_a_completion_of_a_child_this_worker_does_not_know_dispatches_nothing_at_the_cap(
        self, scene
    ):
        scene.at_cap_with_three_deferred()
        # A job of the pool that another runner ran: its ledger names no child of ours.
        other = workflow_job(
            "completed", job_id=99, run_id=199, labels=LARGE, conclusion="success", runner_id=3
        )
        reply = scene.post(other)
        assert "dispatched 0 of 3" in reply.log["ledger"] and "stopped full" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2"]

    def test_the_finished_runner_is_found_by_its_name_whichever_job_it_ran(self, scene):
        """GitHub gave job 99 to the runner dispatched for job 1: the runner's name carries its
        allocation, whose child Nomad still counts, so the slot is freed though the ledger has
        no child for job 99."""
        scene.at_cap_with_three_deferred()
        (first,) = [c for c in scene.nomad.children(PARENT) if c.idempotency_token == "1"]
        other = workflow_job(
            "completed", job_id=99, run_id=199, labels=LARGE, conclusion="success", runner_id=3
        )
        other["workflow_job"]["runner_name"] = scene.nomad.runner_name(first.id, POOL)
        reply = scene.post(other)
        assert "own slot yes" in reply.log["ledger"]
        assert scene.tokens() == ["1", "2", "5"]
        reads = [r.path for r in scene.nomad.requests if r.path.startswith("/v1/allocation/")]
        assert reads == [f"/v1/allocation/{first.allocation_id}"]

    def test_a_runner_name_of_another_pool_frees_nothing_here(self, scene):
        scene.at_cap_with_three_deferred()
        (gpu,) = [p for p in scene.settings.routing.pools if p.name == "gpu"]
        payload = workflow_job("queued", job_id=50, run_id=150, labels=("self-hosted", "gpu"))
        assert scene.post(payload).document["outcome"] == "dispatched"
        (child,) = scene.nomad.children(gpu.nomad_job)
        scene.nomad.set_status(child.id, "running")
        other = workflow_job(
            "completed", job_id=98, run_id=198, labels=LARGE, conclusion="success", runner_id=3
        )
        other["workflow_job"]["runner_name"] = scene.nomad.runner_name(child.id, "gpu")
        reply = scene.post(other)
        assert "own slot no" in reply.log["ledger"] and scene.tokens() == ["1", "2"]

    def test_without_a_read_token_the_ledger_decides(self, scene):
        nomad, github = scene.nomad, scene.github
        bare = Scene(github, nomad, read_token=False)
        bare.at_cap_with_three_deferred()
        bare.post(bare.completed(1))
        assert bare.tokens() == ["1", "2", "5"] and bare.job_lookups() == []


class TestTheIndex:
    def test_a_deferred_job_is_indexed_once_oldest_first(self, scene):
        scene.at_cap_with_three_deferred()
        index = scene.index()
        assert [key.rsplit(":", 1)[-1] for key in index] == ["5", "4", "3"]
        assert all(key.startswith(pool_prefix(POOL)) for key in index)
        writes = list(scene.ledger.puts)
        # A redelivered queued delivery of a deferred job: deferred again, nothing written.
        assert scene.post(scene.job(4, age_minutes=5)).document["outcome"] == "deferred"
        assert scene.ledger.puts == writes

    def test_an_index_entry_names_the_job(self):
        job = DeferredJob(POOL, KEY, 42, 142, 1_700_000_000.25)
        assert job.key() == f"deferred:{POOL}:1700000000250:{KEY}:42"
        assert DeferredJob.from_entry(POOL, job.key(), job.metadata()) == job
        assert DeferredJob.from_entry("gpu", job.key(), job.metadata()) is None
        assert DeferredJob.from_entry(POOL, job.key(), '{"r": 1}') is None
        assert DeferredJob.from_entry(POOL, job.key(), "not json") is None


class TestWhoIsOwed:
    def record(self, **changes):
        base = LedgerRecord(
            repository=KEY,
            job_id=4,
            run_id=104,
            run_attempt=1,
            pool=POOL,
            state="queued",
            last_action="queued",
            conclusion=None,
            runner_name=None,
            child_id=None,
            dispatch_outcome="deferred",
            cancelled_before_assignment=False,
            first_seen=1.0,
            updated_at=1.0,
            deliveries=("d",),
            deferred_at=1.0,
        )
        return replace(base, **changes)

    def test_a_deferred_job_without_a_runner_of_its_own_is_listed_even_once_started(self):
        assert waits_for_a_slot(self.record())
        assert waits_for_a_slot(self.record(state="in_progress", runner_name="r"))
        assert waits_for_a_slot(self.record(state="completed", conclusion="success"))

    def test_a_child_dispatched_for_it_or_a_cancellation_takes_it_out(self):
        assert not waits_for_a_slot(self.record(child_id="p/dispatch-1"))
        assert not waits_for_a_slot(self.record(cancelled_before_assignment=True))
        assert not waits_for_a_slot(self.record(deferred_at=None))  # never deferred

    @pytest.mark.parametrize(
        ("document", "owed"),
        [
            ({"status": "queued", "runner_id": None}, True),
            ({"status": "in_progress", "runner_id": 5}, True),
            ({"status": "in_progress"}, True),  # in progress always has a runner
            ({"status": "completed", "conclusion": "success", "runner_id": 5}, True),
            ({"status": "completed", "conclusion": "cancelled", "runner_id": None}, False),
            ({"status": "completed", "conclusion": "cancelled", "runner_id": 0}, False),
            ({"status": "completed", "conclusion": "cancelled", "runner_id": True}, False),
            ({"status": "waiting", "runner_id": None}, False),
        ],
    )
    def test_githubs_word_on_a_job(self, document, owed):
        state = interpret_job_state(200, json.dumps(document).encode())
        assert state.status == document["status"] and state.owes_a_runner() is owed

    @pytest.mark.parametrize(("status", "body"), [(404, b"{}"), (200, b"[]"), (200, b"{")])
    def test_no_word_is_an_error(self, status, body):
        with pytest.raises(JobLookupError):
            interpret_job_state(status, body)


class TestParting:
    """After meeting another completion on a job, a completion goes on from a point of its own
    (handler.service._spread)."""

    jobs = tuple(DeferredJob(POOL, KEY, n, n + 100, float(n)) for n in range(1, 13))

    def test_each_completion_goes_on_from_its_own_point_within_the_window(self):
        jobs = list(self.jobs)
        starts = {_spread(jobs, 9, f"runner-{n}", 1)[0].job_id for n in range(40)}
        assert starts <= set(range(1, 10)) and len(starts) > 4  # within the next nine, apart
        parted = _spread(jobs, 9, "runner-7", 1)
        assert sorted(j.job_id for j in parted) == list(range(1, 13))  # reordered, none lost
        assert [j.job_id for j in parted[9:]] == [10, 11, 12]  # beyond the window: in order
        # The same completion always parts the same way; meeting again, it draws afresh.
        assert _spread(jobs, 9, "runner-7", 1) == parted
        assert {_spread(jobs, 9, "runner-7", n)[0].job_id for n in range(1, 20)} != {
            parted[0].job_id
        }

    def test_the_order_stays_oldest_first_where_no_one_else_can_be(self):
        jobs = list(self.jobs)
        assert _spread(jobs, 1, "runner-7", 1) == jobs  # a pool of two
        assert _spread(jobs, 9, None, 1) == jobs  # no runner to tell it apart
        assert _spread(jobs[:1], 9, "runner-7", 1) == jobs[:1]


class TestRunnerNames:
    def test_our_runner_names_carry_their_allocation(self):
        compact = "0f6d2c1e8b7a4c3d9e0f1a2b3c4d5e6f"
        expected = "0f6d2c1e-8b7a-4c3d-9e0f-1a2b3c4d5e6f"
        assert allocation_of_runner(f"nomad-linux-x64-large-{compact}") == expected
        assert allocation_of_runner(f"nomad-x-{compact}") == expected  # a shortened pool part

    @pytest.mark.parametrize(
        "name",
        [
            None,
            "",
            "GitHub Actions 5",
            "nomad-linux-0f6d2c1e",
            "my-runner-" + "a" * 32,
            "nomad-linux-" + "G" * 32,
        ],
    )
    def test_other_names_carry_none(self, name):
        assert allocation_of_runner(name) is None


LINUX = ("self-hosted", "linux", "x64")  # the linux-x64 pool: cap 10
LINUX_PARENT = "github-runner-linux-x64"


class TestManyCompletions:
    """Ten runners of a full pool of ten finish one after another, fifteen jobs deferred: each
    completion reaches the next job still waiting within the Free plan's bounds, because the
    jobs dispatched before it have left the queue (before, the fifth completion on met only
    jobs already dispatched, four candidates, and gave its slot to nobody)."""

    def at_cap(self, scene):
        for job_id in range(101, 111):
            payload = workflow_job(
                job_id=job_id,
                run_id=job_id + 1000,
                labels=LINUX,
                created_at=scene.now - timedelta(hours=2),
            )
            scene.github.queue_job(REPOSITORY, payload["workflow_job"])
            assert scene.post(payload).document["outcome"] == "dispatched"
        children = {c.idempotency_token: c for c in scene.nomad.children(LINUX_PARENT)}
        for child in children.values():
            scene.nomad.set_status(child.id, "running")
        for job_id in range(201, 216):  # 201 the oldest
            payload = workflow_job(
                job_id=job_id,
                run_id=job_id + 1000,
                labels=LINUX,
                created_at=scene.now - timedelta(minutes=300 - job_id),
            )
            scene.github.queue_job(REPOSITORY, payload["workflow_job"])
            assert scene.post(payload).document["outcome"] == "deferred"
        return children

    def completed(self, scene, job_id, child):
        payload = workflow_job(
            "completed",
            job_id=job_id,
            run_id=job_id + 1000,
            labels=LINUX,
            conclusion="success",
            runner_id=7,
        )
        payload["workflow_job"]["runner_name"] = scene.nomad.runner_name(child.id, "linux-x64")
        scene.github.set_job_status(job_id, "completed", "success", runner_id=7)
        return payload

    def test_each_completion_fills_its_slot_with_the_next_waiting_job(self, scene):
        assert scene.settings.plan == "free"
        budget, _ = FILL_LIMITS["free"]
        children = self.at_cap(scene)
        for n, job_id in enumerate(range(101, 111)):
            reply = scene.post(self.completed(scene, job_id, children[str(job_id)]))
            log = reply.log["ledger"]
            assert "dispatched 1 of " in log and "replays 0, skipped 0, held 0" in log, log
            operations = int(log.rsplit(", ", 1)[-1].split()[0])
            assert operations <= budget
            # Oldest first: the n-th completion gave its slot to the n-th oldest job.
            tokens = [c.idempotency_token for c in scene.nomad.children(LINUX_PARENT)]
            assert str(201 + n) in tokens and len(tokens) == 11 + n
        assert sorted(tokens) == sorted({*map(str, range(101, 111)), *map(str, range(201, 211))})
        assert [int(j) for j in scene.listed()] == list(range(211, 216))

    def test_ten_completions_at_once_never_dispatch_more_than_ten_nor_one_twice(self, scene):
        """Fills that overlap list the same queue and meet on its oldest job, where each
        dispatch after the first is a replay at Nomad, never a second runner; from there each
        goes on from its own point of the next nine (how many they fill depends on how closely
        they overlap: a later completion or the reconciler fills the rest)."""
        children = self.at_cap(scene)

        async def together():
            return await asyncio.gather(
                *(
                    scene.post_async(self.completed(scene, job_id, children[str(job_id)]))
                    for job_id in range(101, 111)
                )
            )

        asyncio.run(together())
        tokens = [c.idempotency_token for c in scene.nomad.children(LINUX_PARENT)]
        assert len(tokens) == len(set(tokens))
        new = sorted(int(t) for t in tokens if int(t) > 200)
        # Going down the queue in step, they filled two (the fifth of ten met only jobs
        # already dispatched); parting after the first meeting, more.
        assert 3 <= len(new) <= 10
        assert new[0] == 201  # the oldest, whoever got there first
