"""The per-pool concurrency cap in handler.service: at the cap a job is deferred, never dropped.

Against the Nomad stand-in: the ``gpu`` pool of the test routing allows one runner. The summary
read (``GET /v1/job/{pool}/summary``) counts pending and running children; dead ones free a slot.
"""

import asyncio
import time
from datetime import UTC, datetime

import pytest

from handler.ledger import LedgerRecord, ledger_key
from handler.local_server import MemoryLedger, UrllibTransport
from handler.nomad import NomadBadResponse, interpret_summary_response
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import REPOSITORY, bindings, delivery, register_pools, workflow_job

GPU = ("self-hosted", "linux", "x64", "gpu")


@pytest.fixture
def nomad():
    with NomadStandIn() as stand_in:
        register_pools(stand_in)
        yield stand_in


def post(nomad, ledger, job_id):
    settings = settings_from_bindings(bindings(nomad.url).get)
    ports = Ports(transport=UrllibTransport(), ledger=ledger, monotonic=time.monotonic)
    sent = delivery(workflow_job(job_id=job_id, labels=GPU))
    request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
    return asyncio.run(handle(request, settings, ports, datetime.now(UTC)))


def test_second_job_at_a_one_runner_pool_is_deferred_and_recorded(nomad):
    ledger = MemoryLedger()
    first = post(nomad, ledger, 501)
    assert first.status == 202 and first.document["outcome"] == "dispatched"
    second = post(nomad, ledger, 502)
    assert second.status == 202 and second.document["outcome"] == "deferred"
    assert "cap" in second.document["reason"] and second.log["active_runners"] == 1
    assert len(nomad.children("github-runner-gpu")) == 1
    record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, 502)])
    assert record.dispatch_outcome == "deferred" and record.child_id is None


def test_a_finished_runner_frees_its_slot(nomad):
    ledger = MemoryLedger()
    assert post(nomad, ledger, 511).document["outcome"] == "dispatched"
    (child,) = nomad.children("github-runner-gpu")
    nomad.set_status(child.id, "dead")
    again = post(nomad, ledger, 512)
    assert again.document["outcome"] == "dispatched"
    assert [c.idempotency_token for c in nomad.children("github-runner-gpu")].count("512") == 1


def test_the_summary_is_read_before_every_dispatch(nomad):
    post(nomad, MemoryLedger(), 521)
    paths = [r.path for r in nomad.requests]
    assert paths == ["/v1/job/github-runner-gpu/summary", "/v1/job/github-runner-gpu/dispatch"]
    assert nomad.requests[0].query["namespace"] == "github-runners"


def test_a_failed_summary_read_dispatches_nothing_and_fails_like_a_dispatch(nomad):
    with nomad.faulty("403"):
        reply = post(nomad, MemoryLedger(), 531)
    assert reply.status == 502 and reply.document["outcome"] == "failed"
    assert nomad.dispatch_requests() == []


def test_one_failed_summary_read_is_retried(nomad):
    nomad.one_shot_faults.append("500")
    reply = post(nomad, MemoryLedger(), 541)
    assert reply.document["outcome"] == "dispatched" and reply.log["attempts"] == 2


class TestInterpretSummary:
    def test_pending_and_running_count_dead_does_not(self):
        body = b'{"Children": {"Pending": 2, "Running": 3, "Dead": 40}}'
        assert interpret_summary_response(200, body) == 5

    @pytest.mark.parametrize(
        "body", [b"<html>", b"[]", b'{"Summary": {}}', b'{"Children": {"Pending": "2"}}']
    )
    def test_answers_nomad_never_gives_are_errors(self, body):
        with pytest.raises(NomadBadResponse):
            interpret_summary_response(200, body)


def test_a_redelivery_at_the_cap_is_deferred_and_keeps_the_child(nomad):
    ledger = MemoryLedger()
    first = post(nomad, ledger, 551)
    again = post(nomad, ledger, 551)
    assert (first.document["outcome"], again.document["outcome"]) == ("dispatched", "deferred")
    assert len(nomad.children("github-runner-gpu")) == 1
    record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, 551)])
    assert record.child_id == first.document["nomad_job_id"]
    assert record.dispatch_outcome == "dispatched"
