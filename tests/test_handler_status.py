"""handler.status and GET /status: per-pool counts from the ledger's key metadata alone."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from handler import service
from handler.local_server import MemoryLedger, UrllibTransport
from handler.service import (
    STATUS_MAX_RECORDS,
    IncomingRequest,
    LedgerUnavailable,
    Ports,
    StatusCache,
    handle,
    settings_from_bindings,
)
from handler.status import percentile, summarize
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    ROUTING,
    STATUS_TOKEN,
    bindings,
    delivery,
    register_pools,
    status_headers,
    workflow_job,
)

GPU = ("self-hosted", "linux", "x64", "gpu")
SECRETS = ("nomad-token-for-tests", "access-client-secret-for-tests", "webhook-key-for-tests")


class TestSummarize:
    def metadata(self, **fields):
        base = {"p": "linux-x64", "s": "queued", "o": None, "q": 100.0, "d": None, "r": 0}
        return json.dumps(base | {"x": 0, "c": 0} | fields)

    def test_each_outcome_is_counted_once_per_pool(self):
        entries = [
            self.metadata(o="dispatched", c=1, d=100.5),
            self.metadata(o="dispatched", c=1, r=1, d=102.0),
            self.metadata(o="deferred"),
            self.metadata(o="failed"),
            self.metadata(o="not dispatched: stale"),
            self.metadata(o="not dispatched: stale"),
            self.metadata(o="not dispatched: recorded", s="completed", x=1),
            self.metadata(o="dispatched", c=1, x=1, s="completed", d=101.0),
            self.metadata(p="gpu", o="dispatched", c=1, d=100.2),
            None,
            "not json",
        ]
        document = summarize(entries, ROUTING)
        linux = document["pools"]["linux-x64"]
        time_to_runner = (
            "latency_ms",
            "queue_to_dispatch_seconds",
            "queue_to_running_seconds",
            "deferred_at_cap",
            "queued_not_running",
        )
        assert {key: value for key, value in linux.items() if key not in time_to_runner} == {
            "jobs": 8,
            "dispatched": 3,
            "reconciled": 1,
            "deferred": 1,
            "failed": 1,
            "ignored": {"stale": 2, "recorded": 1},
            "cancelled_before_assignment": 2,
            "cleaned_up_by_idle_timeout": 1,
        }
        assert linux["latency_ms"] == {"count": 3, "p50": 1000.0, "p95": 2000.0}
        assert document["pools"]["gpu"]["dispatched"] == 1
        assert document["pools"]["arm"]["jobs"] == 0  # every configured pool is listed
        assert document["unreadable_records"] == 2

    def test_a_damaged_record_cannot_merge_with_its_neighbours(self):
        """Summaries are parsed as one JSON array when each looks like an object; a record
        that would parse as two (or merge with the next) sends them back to one parse each."""
        good = self.metadata(o="dispatched", c=1, d=100.5)
        entries = [good, '{"p":"linux-x64"},{"p":"gpu"}', good, "{}"]
        document = summarize(entries, ROUTING)
        assert document["pools"]["linux-x64"]["jobs"] == 2
        assert document["pools"]["gpu"]["jobs"] == 0
        assert document["unreadable_records"] == 2
        assert document == summarize([good, None, good, None], ROUTING)

    def test_percentile_is_nearest_rank(self):
        values = [float(n) for n in range(1, 101)]
        assert (percentile(values, 0.5), percentile(values, 0.95)) == (50.0, 95.0)
        assert percentile([7.0], 0.95) == 7.0


@pytest.fixture
def nomad():
    with NomadStandIn() as stand_in:
        register_pools(stand_in)
        yield stand_in


def call(nomad, ledger, sent=None, *, path=None, method="POST", now=None, headers=None):
    settings = settings_from_bindings(bindings(nomad.url).get)
    ports = Ports(UrllibTransport(), ledger, time.monotonic)
    if sent is None:
        request = IncomingRequest(
            method, path, status_headers() if headers is None else headers, b""
        )
    else:
        request = IncomingRequest(method, sent.path, sent.headers, sent.body)
    return asyncio.run(handle(request, settings, ports, now or datetime.now(UTC)))


def test_status_endpoint_counts_what_the_webhooks_did(nomad):
    ledger = MemoryLedger()
    created = datetime.now(UTC) - timedelta(seconds=3)
    for job_id in (11, 12):
        payload = workflow_job(job_id=job_id, created_at=created)
        assert call(nomad, ledger, delivery(payload)).document["outcome"] == "dispatched"
    assert call(nomad, ledger, delivery(workflow_job(job_id=21, labels=GPU))).status == 202
    assert (
        call(nomad, ledger, delivery(workflow_job(job_id=22, labels=GPU))).document["outcome"]
        == "deferred"
    )
    stale = workflow_job(job_id=31, created_at=datetime.now(UTC) - timedelta(hours=30))
    assert call(nomad, ledger, delivery(stale)).document["code"] == "stale"
    # Job 12 is cancelled before any runner took it: its runner is the surplus one.
    cancelled = workflow_job("completed", job_id=12, conclusion="cancelled")
    assert call(nomad, ledger, delivery(cancelled)).status == 200
    reply = call(nomad, ledger, path="/status", method="GET")
    assert reply.status == 200 and reply.document["complete"] is True
    linux = reply.document["pools"]["linux-x64"]
    assert (linux["jobs"], linux["dispatched"], linux["ignored"]) == (3, 2, {"stale": 1})
    assert linux["cancelled_before_assignment"] == linux["cleaned_up_by_idle_timeout"] == 1
    # Job 11 is Nomad's alone (no delivery after its queued one): a runner starting, with no
    # latency yet. Job 12's dispatch second comes from its child's id (whole seconds).
    assert linux["runners_starting"] == 1
    assert linux["queued_not_running"] == 2  # job 11, and the stale job 31 (never served)
    assert linux["latency_ms"]["count"] == 1 and 1000 < linux["latency_ms"]["p50"] < 60_000
    gpu = reply.document["pools"]["gpu"]
    assert (gpu["dispatched"], gpu["deferred"], gpu["runners_starting"]) == (1, 1, 1)
    assert reply.document["nomad"] == "ok"
    text = json.dumps(reply.document).lower()
    assert "codertocat" not in text and not any(secret in text for secret in SECRETS)


def test_status_reads_every_page(nomad):
    ledger = MemoryLedger()
    ledger.PAGE_SIZE = 2
    for job_id in range(41, 46):
        call(nomad, ledger, delivery(workflow_job(job_id=job_id)))
        call(nomad, ledger, delivery(workflow_job("in_progress", job_id=job_id, runner_id=3)))
    document = call(nomad, ledger, path="/status", method="GET").document
    linux = document["pools"]["linux-x64"]
    assert (linux["jobs"], linux["dispatched"], linux["runners_starting"]) == (5, 5, 0)


def test_a_ledger_not_listed_in_full_reads_no_nomad_children(nomad, monkeypatch):
    """A recorded job beyond the pages read would pass for a runner Nomad alone knows of."""
    monkeypatch.setattr(service, "STATUS_MAX_PAGES", 1)
    ledger = MemoryLedger()
    ledger.PAGE_SIZE = 2
    for job_id in range(61, 64):
        call(nomad, ledger, delivery(workflow_job(job_id=job_id)))
        call(nomad, ledger, delivery(workflow_job("in_progress", job_id=job_id, runner_id=3)))
    before = len(nomad.requests)
    document = call(nomad, ledger, path="/status", method="GET").document
    assert document["complete"] is False and document["nomad"].startswith("not read")
    assert document["pools"]["linux-x64"]["runners_starting"] is None
    assert len(nomad.requests) == before


class LimitRecordingLedger(MemoryLedger):
    """A ledger that notes the ``limit`` of every list call, as KV's ``limit`` option."""

    def __init__(self):
        super().__init__()
        self.limits = []

    async def list(self, prefix, cursor, limit=1000):
        self.limits.append(limit)
        return await super().list(prefix, cursor, limit)


def fill_summaries(ledger, count, pool="linux-x64"):
    for job_id in range(count):
        summary = json.dumps({"p": pool, "s": "completed", "o": "dispatched", "c": 1, "x": 0})
        asyncio.run(ledger.put(f"job:octo-org/repo:{job_id:05d}", "{}", 3600, summary))


def status_on(nomad, ledger, plan):
    values = bindings(nomad.url) | ({"RECONCILE_PLAN": plan} if plan else {})
    settings = settings_from_bindings(values.get)
    ports = Ports(UrllibTransport(), ledger, time.monotonic)
    request = IncomingRequest("GET", "/status", status_headers(), b"")
    return asyncio.run(handle(request, settings, ports, datetime.now(UTC))).document


@pytest.mark.parametrize("plan", [None, "free"])
def test_status_on_the_free_plan_stops_at_its_record_bound_and_says_incomplete(nomad, plan):
    """The Free plan's 10 ms of CPU holds about 50 records (bench/cpu_budget.py): past them
    the answer is partial and says so, and KV is asked for no more than it summarizes."""
    bound = STATUS_MAX_RECORDS["free"]
    ledger = LimitRecordingLedger()
    fill_summaries(ledger, bound + 50)
    document = status_on(nomad, ledger, plan)  # no RECONCILE_PLAN binding: the Free plan
    assert document["complete"] is False
    assert document["records_read"] == bound
    assert document["pools"]["linux-x64"]["jobs"] == bound
    assert ledger.limits == [bound]  # one list call, for exactly the records it summarizes


def test_status_on_the_free_plan_is_complete_within_its_bound(nomad):
    ledger = LimitRecordingLedger()
    fill_summaries(ledger, STATUS_MAX_RECORDS["free"] - 1)
    document = status_on(nomad, ledger, "free")
    assert document["complete"] is True
    bound = STATUS_MAX_RECORDS["free"]
    assert document["records_read"] == document["pools"]["linux-x64"]["jobs"] == bound - 1


def test_status_on_a_paid_plan_reads_every_page(nomad):
    ledger = LimitRecordingLedger()
    ledger.PAGE_SIZE = 40
    fill_summaries(ledger, 150)
    document = status_on(nomad, ledger, "paid")
    assert document["complete"] is True and document["records_read"] == 150
    assert document["pools"]["linux-x64"]["jobs"] == 150
    assert len(ledger.limits) == 4  # pages of 40: 40, 40, 40, 30


def test_metrics_say_the_free_plan_answer_is_incomplete(nomad):
    ledger = LimitRecordingLedger()
    fill_summaries(ledger, STATUS_MAX_RECORDS["free"] + 1)
    settings = settings_from_bindings(bindings(nomad.url).get)
    ports = Ports(UrllibTransport(), ledger, time.monotonic)
    request = IncomingRequest("GET", "/metrics", status_headers(), b"")
    text = asyncio.run(handle(request, settings, ports, datetime.now(UTC))).text
    lines = text.splitlines()
    assert "github_runners_ledger_complete 0" in lines
    assert f"github_runners_ledger_records_read {STATUS_MAX_RECORDS['free']}" in lines


def test_status_answers_are_reused_within_the_cache_window(nomad):
    """Polling /status cannot spend the KV list quota: one list per window, then fresh again."""
    settings = settings_from_bindings(bindings(nomad.url).get)
    clock = [1000.0]

    class CountingLedger(MemoryLedger):
        lists = 0

        async def list(self, prefix, cursor, limit=1000):
            CountingLedger.lists += 1
            return await super().list(prefix, cursor, limit)

    ledger = CountingLedger()
    cache = StatusCache(seconds=30)
    ports = Ports(UrllibTransport(), ledger, lambda: clock[0], status_cache=cache)

    def status():
        request = IncomingRequest("GET", "/status", status_headers(), b"")
        return asyncio.run(handle(request, settings, ports, datetime.now(UTC))).document

    assert call(nomad, ledger, delivery(workflow_job(job_id=51))).status == 202
    first = status()
    assert first["pools"]["linux-x64"]["dispatched"] == 1 and CountingLedger.lists == 1
    assert call(nomad, ledger, delivery(workflow_job(job_id=52))).status == 202
    clock[0] += 29
    assert status() == first and CountingLedger.lists == 1
    clock[0] += 2
    assert status()["pools"]["linux-x64"]["dispatched"] == 2 and CountingLedger.lists == 2


def test_status_wants_get_and_a_working_ledger(nomad):
    assert call(nomad, MemoryLedger(), path="/status", method="POST").status == 405

    class BrokenKv(MemoryLedger):
        async def list(self, prefix, cursor, limit=1000):
            raise LedgerUnavailable("KV 503")

    reply = call(nomad, BrokenKv(), path="/status", method="GET")
    assert reply.status == 503 and "ledger unavailable" in reply.document["reason"]


class TestBearerToken:
    """GET /status answers only the operator's STATUS_TOKEN: it reveals private activity."""

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"authorization": "Bearer wrong-token"},
            {"authorization": f"Basic {STATUS_TOKEN}"},
            {"authorization": STATUS_TOKEN},
            {"authorization": f"Bearer {STATUS_TOKEN}x"},
            {"authorization": "Bearer "},
        ],
    )
    def test_anything_but_the_token_is_401_and_lists_nothing(self, nomad, headers):
        class CountingLedger(MemoryLedger):
            lists = 0

            async def list(self, prefix, cursor, limit=1000):
                CountingLedger.lists += 1
                return await super().list(prefix, cursor, limit)

        ledger = CountingLedger()
        reply = call(nomad, ledger, path="/status", method="GET", headers=headers)
        assert reply.status == 401 and reply.document["outcome"] == "rejected"
        assert ("WWW-Authenticate", 'Bearer realm="status"') in reply.headers
        assert "pools" not in reply.document and CountingLedger.lists == 0
        assert STATUS_TOKEN not in json.dumps(reply.document) + json.dumps(reply.log)

    def test_the_scheme_is_case_insensitive(self, nomad):
        headers = {"authorization": f"bearer {STATUS_TOKEN}"}
        assert (
            call(nomad, MemoryLedger(), path="/status", method="GET", headers=headers).status == 200
        )

    def test_a_cached_answer_is_not_served_without_the_token(self, nomad):
        settings = settings_from_bindings(bindings(nomad.url).get)
        ports = Ports(UrllibTransport(), MemoryLedger(), time.monotonic, status_cache=StatusCache())

        def status(headers):
            request = IncomingRequest("GET", "/status", headers, b"")
            return asyncio.run(handle(request, settings, ports, datetime.now(UTC))).status

        assert status(status_headers()) == 200
        assert status({}) == 401

    def test_without_a_configured_token_status_is_closed(self, nomad):
        values = bindings(nomad.url)
        del values["STATUS_TOKEN"]
        settings = settings_from_bindings(values.get)
        ports = Ports(UrllibTransport(), MemoryLedger(), time.monotonic)
        for headers in ({}, {"authorization": "Bearer "}, {"authorization": "Bearer None"}):
            request = IncomingRequest("GET", "/status", headers, b"")
            assert asyncio.run(handle(request, settings, ports, datetime.now(UTC))).status == 401
