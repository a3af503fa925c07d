"""The fork policy: jobs of runs from forks get no runner unless the repository allows them.

Whole deliveries through handler.service and whole reconciler runs, against the GitHub stand-in
(``GET .../actions/runs/{id}`` and the runs lists, whose run objects carry ``repository`` and
``head_repository``) and the Nomad stand-in, through the CPython adapters' transport. The
verdict logic itself (handler.forks) is tested on GitHub's run objects first.
"""

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from handler import forks
from handler.contract import Routing, RoutingError
from handler.forks import RunOriginCache, origin_of_run
from handler.ledger import LedgerRecord, ledger_key
from handler.local_server import MemoryLedger, UrllibTransport
from handler.reconcile import ETAG_PREFIX, GitHubReadSettings, reconcile
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from handler.status import summarize
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REFUSING_FORKS,
    REPOSITORY,
    ROUTING_DOCUMENT,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)

FORK = "Mallory/Hello-World"
KEY = REPOSITORY.lower()


def run_object(base, head):
    """The part of a workflow run object the verdict reads (GitHub sends much more)."""

    def repository(name):
        return None if name is None else {"full_name": name, "name": name.split("/")[1]}

    return {
        "id": 7,
        "event": "pull_request",
        "repository": repository(base),
        "head_repository": repository(head),
    }


class TestVerdicts:
    @pytest.mark.parametrize(
        ("head", "origin"),
        [
            (REPOSITORY, forks.SAME_REPOSITORY),
            (REPOSITORY.upper(), forks.SAME_REPOSITORY),  # names compare case-insensitively
            (FORK, forks.FORK),
            ("codertocat/Hello-World-fork", forks.FORK),
            (None, forks.UNKNOWN),  # GitHub's answer once the fork is deleted
        ],
    )
    def test_head_against_base(self, head, origin):
        assert origin_of_run(run_object(REPOSITORY, head), REPOSITORY) == origin

    @pytest.mark.parametrize(
        "run",
        [
            None,
            [],
            {},
            {"repository": {"full_name": REPOSITORY}},  # no head_repository at all
            {"repository": {"full_name": REPOSITORY}, "head_repository": {}},
            {"repository": {"full_name": REPOSITORY}, "head_repository": {"full_name": 7}},
            {"repository": {"full_name": REPOSITORY}, "head_repository": {"full_name": "a/b/c"}},
            # A run of another repository is not a verdict on this one.
            {"repository": {"full_name": FORK}, "head_repository": {"full_name": FORK}},
        ],
    )
    def test_anything_else_is_unknown(self, run):
        assert origin_of_run(run, REPOSITORY) == forks.UNKNOWN

    def test_a_lookup_answer_other_than_200_is_an_error_naming_the_status(self):
        body = json.dumps({"message": "API rate limit exceeded"}).encode()
        with pytest.raises(forks.RunLookupError, match="403: API rate limit exceeded"):
            forks.interpret_run(403, body, REPOSITORY)
        with pytest.raises(forks.RunLookupError, match="not JSON"):
            forks.interpret_run(200, b"<html>", REPOSITORY)

    def test_the_cache_is_bounded_and_keeps_only_verdicts(self):
        cache = RunOriginCache(max_entries=2)
        cache.keep(REPOSITORY, 1, forks.FORK)
        cache.keep(REPOSITORY, 2, forks.SAME_REPOSITORY)
        assert cache.get(KEY.upper(), 1) == forks.FORK  # touches 1: 2 is now the oldest
        cache.keep(REPOSITORY, 3, forks.UNKNOWN)
        assert (cache.get(REPOSITORY, 2), len(cache)) == (None, 2)
        with pytest.raises(ValueError):
            cache.keep(REPOSITORY, 4, "lookup failed")

    def test_the_read_credential_is_optional_for_webhooks(self):
        values = {
            "GITHUB_API_URL": "https://api.github.com/",
            "GITHUB_READ_TOKEN": "read-token-value",
        }
        read = forks.github_read_from_bindings(values.get)
        assert read is not None and read.api_url == "https://api.github.com"
        assert "read-token-value" not in repr(read)
        assert forks.github_read_from_bindings({}.get) is None
        assert forks.github_read_from_bindings((values | {"GITHUB_API_URL": "ftp://x"}).get) is None


class TestRouting:
    def test_absent_means_refuse(self):
        assert REFUSING_FORKS.fork_policy(REPOSITORY) == "refuse"
        assert REFUSING_FORKS.fork_policy("nobody/served") == "refuse"

    def test_the_document_spells_out_every_repository(self):
        document = json.loads(REFUSING_FORKS.to_json())
        assert document["fork_pull_requests"] == {
            "codertocat/hello-world": "refuse",
            "octo-org/octo-repo": "refuse",
        }

    def test_an_unknown_policy_is_refused(self):
        document = json.loads(json.dumps(ROUTING_DOCUMENT))
        document["fork_pull_requests"]["codertocat/hello-world"] = "yes"
        with pytest.raises(RoutingError, match=r"fork_pull_requests.*expected one of"):
            Routing.from_document(document)


class Scene:
    """GitHub and Nomad stand-ins, the core's settings with a refusing routing, one ledger."""

    def __init__(self, github, nomad, routing=REFUSING_FORKS, *, read_token=True):
        self.github, self.nomad = github, nomad
        self.ledger = MemoryLedger()
        self.cache = RunOriginCache()
        values = bindings(nomad.url) | {"ROUTING": routing.to_json()}
        if read_token:
            values |= {"GITHUB_API_URL": github.url, "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN}
        self.settings = settings_from_bindings(values.get)
        self.transport = UrllibTransport()

    def ports(self, cache=True):
        return Ports(
            transport=self.transport,
            ledger=self.ledger,
            monotonic=time.monotonic,
            run_origins=self.cache if cache else None,
        )

    def queue(self, job_id, *, run_id, head=REPOSITORY, event="pull_request"):
        payload = workflow_job(job_id=job_id, run_id=run_id)
        self.github.queue_job(
            REPOSITORY, payload["workflow_job"], event=event, head_repository=head
        )
        return payload

    def post(self, payload):
        sent = delivery(payload)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        return asyncio.run(handle(request, self.settings, self.ports(), datetime.now(UTC)))

    def reconcile(self, *, budget=40, cache=True):
        read = GitHubReadSettings(self.github.url, ACTIONS_READ_TOKEN, request_budget=budget)
        ports = self.ports(cache)
        return asyncio.run(reconcile(self.settings, read, ports, self.transport, datetime.now(UTC)))

    def tokens(self):
        return [c.idempotency_token for c in self.nomad.children("github-runner-linux-x64")]

    def run_lookups(self, run_id):
        path = f"/repos/{REPOSITORY}/actions/runs/{run_id}".lower()
        return [call for call in self.github.calls("GET") if call.path.lower() == path]

    def record(self, job_id):
        return LedgerRecord.from_json(self.ledger.snapshot()[ledger_key(REPOSITORY, job_id)])

    def ignored(self):
        """/status's per-code count of ignored jobs, from the ledger's job records."""
        summaries = [
            LedgerRecord.from_json(text).summary()
            for key, text in self.ledger.snapshot().items()
            if key.startswith("job:")
        ]
        return summarize(summaries, self.settings.routing)["pools"]["linux-x64"]["ignored"]


@pytest.fixture
def scene():
    grants = {ACTIONS_READ_TOKEN: {KEY: "actions_read", "octo-org/octo-repo": "actions_read"}}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad)
        yield Scene(github, nomad)


class TestWebhooks:
    def test_a_fork_pull_request_job_is_ignored_with_its_reason(self, scene):
        reply = scene.post(scene.queue(8001, run_id=9001, head=FORK))
        assert (reply.status, reply.document["outcome"]) == (200, "ignored")
        assert reply.document["code"] == "fork_pull_request"
        assert reply.log["run_origin"] == "fork" and reply.log["code"] == "fork_pull_request"
        assert scene.nomad.dispatch_requests() == [] and scene.tokens() == []
        assert scene.record(8001).dispatch_outcome == "not dispatched: fork_pull_request"
        assert scene.ignored() == {"fork_pull_request": 1}
        (lookup,) = scene.run_lookups(9001)
        assert lookup.headers["authorization"] == f"Bearer {ACTIONS_READ_TOKEN}"

    def test_a_same_repository_job_is_dispatched(self, scene):
        reply = scene.post(scene.queue(8002, run_id=9002, event="push"))
        assert (reply.status, reply.document["outcome"]) == (202, "dispatched")
        assert reply.log["run_origin"] == "same_repository"
        assert scene.tokens() == ["8002"]

    def test_a_pull_request_from_a_branch_of_the_repository_is_dispatched(self, scene):
        reply = scene.post(scene.queue(8003, run_id=9003, head=REPOSITORY.lower()))
        assert reply.document["outcome"] == "dispatched" and scene.tokens() == ["8003"]

    def test_a_deleted_fork_cannot_be_verified_and_is_ignored(self, scene):
        reply = scene.post(scene.queue(8004, run_id=9004, head=None))
        assert reply.document["code"] == "head_repository_unknown"
        assert scene.tokens() == []

    def test_sibling_jobs_of_one_run_cost_one_lookup(self, scene):
        first = scene.post(scene.queue(8005, run_id=9005, head=FORK))
        second = scene.post(scene.queue(8006, run_id=9005, head=FORK))
        assert first.document["code"] == second.document["code"] == "fork_pull_request"
        assert len(scene.run_lookups(9005)) == 1

    def test_a_repository_that_allows_forks_dispatches_them_without_a_lookup(self, scene):
        allowing = Scene(scene.github, scene.nomad, Routing.from_document(ROUTING_DOCUMENT))
        reply = allowing.post(allowing.queue(8007, run_id=9007, head=FORK))
        assert reply.document["outcome"] == "dispatched" and "run_origin" not in reply.log
        assert scene.run_lookups(9007) == []

    def test_jobs_that_would_not_dispatch_anyway_cost_no_lookup(self, scene):
        payload = scene.queue(8008, run_id=9008, head=FORK)
        payload["workflow_job"]["labels"] = ["self-hosted", "windows"]
        assert scene.post(payload).document["code"] == "no_matching_pool"
        in_progress = workflow_job("in_progress", job_id=8008, run_id=9008, runner_id=3)
        in_progress["workflow_job"]["labels"] = ["self-hosted", "linux"]
        assert scene.post(in_progress).document["code"] == "recorded"
        assert scene.run_lookups(9008) == []


LOOKUP_FAULTS = {
    "5xx": lambda github: github.fail_next(502, path=f"/repos/{REPOSITORY}/actions/runs/9101"),
    "rate-limit": lambda github: github.fail_next(
        403,
        message="API rate limit exceeded for user ID 1.",
        headers={"x-ratelimit-remaining": "0"},
        path=f"/repos/{REPOSITORY}/actions/runs/9101",
    ),
    "403": lambda github: github.fail_next(
        403,
        message="Resource not accessible by personal access token",
        path=f"/repos/{REPOSITORY}/actions/runs/9101",
    ),
    "no-answer-in-time": lambda github: github.lose_next_answer(method="GET", delay=4.0),
}


class TestFailedLookups:
    """A failed lookup dispatches nothing now; the next reconciler run dispatches the job."""

    @pytest.mark.parametrize("fault", LOOKUP_FAULTS)
    def test_nothing_is_dispatched_blind_and_the_reconciler_recovers_it(self, scene, fault):
        payload = scene.queue(8101, run_id=9101, event="push")
        LOOKUP_FAULTS[fault](scene.github)
        started = time.monotonic()
        reply = scene.post(payload)
        assert time.monotonic() - started < 10  # inside GitHub's wait
        assert (reply.status, reply.document["outcome"]) == (202, "deferred"), reply.document
        assert reply.document["code"] == "run_lookup_failed"
        assert reply.log["run_origin"] == "lookup failed"
        assert scene.nomad.dispatch_requests() == [] and len(scene.cache) == 0
        assert scene.record(8101).dispatch_outcome == "not dispatched: run_lookup_failed"
        report = scene.reconcile()
        assert report.dispatched == 1 and scene.tokens() == ["8101"]
        assert scene.record(8101).reconciled

    def test_without_the_read_token_nothing_is_dispatched(self, scene):
        blind = Scene(scene.github, scene.nomad, read_token=False)
        reply = blind.post(blind.queue(8102, run_id=9102, event="push"))
        assert reply.document["code"] == "run_lookup_failed"
        assert "GITHUB_READ_TOKEN" in reply.document["reason"]
        assert scene.nomad.dispatch_requests() == [] and scene.github.calls() == []

    def test_an_unreachable_github_dispatches_nothing(self, scene):
        scene.settings = settings_from_bindings(
            (
                bindings(scene.nomad.url)
                | {
                    "ROUTING": REFUSING_FORKS.to_json(),
                    "GITHUB_API_URL": "http://127.0.0.1:9",
                    "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
                }
            ).get
        )
        reply = scene.post(scene.queue(8103, run_id=9103, event="push"))
        assert reply.document["code"] == "run_lookup_failed"
        assert "unreachable" in reply.document["reason"]
        assert scene.nomad.dispatch_requests() == []


class TestReconciler:
    def test_a_fork_job_is_ignored_recorded_once_and_costs_no_lookup(self, scene):
        scene.queue(8201, run_id=9201, head=FORK)
        report = scene.reconcile()
        assert report.ignored == {"fork_pull_request": 1} and report.dispatched == 0
        assert report.run_lookups == 0 and scene.run_lookups(9201) == []  # from the runs list
        assert scene.tokens() == []
        written = scene.ledger.snapshot()[ledger_key(REPOSITORY, 8201)]
        assert LedgerRecord.from_json(written).dispatch_outcome == (
            "not dispatched: fork_pull_request"
        )
        again = scene.reconcile(cache=False)  # a 304: the verdict comes from the ETag entry
        assert again.not_modified == 4 and again.ignored == {"fork_pull_request": 1}
        assert again.run_lookups == 0
        assert scene.ledger.snapshot()[ledger_key(REPOSITORY, 8201)] == written  # not rewritten

    def test_a_same_repository_job_is_dispatched_by_the_reconciler(self, scene):
        scene.queue(8202, run_id=9202, event="push")
        scene.queue(8203, run_id=9203, head=FORK)
        report = scene.reconcile()
        assert report.dispatched == 1 and report.ignored == {"fork_pull_request": 1}
        assert scene.tokens() == ["8202"]

    def test_an_entry_without_verdicts_falls_back_to_one_lookup_within_the_budget(self, scene):
        scene.queue(8204, run_id=9204, event="push")
        scene.queue(8205, run_id=9205, head=FORK)
        first = scene.reconcile()
        assert first.dispatched == 1
        key = f"{ETAG_PREFIX}{KEY}:queued"
        entry = json.loads(scene.ledger.snapshot()[key])
        assert entry["origins"] == {"9205": "fork", "9204": "same_repository"}
        del entry["origins"]  # as written before the fork policy existed
        asyncio.run(scene.ledger.put(key, json.dumps(entry), 3600))
        report = scene.reconcile(cache=False)
        assert report.run_lookups == 2
        # Both served repositories' two lists (all 304), two jobs lists, two lookups.
        assert report.not_modified == 4 and report.github_requests == 4 + 2 + 2
        assert report.ignored == {"fork_pull_request": 1} and report.already_dispatched == 1

    def drop_verdicts(self, scene):
        """Rewrite the queued list's ETag entry as written before verdicts were kept in it."""
        key = f"{ETAG_PREFIX}{KEY}:queued"
        entry = json.loads(scene.ledger.snapshot()[key])
        assert entry.pop("origins")
        asyncio.run(scene.ledger.put(key, json.dumps(entry), 3600))

    def test_a_failed_fallback_lookup_dispatches_nothing_until_the_next_run(self, scene):
        scene.queue(8206, run_id=9206, event="push")
        assert scene.reconcile(budget=1).stopped == "budget"  # the queued list only
        self.drop_verdicts(scene)
        scene.github.fail_next(502, path=f"/repos/{REPOSITORY}/actions/runs/9206")
        failed = scene.reconcile(cache=False)
        assert failed.run_lookups == 1 and failed.ignored == {"run_lookup_failed": 1}
        assert any("run 9206" in error and "502" in error for error in failed.errors)
        assert scene.tokens() == [] and scene.nomad.dispatch_requests() == []
        recovered = scene.reconcile(cache=False)
        assert recovered.run_lookups == 1 and recovered.dispatched == 1
        assert scene.tokens() == ["8206"]

    def test_a_budget_too_small_for_the_lookup_dispatches_nothing(self, scene):
        scene.queue(8207, run_id=9207, event="push")
        scene.reconcile(budget=1)
        self.drop_verdicts(scene)
        report = scene.reconcile(budget=2, cache=False)  # the 304 list and the jobs list
        assert report.stopped == "budget" and report.run_lookups == 0
        assert scene.tokens() == [] and scene.run_lookups(9207) == []
