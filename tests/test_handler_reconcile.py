"""handler.reconcile: recover missed jobs from GitHub's runs/jobs lists, within budget and limits.

Against the GitHub stand-in (runs and jobs endpoints, ETag/304, rate-limit headers) and the
Nomad stand-in, through the CPython adapters' transport and the in-memory ledger.
"""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from handler.contract import WORKER_NOMAD_CAPABILITIES, PoolRoute, Routing
from handler.ledger import LedgerRecord, ledger_key
from handler.local_server import MemoryLedger, UrllibTransport
from handler.reconcile import (
    DEFAULT_REQUEST_BUDGET,
    GitHubCredentialRefused,
    GitHubError,
    GitHubRateLimited,
    GitHubReadSettings,
    github_settings_from_bindings,
    interpret_jobs,
    interpret_runs,
    interval_from_cron,
    jobs_request,
    raise_for_github_error,
    reconcile,
    rotation_order,
    run_slot,
    runs_request,
)
from handler.service import ConfigurationError, LedgerUnavailable, Ports, settings_from_bindings
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    LINUX_LABELS,
    ROUTING,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)

REPO = "codertocat/hello-world"
OTHER = "octo-org/octo-repo"
GPU = ("self-hosted", "linux", "x64", "gpu")


def rest_job(job_id, *, run_id=None, labels=LINUX_LABELS, repository=REPO, age=5):
    """A REST job object: the same shape as a webhook's workflow_job (GitHub documents both)."""
    created = datetime.now(UTC) - timedelta(seconds=age)
    payload = workflow_job(
        job_id=job_id, run_id=run_id or job_id + 10**6, labels=labels, created_at=created
    )
    return payload["workflow_job"]


class World:
    """A GitHub stand-in, a Nomad stand-in and a ledger, and one call to run the reconciler."""

    def __init__(self, github, nomad, routing=ROUTING, budget=40):
        self.github = github
        self.nomad = nomad
        self.ledger = MemoryLedger()
        values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
        self.settings = settings_from_bindings(values.get)
        self.read = GitHubReadSettings(
            api_url=github.url, token=ACTIONS_READ_TOKEN, request_budget=budget
        )
        self.transport = UrllibTransport()
        self.slot = 0  # each run is the next Cron Trigger run, as consecutive scheduled times

    def run(self, ledger=None, budget=None):
        ports = Ports(
            transport=self.transport, ledger=ledger or self.ledger, monotonic=time.monotonic
        )
        read = self.read
        if budget is not None:
            read = GitHubReadSettings(read.api_url, read.token, request_budget=budget)
        started = time.monotonic()
        report = asyncio.run(
            reconcile(self.settings, read, ports, self.transport, datetime.now(UTC), slot=self.slot)
        )
        self.slot += 1
        assert time.monotonic() - started < 10
        return report

    def children(self, pool="linux-x64"):
        return self.nomad.children(f"github-runner-{pool}")

    def record(self, job_id, repository=REPO):
        return LedgerRecord.from_json(self.ledger.snapshot()[ledger_key(repository, job_id)])


def grants(*repositories):
    return {ACTIONS_READ_TOKEN: {repo: "actions_read" for repo in repositories}}


@pytest.fixture
def world():
    # The Nomad token holds exactly the deployed policy's capabilities (no list-jobs).
    nomad_standin = NomadStandIn(capabilities=WORKER_NOMAD_CAPABILITIES)
    with GitHubStandIn(tokens=grants(REPO, OTHER)) as github, nomad_standin as nomad:
        register_pools(nomad)
        yield World(github, nomad)


class TestRecovery:
    def test_a_queued_job_whose_webhook_was_lost_gets_exactly_one_runner(self, world):
        world.github.queue_job(REPO, rest_job(1001))
        report = world.run()
        assert report.dispatched == 1 and report.queued_jobs == 1
        (child,) = world.children()
        assert child.idempotency_token == "1001"
        assert child.meta["github_job_id"] == "1001" and child.meta["runner_pool"] == "linux-x64"
        record = world.record(1001)
        assert record.reconciled and record.child_id == child.id
        assert record.dispatched_at is not None and record.created_at is not None

    def test_a_second_run_is_a_no_op_at_nomad_and_uses_conditional_requests(self, world):
        world.github.queue_job(REPO, rest_job(1002))
        world.run()
        report = world.run()
        assert report.dispatched == 0 and report.already_dispatched == 1
        assert len(world.children()) == 1
        # Both runs lists of both repositories were answered 304 from the stored ETags.
        assert report.not_modified == 4
        conditional = [c for c in world.github.calls() if "if-none-match" in c.headers]
        assert len(conditional) == 4

    def test_a_job_the_webhook_served_is_not_dispatched_again_nor_marked_reconciled(self, world):
        from handler.service import IncomingRequest, handle

        sent = delivery(workflow_job(job_id=1003, run_id=1003 + 10**6))
        ports = Ports(world.transport, world.ledger, time.monotonic)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        reply = asyncio.run(handle(request, world.settings, ports, datetime.now(UTC)))
        assert reply.document["outcome"] == "dispatched"
        world.github.queue_job(REPO, rest_job(1003))
        report = world.run()
        assert (report.dispatched, report.already_dispatched) == (0, 1)
        # Its runner is live: Nomad holds the dispatch, and the run writes nothing for it.
        assert len(world.children()) == 1 and ledger_key(REPO, 1003) not in world.ledger.snapshot()

    def test_a_dead_runner_only_nomad_knew_of_is_replaced_and_the_webhooks_dispatch_kept(
        self, world
    ):
        """The webhook's dispatch wrote no KV (Nomad holds it); its runner died with the job
        still queued. One read of the job's children finds that, the successor is dispatched,
        and the record keeps the webhook's dispatch second: not counted as the reconciler's."""
        from handler.service import IncomingRequest, handle

        sent = delivery(workflow_job(job_id=1018, run_id=1018 + 10**6))
        ports = Ports(world.transport, world.ledger, time.monotonic)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        reply = asyncio.run(handle(request, world.settings, ports, datetime.now(UTC)))
        assert reply.document["outcome"] == "dispatched"
        assert reply.log["ledger"].startswith("not written")
        first = reply.document["nomad_job_id"]
        world.nomad.set_status(first, "dead")
        world.github.queue_job(REPO, rest_job(1018))
        before = len(world.nomad.requests)
        report = world.run()
        assert (report.dispatched, report.redispatched) == (1, 1)
        reads = [r for r in world.nomad.requests[before:] if r.method == "GET"]
        assert [r.path for r in reads] == [
            "/v1/jobs/statuses",
            "/v1/job/github-runner-linux-x64/summary",
        ]
        (successor,) = [c for c in world.children() if c.id != first]
        record = world.record(1018)
        assert record.child_id == successor.id and not record.reconciled
        assert record.dispatched_at == float(first.split("-")[-2])
        # Once the ledger names the child, a replay writes nothing.
        stored = world.ledger.snapshot()[ledger_key(REPO, 1018)]
        world.run()
        assert world.ledger.snapshot()[ledger_key(REPO, 1018)] == stored

    def test_queued_job_in_a_run_already_in_progress_is_found(self, world):
        world.github.queue_job(REPO, rest_job(1004, run_id=77))
        world.github.queue_job(REPO, rest_job(1005, run_id=77))
        world.github.set_job_status(1004, "in_progress")
        report = world.run()
        assert report.dispatched == 1
        assert [c.idempotency_token for c in world.children()] == ["1005"]

    def test_jobs_that_are_not_ours_or_not_queued_are_left_alone(self, world):
        world.github.queue_job(REPO, rest_job(1006, labels=("ubuntu-latest",)))
        world.github.queue_job(REPO, rest_job(1007, labels=("self-hosted", "windows")))
        world.github.queue_job(REPO, rest_job(1008, age=25 * 3600))
        world.github.queue_job(REPO, rest_job(1009, run_id=88))
        world.github.queue_job(REPO, rest_job(1010, run_id=88))
        world.github.set_job_status(1009, "completed", "success")
        world.github.set_job_status(1010, "waiting")
        report = world.run()
        assert report.dispatched == 0 and world.children() == []
        assert report.ignored == {"not_self_hosted": 1, "no_matching_pool": 1, "stale": 1}

    def test_a_pool_at_its_cap_defers_and_the_next_run_dispatches_when_a_runner_ends(self, world):
        world.github.queue_job(REPO, rest_job(1011, labels=GPU))
        world.github.queue_job(REPO, rest_job(1012, labels=GPU))
        report = world.run()
        assert (report.dispatched, report.deferred) == (1, 1)
        (first,) = world.children("gpu")
        # Its runner ran its job and ended.
        world.github.set_job_status(int(first.idempotency_token), "completed", "success")
        world.nomad.set_status(first.id, "dead")
        report = world.run()
        assert report.dispatched == 1 and len(world.children("gpu")) == 2
        deferred = next(j for j in (1011, 1012) if j != int(first.idempotency_token))
        record = world.record(deferred)
        assert record.dispatch_outcome == "dispatched" and record.reconciled

    def test_a_queued_job_whose_runner_ended_without_it_gets_one_new_runner(self, world):
        """Its runner died (register failed, node lost) or took another job: the job's token
        still replays that dead child until Nomad's GC, so a successor token is used, once."""
        world.github.queue_job(REPO, rest_job(1015))
        world.run()
        (first,) = world.children()
        world.nomad.set_status(first.id, "dead")
        report = world.run()
        assert (report.dispatched, report.redispatched, report.already_dispatched) == (
            1,
            1,
            0,
        )  # no replay: from the ledger child
        second = next(c for c in world.children() if c.id != first.id)
        assert second.idempotency_token.startswith("1015-")
        assert second.meta["github_job_id"] == "1015"
        assert world.record(1015).child_id == second.id
        # The next run finds the new runner alive: nothing more is started.
        report = world.run()
        assert (report.dispatched, report.redispatched) == (0, 0)
        assert len(world.children()) == 2
        # A redelivered webhook still replays the first child: no runner from it either.
        from handler.service import IncomingRequest, handle

        sent = delivery(workflow_job(job_id=1015, run_id=1015 + 10**6))
        ports = Ports(world.transport, world.ledger, time.monotonic)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        reply = asyncio.run(handle(request, world.settings, ports, datetime.now(UTC)))
        assert reply.document["outcome"] == "already_dispatched"
        assert len(world.children()) == 2

    def test_a_job_whose_successive_runners_all_took_other_jobs_still_gets_one(self, world):
        """Each new runner went to another job and ended: every run starts one more, however
        many went before, and at the same cost: its walk starts from the ledger's last child
        (one read), not from the job-id token (a replay and a read per dead child)."""
        world.github.queue_job(REPO, rest_job(1017))
        world.run()
        costs = set()
        for lost in range(1, 6):
            for child in world.children():
                world.nomad.set_status(child.id, "dead")
            report = world.run()
            assert (report.dispatched, report.redispatched) == (1, 1), lost
            assert report.already_dispatched == 0, lost
            costs.add(report.nomad_requests)
            newest = world.record(1017).child_id
            assert newest is not None and newest not in {c.id for c in world.children()[:-1]}
        assert len(costs) == 1, costs
        tokens = [child.idempotency_token for child in world.children()]
        assert len(tokens) == 6 and len(set(tokens)) == 6  # no token twice: no duplicate runner

    def test_a_live_runner_is_never_replaced(self, world):
        world.github.queue_job(REPO, rest_job(1016))
        world.run()
        (first,) = world.children()
        for status in ("pending", "running"):
            world.nomad.set_status(first.id, status)
            report = world.run()
            assert (report.dispatched, report.already_dispatched) == (0, 1)
        assert len(world.children()) == 1

    def test_a_failed_dispatch_is_recovered_by_the_next_run(self, world):
        world.github.queue_job(REPO, rest_job(1013))
        world.github.queue_job(
            OTHER, rest_job(1014, repository=OTHER, labels=("self-hosted", "arm64"))
        )
        with world.nomad.faulty("down"):
            report = world.run()
        # The first failure stops the run: the other repository's GitHub quota is kept.
        assert report.failed == 1 and report.stopped == "nomad_unreachable"
        assert world.children() == [] and report.repositories == [REPO]
        assert world.record(1013).dispatch_outcome == "failed"
        report = world.run()
        assert report.dispatched == 2 and len(world.children()) == 1


class TestLimits:
    def test_budget_bounds_a_run_and_round_robin_reaches_every_repository(self):
        repos = [f"octo-org/repo-{n:02d}" for n in range(6)]
        routing = Routing(
            namespace="github-runners",
            pools=(PoolRoute("linux-x64", frozenset(LINUX_LABELS), "github-runner-linux-x64", 50),),
            repositories={repo: ("linux-x64",) for repo in repos},
        )
        with GitHubStandIn(tokens=grants(*repos)) as github, NomadStandIn() as nomad:
            register_pools(nomad, routing)
            world = World(github, nomad, routing=routing)
            for index, repo in enumerate(repos):
                github.queue_job(repo, rest_job(2000 + index, repository=repo))
            seen = []
            for _ in range(6):
                # Per repository: two runs lists, a jobs list, the job's children, and room
                # for two dispatch attempts with their capacity reads.
                report = world.run(budget=8)
                assert report.github_requests + report.nomad_requests <= 8
                assert report.stopped == "budget"
                seen.extend(report.repositories)
                if len(world.children()) == len(repos):
                    break
            assert {c.idempotency_token for c in world.children()} == {
                str(2000 + n) for n in range(6)
            }
            assert set(seen) == set(repos)
            assert not any(key.startswith("reconcile:cursor") for key in world.ledger.snapshot())

    def test_a_larger_budget_visits_more_repositories_in_one_run(self):
        repos = [f"octo-org/repo-{n:02d}" for n in range(30)]
        routing = Routing(
            namespace="github-runners",
            pools=(PoolRoute("linux-x64", frozenset(LINUX_LABELS), "github-runner-linux-x64", 50),),
            repositories={repo: ("linux-x64",) for repo in repos},
        )
        with GitHubStandIn(tokens=grants(*repos)) as github, NomadStandIn() as nomad:
            register_pools(nomad, routing)
            default = World(github, nomad, routing=routing).run(ledger=MemoryLedger())
            assert default.stopped == "budget"
            assert default.github_requests + default.nomad_requests <= DEFAULT_REQUEST_BUDGET
            larger = World(github, nomad, routing=routing, budget=200).run()
            assert larger.stopped is None
            assert len(larger.repositories) == len(repos) > len(default.repositories)

    def test_a_rate_limit_stops_the_run_at_once(self, world):
        world.github.queue_job(REPO, rest_job(1020))
        world.github.rate_limited = True
        report = world.run()
        assert report.stopped == "rate_limited" and len(world.github.calls()) == 1
        assert world.children() == []

    def test_429_with_retry_after_stops_the_run(self, world):
        world.github.fail_next(429, message="slow down", headers={"retry-after": "60"})
        report = world.run()
        assert report.stopped == "rate_limited" and len(world.github.calls()) == 1

    def test_secondary_rate_limit_403_with_retry_after_stops_the_run(self, world):
        world.github.fail_next(
            403, message="You have exceeded a secondary rate limit", headers={"retry-after": "30"}
        )
        assert world.run().stopped == "rate_limited"

    def test_a_low_remaining_quota_stops_after_the_answer_in_hand(self, world):
        world.github.queue_job(REPO, rest_job(1021))
        world.github.rate_limit_remaining = 20
        report = world.run()
        assert report.stopped == "quota_low" and len(world.github.calls()) == 1

    def test_a_refused_token_stops_the_run(self, world):
        world.read = GitHubReadSettings(world.github.url, "github_pat_revoked")
        report = world.run()
        assert report.stopped == "credentials" and len(world.github.calls()) == 1

    def test_a_token_without_actions_read_on_one_repository_skips_only_that_one(self):
        tokens = {ACTIONS_READ_TOKEN: {REPO: "actions_read", OTHER: "admin"}}
        with GitHubStandIn(tokens=tokens) as github, NomadStandIn() as nomad:
            register_pools(nomad)
            world = World(github, nomad)
            github.queue_job(REPO, rest_job(1022))
            report = world.run()
            assert report.dispatched == 1 and report.stopped is None
            assert any(OTHER in error and "403" in error for error in report.errors)

    def test_github_5xx_on_one_repository_does_not_stop_the_others(self, world):
        world.github.queue_job(
            OTHER, rest_job(1023, repository=OTHER, labels=("self-hosted", "arm64"))
        )
        world.github.fail_next(502, message="Server Error")
        report = world.run()
        assert report.dispatched == 1 and len(report.errors) == 1 and "502" in report.errors[0]

    def test_github_unreachable_is_an_error_not_a_crash(self, world):
        world.read = GitHubReadSettings("http://127.0.0.1:9", ACTIONS_READ_TOKEN)
        report = world.run()
        assert report.dispatched == 0 and all("unreachable" in e for e in report.errors)

    def test_kv_failures_cost_conditional_requests_but_not_recovery(self, world):
        class BrokenKv(MemoryLedger):
            async def get(self, key):
                raise LedgerUnavailable("KV 429")

            async def put(self, key, value, ttl_seconds, metadata=None):
                raise LedgerUnavailable("KV 429")

        world.github.queue_job(REPO, rest_job(1024))
        report = world.run(ledger=BrokenKv())
        assert report.dispatched == 1 and len(world.children()) == 1
        report = world.run(ledger=BrokenKv())
        assert report.not_modified == 0 and report.already_dispatched == 1


class TestPureParts:
    def test_requests_carry_the_token_but_repr_hides_it(self):
        read = GitHubReadSettings("https://api.github.com", "github_pat_secret")
        request = runs_request(read, "Octo-Org/App", "queued", 'W/"abc"')
        assert request.url == (
            "https://api.github.com/repos/Octo-Org/App/actions/runs?status=queued&per_page=100"
        )
        headers = dict(request.headers)
        assert headers["Authorization"] == "Bearer github_pat_secret"
        assert headers["If-None-Match"] == 'W/"abc"'
        assert "github_pat_secret" not in repr(request) + repr(read)
        jobs = jobs_request(read, "octo-org/app", 42)
        assert jobs.url.endswith(
            "/repos/octo-org/app/actions/runs/42/jobs?filter=latest&per_page=100"
        )

    def test_304_means_unchanged(self):
        assert interpret_runs(304, {}, b"") is None

    def test_runs_page_keeps_ids_and_etag(self):
        body = b'{"total_count": 2, "workflow_runs": [{"id": 5}, {"id": "x"}, {"id": 7}]}'
        page = interpret_runs(200, {"etag": 'W/"e"'}, body)
        assert page.run_ids == (5, 7) and page.etag == 'W/"e"'

    @pytest.mark.parametrize(
        ("status", "headers", "message", "kind"),
        [
            (403, {"x-ratelimit-remaining": "0"}, "API rate limit exceeded", GitHubRateLimited),
            (429, {}, "Too many requests", GitHubRateLimited),
            (403, {"retry-after": "10"}, "secondary rate limit", GitHubRateLimited),
            (401, {}, "Bad credentials", GitHubCredentialRefused),
            (403, {"x-ratelimit-remaining": "4000"}, "Resource not accessible", GitHubError),
            (404, {}, "Not Found", GitHubError),
        ],
    )
    def test_error_classification(self, status, headers, message, kind):
        body = f'{{"message": "{message}"}}'.encode()
        with pytest.raises(kind) as caught:
            raise_for_github_error(status, headers, body)
        assert type(caught.value) is kind and message in caught.value.reason

    def test_jobs_that_do_not_parse_are_skipped_not_fatal(self):
        good = rest_job(3001)
        bad = dict(rest_job(3002), labels="self-hosted")
        body = f'{{"jobs": [{json.dumps(bad)}, {json.dumps(good)}]}}'
        events = interpret_jobs(200, {}, body.encode(), REPO)
        assert [event.job.id for event in events] == [3001]
        assert events[0].action == "queued" and events[0].repository == REPO

    def test_rotation_starts_each_slice_in_turn_and_moves_within_it_each_lap(self):
        repos = [f"o/r{n}" for n in range(5)]  # 3 per run: slices r0-r2 and r3-r4
        assert rotation_order(repos, 0, 3) == ["o/r0", "o/r1", "o/r2", "o/r3", "o/r4"]
        assert rotation_order(repos, 1, 3) == ["o/r3", "o/r4", "o/r0", "o/r1", "o/r2"]
        assert rotation_order(repos, 2, 3) == ["o/r1", "o/r2", "o/r0", "o/r3", "o/r4"]
        assert rotation_order(repos, 3, 3) == ["o/r4", "o/r3", "o/r0", "o/r1", "o/r2"]
        assert rotation_order(repos, 7, 10) == ["o/r2", "o/r3", "o/r4", "o/r0", "o/r1"]
        assert rotation_order([], 4, 3) == []
        for slot in range(20):
            assert sorted(rotation_order(repos, slot, 2)) == repos

    def test_the_slot_comes_from_the_scheduled_time_and_the_cron_interval(self):
        at = datetime(2026, 12, 1, 9, 35, tzinfo=UTC)
        assert run_slot(at, 5) + 1 == run_slot(at + timedelta(minutes=5), 5)
        assert run_slot(at, 5) == run_slot(at + timedelta(seconds=20), 5)
        assert run_slot(at) == int(at.timestamp() // 60)
        assert interval_from_cron("*/5 * * * *") == 5
        assert interval_from_cron("0 * * * *") == 60
        assert interval_from_cron("*/5 9-17 * * *") is None
        assert interval_from_cron(None) is None

    def test_settings_name_the_missing_binding(self):
        with pytest.raises(ConfigurationError, match="GITHUB_READ_TOKEN"):
            github_settings_from_bindings({"GITHUB_API_URL": "https://api.github.com"}.get)
        with pytest.raises(ConfigurationError, match="GITHUB_API_URL"):
            github_settings_from_bindings(
                {"GITHUB_API_URL": "api.github.com", "GITHUB_READ_TOKEN": "t"}.get
            )

    def test_request_budget_binding_is_optional_and_defaults_to_the_plans(self):
        values = {"GITHUB_API_URL": "https://api.github.com", "GITHUB_READ_TOKEN": "t"}
        # No RECONCILE_PLAN (a deployment older than the binding): the Free plan's bound.
        free = github_settings_from_bindings(values.get)
        assert (free.request_budget, free.runs_per_page) == (10, 9)
        empty = values | {"RECONCILE_REQUEST_BUDGET": "", "RECONCILE_PLAN": " "}
        assert github_settings_from_bindings(empty.get).request_budget == 10
        paid = github_settings_from_bindings((values | {"RECONCILE_PLAN": "paid"}).get)
        assert (paid.request_budget, paid.runs_per_page) == (DEFAULT_REQUEST_BUDGET, 39)
        both = values | {"RECONCILE_PLAN": "free", "RECONCILE_REQUEST_BUDGET": "40"}
        assert github_settings_from_bindings(both.get).request_budget == 40

    @pytest.mark.parametrize("text", ["Free", "pro", "paid plan"])
    def test_a_malformed_plan_binding_is_named(self, text):
        values = {
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_READ_TOKEN": "t",
            "RECONCILE_PLAN": text,
        }
        with pytest.raises(ConfigurationError, match="binding RECONCILE_PLAN: expected 'free'"):
            github_settings_from_bindings(values.get)

    def test_the_plan_sets_the_runs_lists_page_size(self):
        free = GitHubReadSettings("https://api.github.com", "t", runs_per_page=20)
        assert runs_request(free, "o/r", "in_progress", None).url.endswith(
            "/actions/runs?status=in_progress&per_page=20"
        )

    @pytest.mark.parametrize(
        ("plan", "budget", "page"),
        [("free", "10", 9), ("free", "40", 20), ("paid", "40", 39), ("paid", "950", 100)],
    )
    def test_a_page_holds_no_more_runs_than_a_run_can_follow(self, plan, budget, page):
        values = {
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_READ_TOKEN": "t",
            "RECONCILE_PLAN": plan,
            "RECONCILE_REQUEST_BUDGET": budget,
        }
        assert github_settings_from_bindings(values.get).runs_per_page == page

    @pytest.mark.parametrize(("text", "budget"), [("10", 10), ("400", 400), (" 950\n", 950)])
    def test_request_budget_binding_is_read(self, text, budget):
        values = {
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_READ_TOKEN": "t",
            "RECONCILE_REQUEST_BUDGET": text,
        }
        assert github_settings_from_bindings(values.get).request_budget == budget

    @pytest.mark.parametrize("text", ["forty", "40.0", "-40", "1e3", "9", "951", "\u0664\u0660"])
    def test_a_malformed_request_budget_binding_is_named(self, text):
        values = {
            "GITHUB_API_URL": "https://api.github.com",
            "GITHUB_READ_TOKEN": "t",
            "RECONCILE_REQUEST_BUDGET": text,
        }
        with pytest.raises(ConfigurationError, match="binding RECONCILE_REQUEST_BUDGET: "):
            github_settings_from_bindings(values.get)


def test_a_page_cut_to_the_budget_follows_the_same_runs(world):
    """More runs in progress than one run can follow: a page of budget - 1 runs reads the jobs
    of exactly the runs a page of 20 would (the newest ones), so the cut loses no job."""
    for index in range(14):
        job_id = 7700 + index
        world.github.queue_job(REPO, rest_job(job_id, run_id=job_id))
        world.github.set_job_status(job_id, "in_progress")
    followed = {}
    for page in (20, 9):
        before = len(world.github.calls())
        world.read = GitHubReadSettings(
            world.github.url, ACTIONS_READ_TOKEN, request_budget=10, runs_per_page=page
        )
        world.ledger = MemoryLedger()  # no ETag: both runs read the lists afresh
        world.slot = 0
        report = world.run()
        assert report.github_requests == 10 and report.stopped == "budget"
        calls = world.github.calls()[before:]
        followed[page] = sorted(call.path for call in calls if "/jobs?" in call.path)
    assert len(followed[9]) == 8 and followed[9] == followed[20]


class TestLocalCommand:
    def test_reconcile_once_dispatches_and_prints_one_report(
        self, world, tmp_path, monkeypatch, capsys
    ):
        from handler import local_server

        world.github.queue_job(REPO, rest_job(4001))
        routing = tmp_path / "routing.json"
        routing.write_text(ROUTING.to_json())
        for name, value in bindings(world.nomad.url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GITHUB_API_URL", world.github.url)
        monkeypatch.setenv("GITHUB_READ_TOKEN", ACTIONS_READ_TOKEN)
        assert local_server.main(["--routing", str(routing), "--reconcile-once"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["msg"] == "reconcile" and report["dispatched"] == 1
        assert ACTIONS_READ_TOKEN not in str(report)
        assert [c.idempotency_token for c in world.children()] == ["4001"]

    def test_reconcile_once_without_the_read_token_names_it(
        self, world, tmp_path, monkeypatch, capsys
    ):
        from handler import local_server

        routing = tmp_path / "routing.json"
        routing.write_text(ROUTING.to_json())
        for name, value in bindings(world.nomad.url).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("GITHUB_API_URL", world.github.url)
        monkeypatch.delenv("GITHUB_READ_TOKEN", raising=False)
        assert local_server.main(["--routing", str(routing), "--reconcile-once"]) == 2
        assert "GITHUB_READ_TOKEN" in capsys.readouterr().err
