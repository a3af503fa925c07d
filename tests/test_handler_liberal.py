"""Liberal in what a delivery may lack, through the whole core: a delivery lacking an optional
field is decided on what it has, and its log line and ledger record name what was missing."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from handler.events import OPTIONAL_FIELDS
from handler.ledger import LedgerRecord, Observation, ledger_key, merge
from handler.local_server import MemoryLedger, UrllibTransport
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import REPOSITORY, bindings, delivery, register_pools, workflow_job


@pytest.fixture
def nomad():
    # One per test: the pool's cap (10 runners) must not fill up across tests.
    with NomadStandIn() as stand_in:
        register_pools(stand_in)
        yield stand_in


class Core:
    def __init__(self, nomad):
        self.nomad = nomad
        self.settings = settings_from_bindings(bindings(nomad.url).get)
        self.ledger = MemoryLedger()
        self.ports = Ports(
            transport=UrllibTransport(), ledger=self.ledger, monotonic=time.monotonic
        )

    def post(self, payload):
        sent = delivery(payload)
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        return asyncio.run(handle(request, self.settings, self.ports, datetime.now(UTC)))

    def record(self, job_id):
        return LedgerRecord.from_json(self.ledger.snapshot()[ledger_key(REPOSITORY, job_id)])

    def children(self, job_id):
        return [
            child
            for child in self.nomad.children("github-runner-linux-x64")
            if child.idempotency_token == str(job_id)
        ]


@pytest.fixture
def core(nomad):
    return Core(nomad)


def lacking(job_id, *keys, **kwargs):
    payload = workflow_job(job_id=job_id, **kwargs)
    for key in keys:
        del payload["workflow_job"][key]
    return payload


@pytest.mark.parametrize("key", OPTIONAL_FIELDS)
def test_a_queued_job_lacking_one_optional_field_is_dispatched_and_says_so(core, key):
    job_id = 6100 + OPTIONAL_FIELDS.index(key)
    reply = core.post(lacking(job_id, key))
    assert (reply.status, reply.document["outcome"]) == (202, "dispatched"), reply.document
    assert reply.log["missing"] == [key]
    assert len(core.children(job_id)) == 1
    record = core.record(job_id)
    assert record.missing_fields == (key,) and record.child_id is not None


def test_a_queued_job_lacking_every_optional_field_is_dispatched(core):
    reply = core.post(lacking(6200, *OPTIONAL_FIELDS))
    assert reply.document["outcome"] == "dispatched"
    assert reply.log["missing"] == list(OPTIONAL_FIELDS)
    record = core.record(6200)
    assert record.run_attempt is None and record.created_at is None
    assert record.missing_fields == tuple(sorted(OPTIONAL_FIELDS))


def test_a_complete_delivery_logs_nothing_missing(core):
    reply = core.post(workflow_job(job_id=6201))
    # Nothing for the ledger to say: the dispatch is Nomad's to hold (service._worth_recording).
    assert "missing" not in reply.log and reply.log["ledger"].startswith("not written")
    reply = core.post(workflow_job("in_progress", job_id=6201, runner_id=3))
    assert "missing" not in reply.log and core.record(6201).missing_fields == ()


def test_an_old_job_without_created_at_is_still_judged_stale_by_started_at(core):
    old = datetime.now(UTC) - timedelta(hours=30)
    payload = lacking(6202, "created_at")
    payload["workflow_job"]["started_at"] = old.strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = core.post(payload)
    assert reply.document["code"] == "stale" and core.children(6202) == []
    assert reply.log["missing"] == ["created_at"]


def test_later_deliveries_add_to_what_the_record_says_was_missing(core):
    assert core.post(lacking(6203, "run_attempt")).document["outcome"] == "dispatched"
    in_progress = workflow_job("in_progress", job_id=6203, runner_id=3)
    del in_progress["workflow_job"]["runner_name"]
    assert core.post(in_progress).status == 200
    record = core.record(6203)
    assert record.missing_fields == ("run_attempt", "runner_name")
    assert record.state == "in_progress" and record.run_attempt == 1  # the later one had it


@pytest.mark.parametrize("key", ["id", "run_id", "labels"])
def test_a_needed_field_missing_is_still_a_400_naming_it(core, key):
    reply = core.post(lacking(6204, key))
    assert reply.status == 400 and reply.document["reason"].startswith(f"workflow_job.{key}")
    assert core.ledger.snapshot() == {}


class TestLedgerMissingFields:
    def observation(self, **changes):
        values = dict(
            repository=REPOSITORY.lower(),
            job_id=1,
            run_id=2,
            run_attempt=None,
            pool="linux-x64",
            action="queued",
            conclusion=None,
            runner_id=None,
            runner_name=None,
            delivery="d1",
            child_id=None,
            dispatch_outcome="deferred",
            at=100.0,
        )
        return Observation(**(values | changes))

    def test_round_trip_and_union(self):
        first = merge(None, self.observation(missing_fields=("status", "created_at")))
        assert first.missing_fields == ("created_at", "status")
        assert LedgerRecord.from_json(first.to_json()) == first
        later = merge(first, self.observation(delivery="d2", missing_fields=("name", "status")))
        assert later.missing_fields == ("created_at", "name", "status")

    def test_a_record_written_before_the_field_reads_back_with_none(self):
        document = json.loads(merge(None, self.observation()).to_json())
        del document["missing_fields"]
        assert LedgerRecord.from_json(json.dumps(document)).missing_fields == ()

    def test_the_list_is_bounded(self):
        names = tuple(f"field_{n:02d}" for n in range(40))
        record = merge(None, self.observation(missing_fields=names))
        assert len(record.missing_fields) == 16 and len(record.to_json()) < 2000
