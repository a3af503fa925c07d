"""Time to runner per pool, in GET /status and GET /metrics, from a synthetic ledger.

Twenty jobs of ``linux-x64`` queued at t=10,000, job i dispatched i seconds later and started
2i seconds later; jobs 1-5 were deferred at the cap first; jobs 21-23 are still queued (one of
them dispatched, none started). The answers are known: nearest-rank p50 of 1..20 is 10, p95
is 19, the maximum 20. ``/metrics`` is read back with ``prometheus_client``'s own parser.
"""

import asyncio
import json
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from handler.ledger import LEDGER_TTL_SECONDS, Observation, ledger_key, merge
from handler.local_server import MemoryLedger
from handler.metrics import CONTENT_TYPE
from handler.service import (
    IncomingRequest,
    Ports,
    TransportError,
    handle,
    settings_from_bindings,
)
from handler.status import distribution
from tests.standins.webhooks import bindings, status_headers

QUEUED_AT = 10_000.0


def observe(job_id, action, at, **fields):
    values = {
        "repository": "codertocat/hello-world",
        "job_id": job_id,
        "run_id": 1,
        "run_attempt": 1,
        "pool": "linux-x64",
        "action": action,
        "conclusion": None,
        "runner_id": None,
        "runner_name": None,
        "delivery": f"{job_id}-{action}-{at}",
        "child_id": None,
        "dispatch_outcome": None,
        "at": at,
        "created_at": QUEUED_AT,
    }
    return Observation(**(values | fields))


def synthetic_ledger():
    ledger = MemoryLedger()
    records = {}
    for i in range(1, 21):
        record = None
        if i <= 5:
            record = merge(record, observe(i, "queued", QUEUED_AT, dispatch_outcome="deferred"))
        record = merge(
            record,
            observe(i, "queued", QUEUED_AT + i, child_id=f"c{i}", dispatch_outcome="dispatched"),
        )
        record = merge(
            record, observe(i, "in_progress", QUEUED_AT + 2 * i + 1, started_at=QUEUED_AT + 2 * i)
        )
        records[i] = record
    records[21] = merge(None, observe(21, "queued", QUEUED_AT, dispatch_outcome="deferred"))
    records[22] = merge(None, observe(22, "queued", QUEUED_AT, dispatch_outcome="failed"))
    records[23] = merge(
        None, observe(23, "queued", QUEUED_AT + 3, child_id="c23", dispatch_outcome="dispatched")
    )
    for job_id, record in records.items():
        key = ledger_key(record.repository, job_id)
        asyncio.run(ledger.put(key, record.to_json(), LEDGER_TTL_SECONDS, record.summary()))
    return ledger


class LiveChildren:
    """Nomad's answer to /status's read of each pool's live children: ``jobs`` per parent (the
    GitHub job ids the children were dispatched for), or a connection that fails."""

    def __init__(self, jobs=None, *, down=False):
        self.jobs, self.down = jobs or {}, down

    async def send(self, request):
        if self.down:
            raise TransportError("connection refused")
        query = parse_qs(urlsplit(request.url).query)
        parent = query["filter"][0].split('"')[1]
        ids = [
            f"{parent}/dispatch-gh{job}-1796000000-0a1b2c3d" for job in self.jobs.get(parent, ())
        ]
        return 200, json.dumps([{"ID": i, "Status": "running"} for i in ids]).encode()


@pytest.fixture
def nomad_children():
    # Job 23 is in the ledger (no second count); job 90 only in Nomad: a runner starting.
    return LiveChildren({"github-runner-linux-x64": [23, 90]})


@pytest.fixture
def answer(nomad_children):
    settings = settings_from_bindings(bindings("http://127.0.0.1:9").get)
    ports = Ports(transport=nomad_children, ledger=synthetic_ledger(), monotonic=time.monotonic)

    def get(path, headers=None):
        chosen = status_headers() if headers is None else headers
        request = IncomingRequest("GET", path, chosen, b"")
        return asyncio.run(handle(request, settings, ports, datetime.now(UTC)))

    return get


def test_distribution_of_known_values():
    assert distribution([float(n) for n in range(20, 0, -1)]) == {
        "count": 20,
        "p50": 10.0,
        "p95": 19.0,
        "max": 20.0,
        "sum": 210.0,
    }
    assert distribution([]) == {"count": 0, "p50": None, "p95": None, "max": None, "sum": 0.0}


def test_status_gives_time_to_runner_per_pool(answer):
    reply = answer("/status")
    assert reply.status == 200
    pool = reply.document["pools"]["linux-x64"]
    # 20 dispatched from the synthetic jobs plus job 23 (3 s): 1..20 and 3.
    assert pool["queue_to_dispatch_seconds"] == {
        "count": 21,
        "p50": 10.0,
        "p95": 19.0,
        "max": 20.0,
        "sum": 213.0,
    }
    assert pool["queue_to_running_seconds"] == {
        "count": 20,
        "p50": 20.0,
        "p95": 38.0,
        "max": 40.0,
        "sum": 420.0,
    }
    # Jobs 1-5 and 21 were deferred; 1-5 got a runner 1..5 s after created_at.
    assert pool["deferred_at_cap"] == {
        "jobs": 6,
        "wait_seconds": {"count": 5, "p50": 3.0, "p95": 5.0, "max": 5.0, "sum": 15.0},
    }
    # 21, 22 and 23: queued, none started; 90: Nomad runs its runner, no delivery since.
    assert pool["queued_not_running"] == 4 and pool["runners_starting"] == 1
    assert reply.document["pools"]["gpu"]["queue_to_running_seconds"]["count"] == 0
    assert reply.document["nomad"] == "ok"


@pytest.mark.parametrize("nomad_children", [LiveChildren(down=True)])
def test_status_without_nomad_keeps_the_ledgers_figures_and_says_why(answer):
    reply = answer("/status")
    assert reply.status == 200
    pool = reply.document["pools"]["linux-x64"]
    assert pool["queued_not_running"] == 3 and pool["runners_starting"] is None
    assert reply.document["nomad"].split("; ") == [
        f"{pool}: unreachable" for pool in ("linux-x64", "linux-x64-large", "gpu", "arm")
    ]


def test_metrics_parse_as_prometheus_text_with_the_same_figures(answer):
    reply = answer("/metrics")
    assert reply.status == 200 and reply.content_type == CONTENT_TYPE
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}

    def sample(family, name, **labels):
        (value,) = [
            s.value for s in families[family].samples if s.name == name and s.labels == labels
        ]
        return value

    running = "github_runners_queue_to_running_seconds"
    assert families[running].type == "summary"
    assert sample(running, running, pool="linux-x64", quantile="0.5") == 20.0
    assert sample(running, running, pool="linux-x64", quantile="0.95") == 38.0
    assert sample(running, running, pool="linux-x64", quantile="1") == 40.0
    assert sample(running, running + "_count", pool="linux-x64") == 20.0
    assert sample(running, running + "_sum", pool="linux-x64") == 420.0
    dispatch = "github_runners_queue_to_dispatch_seconds"
    assert sample(dispatch, dispatch, pool="linux-x64", quantile="0.95") == 19.0
    wait = "github_runners_deferred_wait_seconds"
    assert sample(wait, wait, pool="linux-x64", quantile="0.5") == 3.0
    gauges = {
        "github_runners_deferred_jobs": 6,
        "github_runners_queued_not_running_jobs": 4,
        "github_runners_starting_jobs": 1,
        "github_runners_waiting_at_cap_jobs": 1,
        "github_runners_failed_jobs": 1,
        "github_runners_ledger_jobs": 24,
        "github_runners_dispatched_jobs": 22,
    }
    for name, value in gauges.items():
        assert families[name].type == "gauge"
        assert sample(name, name, pool="linux-x64") == value, name
    # A pool with no job yet: counts of zero, no quantile samples.
    assert sample(running, running + "_count", pool="gpu") == 0.0
    assert not [
        s
        for s in families[running].samples
        if s.labels.get("pool") == "gpu" and "quantile" in s.labels
    ]
    assert sample("github_runners_ledger_complete", "github_runners_ledger_complete") == 1.0
    # Prometheus conventions: HELP and TYPE for every family, no counter named without _total.
    for line in reply.text.splitlines():
        if line.startswith("# TYPE"):
            assert line.split()[3] in ("gauge", "summary"), line
    assert reply.text.count("# HELP") == reply.text.count("# TYPE") == len(families)


def test_metrics_need_the_status_token(answer):
    for headers in ({}, {"authorization": "Bearer wrong"}):
        reply = answer("/metrics", headers)
        assert reply.status == 401 and reply.text is None
        assert ("WWW-Authenticate", 'Bearer realm="status"') in reply.headers
