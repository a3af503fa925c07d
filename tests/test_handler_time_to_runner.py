"""Time to runner per pool, in GET /status and GET /metrics, from a synthetic ledger.

Twenty jobs of ``linux-x64`` queued at t=10,000, job i dispatched i seconds later and started
2i seconds later; jobs 1-5 were deferred at the cap first; jobs 21-23 are still queued (one of
them dispatched, none started). The answers are known: nearest-rank p50 of 1..20 is 10, p95
is 19, the maximum 20. ``/metrics`` is read back with ``prometheus_client``'s own parser.
"""

import asyncio
import time
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from handler.ledger import LEDGER_TTL_SECONDS, Observation, ledger_key, merge
from handler.local_server import MemoryLedger
from handler.metrics import CONTENT_TYPE
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
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


@pytest.fixture
def answer():
    settings = settings_from_bindings(bindings("http://127.0.0.1:9").get)
    ports = Ports(transport=None, ledger=synthetic_ledger(), monotonic=time.monotonic)

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
    assert pool["queued_not_running"] == 3  # 21, 22 and 23: queued, none started
    assert reply.document["pools"]["gpu"]["queue_to_running_seconds"]["count"] == 0


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
        "github_runners_queued_not_running_jobs": 3,
        "github_runners_waiting_at_cap_jobs": 1,
        "github_runners_failed_jobs": 1,
        "github_runners_ledger_jobs": 23,
        "github_runners_dispatched_jobs": 21,
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
