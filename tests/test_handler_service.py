"""handler.service under CPython: whole deliveries through the core to the Nomad stand-in."""

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from handler import service
from handler.contract import DISPATCH_META_KEYS, WORKER_NOMAD_CAPABILITIES
from handler.ledger import LedgerRecord, ledger_key
from handler.local_server import MemoryLedger, UrllibTransport
from handler.nomad import dispatch_request
from handler.service import (
    MAX_BODY_BYTES,
    ConfigurationError,
    IncomingRequest,
    LedgerUnavailable,
    Ports,
    handle,
    settings_from_bindings,
)
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REPOSITORY,
    ROUTING,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)

SECRETS = ("nomad-token-for-tests", "access-client-secret-for-tests", "webhook-key-for-tests")


@pytest.fixture(scope="module")
def nomad():
    # The Nomad token holds exactly the deployed policy's capabilities (no list-jobs).
    with NomadStandIn(capabilities=WORKER_NOMAD_CAPABILITIES) as stand_in:
        register_pools(stand_in)
        yield stand_in


@pytest.fixture
def ledger():
    return MemoryLedger()


@pytest.fixture
def settings(nomad):
    return settings_from_bindings(bindings(nomad.url).get)


class Harness:
    def __init__(self, settings, ledger):
        self.settings = settings
        self.ports = Ports(transport=UrllibTransport(), ledger=ledger, monotonic=time.monotonic)

    def post(self, sent, *, method="POST", path=None, body=..., now=None):
        request = IncomingRequest(
            method=method,
            path=path or sent.path,
            headers=sent.headers,
            body=sent.body if body is ... else body,
        )
        reply = asyncio.run(handle(request, self.settings, self.ports, now or datetime.now(UTC)))
        text = json.dumps(reply.document) + json.dumps(reply.log)
        for secret in SECRETS:
            assert secret not in text, "a secret leaked into the reply or the log"
        return reply


@pytest.fixture
def harness(settings, ledger):
    return Harness(settings, ledger)


def unique_job():
    # Each test dispatches its own job id so the module-scoped stand-in needs no reset.
    return time.time_ns() % 10**12


def children_for(nomad, job_id):
    return [
        c for c in nomad.children("github-runner-linux-x64") if c.idempotency_token == str(job_id)
    ]


class TestDispatch:
    def test_signed_queued_self_hosted_job_dispatches_exactly_one_runner(
        self, harness, nomad, ledger
    ):
        job_id = unique_job()
        sent = delivery(workflow_job(job_id=job_id))
        reply = harness.post(sent)
        assert reply.status == 202, reply.document
        assert reply.document["outcome"] == "dispatched"
        (child,) = children_for(nomad, job_id)
        assert reply.document["nomad_job_id"] == child.id
        assert child.id.startswith(f"github-runner-linux-x64/dispatch-gh{job_id}-")
        assert sorted(child.meta) == sorted(DISPATCH_META_KEYS)
        assert child.meta["github_repository"] == REPOSITORY
        assert child.meta["github_job_id"] == str(job_id)
        # Nomad holds the dispatch: the child's id names the job; the ledger has nothing yet.
        assert ledger_key(REPOSITORY, job_id) not in ledger.snapshot()
        log = reply.log
        assert log["delivery"] == sent.headers["x-github-delivery"]
        assert (log["repository"], log["job_id"], log["decision"]) == (
            "codertocat/hello-world",
            job_id,
            "dispatched",
        )
        assert log["nomad_child"] == child.id and log["latency_ms"] > 0
        assert log["attempts"] == 1 and log["ledger"] == "not written: Nomad holds the dispatch"

    def test_the_next_delivery_records_the_dispatch_nomad_holds(self, harness, nomad, ledger):
        job_id = unique_job()
        queued = harness.post(delivery(workflow_job(job_id=job_id)))
        started = delivery(workflow_job("in_progress", job_id=job_id, runner_id=3))
        reply = harness.post(started)
        assert reply.status == 200 and reply.log["ledger"] == "written"
        (child,) = children_for(nomad, job_id)
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
        assert record.child_id == child.id == queued.document["nomad_job_id"]
        assert record.pool == "linux-x64" and record.dispatch_outcome == "dispatched"
        assert record.state == "in_progress" and not record.reconciled
        assert record.dispatched_at == float(child.id.split("-")[-2])
        assert record.deliveries == (started.headers["x-github-delivery"],)
        # Known now: the job's completion reads nothing more from Nomad.
        lookups = len(nomad.requests)
        done = workflow_job("completed", job_id=job_id, runner_id=3, conclusion="success")
        assert harness.post(delivery(done)).log["ledger"].startswith("written")
        assert not any(
            r.path == "/v1/jobs/statuses" and f'"{job_id}"' in r.query["filter"]
            for r in nomad.requests[lookups:]
        )

    def test_a_job_redispatched_by_the_reconciler_records_its_newest_child(
        self, harness, nomad, ledger
    ):
        """Two children for one job (a successor replaced a dead one): the record names the
        newest (the reconciler's walk starts there) and the first's second as dispatch time."""
        job_id = unique_job()
        first = harness.post(delivery(workflow_job(job_id=job_id))).document["nomad_job_id"]
        nomad.set_status(first, "dead")
        successor = dispatch_request(
            nomad_addr=harness.settings.nomad_addr,
            namespace="github-runners",
            nomad_job="github-runner-linux-x64",
            meta=children_for(nomad, job_id)[0].meta,
            idempotency_token=f"{job_id}:successor",
            credentials=harness.settings.credentials,
            id_prefix=f"gh{job_id}",
        )
        status, body = asyncio.run(UrllibTransport().send(successor))
        assert status == 200
        second = json.loads(body)["DispatchedJobID"]
        harness.post(delivery(workflow_job("in_progress", job_id=job_id, runner_id=3)))
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
        assert record.child_id == second
        assert record.dispatched_at == float(first.split("-")[-2])

    def test_the_dispatch_carries_access_and_nomad_credentials(self, harness, nomad):
        job_id = unique_job()
        harness.post(delivery(workflow_job(job_id=job_id)))
        request = nomad.dispatch_requests()[-1]
        assert request.headers["x-nomad-token"] == "nomad-token-for-tests"
        assert request.headers["cf-access-client-id"] == "access-client-id.access"
        assert request.query == {"namespace": "github-runners", "idempotency_token": str(job_id)}

    def test_same_delivery_again_starts_no_second_runner(self, harness, nomad, ledger):
        job_id = unique_job()
        sent = delivery(workflow_job(job_id=job_id))
        first = harness.post(sent)
        again = harness.post(sent)
        assert (first.status, again.status) == (202, 202)
        assert again.document["outcome"] == "already_dispatched"
        assert again.document["nomad_job_id"] == first.document["nomad_job_id"]
        assert len(children_for(nomad, job_id)) == 1
        assert ledger_key(REPOSITORY, job_id) not in ledger.snapshot()
        assert again.log["ledger"].startswith("not written")

    def test_a_new_delivery_of_the_same_job_is_also_deduplicated(self, harness, nomad):
        job_id = unique_job()
        harness.post(delivery(workflow_job(job_id=job_id)))
        harness.post(delivery(workflow_job(job_id=job_id)))
        assert len(children_for(nomad, job_id)) == 1

    def test_later_actions_update_the_ledger_and_flag_cancel_before_assignment(
        self, harness, ledger
    ):
        job_id = unique_job()
        harness.post(delivery(workflow_job(job_id=job_id)))
        reply = harness.post(
            delivery(workflow_job("completed", job_id=job_id, conclusion="cancelled"))
        )
        assert reply.status == 200 and reply.document["code"] == "recorded"
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
        assert record.state == "completed" and record.cancelled_before_assignment
        assert record.child_id is not None

    def test_github_hosted_jobs_are_not_recorded(self, harness, ledger):
        reply = harness.post(delivery(workflow_job(labels=["ubuntu-latest"])))
        assert reply.status == 200 and reply.document["code"] == "not_self_hosted"
        assert ledger.snapshot() == {}


class TestRejections:
    def test_forged_signature_is_401_and_dispatches_nothing(self, harness, nomad):
        before = len(nomad.requests)
        sent = delivery(workflow_job(), signature="sha256=" + "0" * 64)
        reply = harness.post(sent)
        assert reply.status == 401 and reply.document["outcome"] == "rejected"
        assert len(nomad.requests) == before

    def test_signature_made_for_another_repository_is_401(self, harness):
        """Each repository has its own secret: a hook of repo B cannot speak for repo A."""
        sent = delivery(workflow_job(), repository="octo-org/octo-repo")
        reply = harness.post(sent, path="/webhook/codertocat/hello-world")
        assert reply.status == 401

    def test_payload_of_another_repository_is_400(self, harness, nomad):
        before = len(nomad.requests)
        payload = workflow_job(repository="octo-org/octo-repo", labels=["self-hosted", "arm64"])
        reply = harness.post(delivery(payload, repository=REPOSITORY))
        assert reply.status == 400 and "does not match" in reply.document["reason"]
        assert len(nomad.requests) == before

    def test_unknown_repository_is_ignored(self, harness):
        payload = workflow_job(repository="someone/else")
        reply = harness.post(delivery(payload, repository="someone/else"))
        assert reply.status == 200 and reply.document["code"] == "repository_not_served"

    def test_stale_job_is_ignored(self, harness, nomad):
        old = datetime.now(UTC) - timedelta(hours=25)
        reply = harness.post(delivery(workflow_job(job_id=unique_job(), created_at=old)))
        assert reply.status == 200 and reply.document["code"] == "stale"

    @pytest.mark.parametrize("header", ["x-github-event", "x-github-delivery"])
    def test_missing_github_headers_are_400(self, harness, header):
        sent = delivery(workflow_job())
        del sent.headers[header]
        assert harness.post(sent).status == 400

    def test_missing_signature_is_401(self, harness):
        sent = delivery(workflow_job())
        del sent.headers["x-hub-signature-256"]
        assert harness.post(sent).status == 401

    def test_malformed_json_is_400(self, harness):
        reply = harness.post(delivery(b'{"action": "queued",'))
        assert reply.status == 400 and reply.document["reason"].startswith("body")

    def test_body_over_one_mib_is_413(self, harness):
        big = b" " * (MAX_BODY_BYTES + 1)
        assert harness.post(delivery(big)).status == 413
        assert harness.post(delivery(b"{}"), body=None).status == 413

    def test_wrong_method_is_405(self, harness):
        reply = harness.post(delivery(workflow_job()), method="GET")
        assert reply.status == 405 and ("Allow", "POST") in reply.headers

    def test_unknown_path_is_404(self, harness):
        assert harness.post(delivery(workflow_job()), path="/hook").status == 404
        assert harness.post(delivery(workflow_job()), path="/webhook/a/b/c").status == 404

    def test_health(self, harness):
        assert harness.post(delivery(b""), method="GET", path="/healthz").status == 200

    def test_ping_is_answered(self, harness):
        from tests.standins.webhooks import load

        reply = harness.post(delivery(load("ping/payload"), event="ping"))
        assert reply.status == 200 and reply.document["outcome"] == "pong"

    def test_other_events_are_acknowledged(self, harness):
        reply = harness.post(delivery({"ref": "main"}, event="push"))
        assert reply.status == 200 and reply.document["outcome"] == "ignored"


class TestNomadFailures:
    def test_bad_nomad_token_is_502_without_retry(self, nomad, ledger):
        values = bindings(nomad.url) | {"NOMAD_TOKEN": "wrong"}
        harness = Harness(settings_from_bindings(values.get), ledger)
        reply = harness.post(delivery(workflow_job(job_id=unique_job())))
        assert reply.status == 502 and "Permission denied" in reply.document["reason"]
        assert reply.log["attempts"] == 1

    def test_missing_access_credentials_are_502(self, nomad, ledger):
        values = bindings(nomad.url) | {"CF_ACCESS_CLIENT_SECRET": "wrong"}
        harness = Harness(settings_from_bindings(values.get), ledger)
        reply = harness.post(delivery(workflow_job(job_id=unique_job())))
        assert reply.status == 502 and "403" in reply.document["reason"]

    def test_one_500_is_retried_and_the_job_dispatched_once(self, harness, nomad):
        job_id = unique_job()
        nomad.one_shot_faults.append("500")
        reply = harness.post(delivery(workflow_job(job_id=job_id)))
        assert reply.status == 202 and reply.log["attempts"] == 2
        assert len(children_for(nomad, job_id)) == 1

    def test_persistent_500_is_502_after_one_retry(self, harness, nomad, ledger):
        job_id = unique_job()
        with nomad.faulty("500"):
            reply = harness.post(delivery(workflow_job(job_id=job_id)))
        assert reply.status == 502 and reply.log["attempts"] == 2
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
        assert record.dispatch_outcome == "failed" and record.child_id is None

    def test_nomad_down_is_503_after_one_retry(self, harness, nomad):
        with nomad.faulty("down"):
            reply = harness.post(delivery(workflow_job(job_id=unique_job())))
        assert reply.status == 503 and reply.log["attempts"] == 2

    def test_connection_refused_is_503(self, ledger):
        values = bindings("http://127.0.0.1:9")
        harness = Harness(settings_from_bindings(values.get), ledger)
        assert harness.post(delivery(workflow_job(job_id=unique_job()))).status == 503

    def test_slow_nomad_times_out_within_the_budget(self, harness, nomad, monkeypatch):
        monkeypatch.setattr(service, "ATTEMPT_TIMEOUT_SECONDS", 0.2)
        nomad.slow_seconds = 0.6
        started = time.monotonic()
        with nomad.faulty("slow"):
            reply = harness.post(delivery(workflow_job(job_id=unique_job())))
        assert reply.status == 503 and "timed out" in reply.document["reason"]
        assert reply.log["attempts"] == 2 and time.monotonic() - started < 1.5

    def test_required_meta_missing_at_nomad_is_502_with_the_reason(self, harness, nomad):
        nomad.register_job(
            "github-runner-arm", meta_required=(*DISPATCH_META_KEYS, "something_else")
        )
        payload = workflow_job(
            job_id=unique_job(), repository="octo-org/octo-repo", labels=["self-hosted", "arm64"]
        )
        try:
            reply = harness.post(delivery(payload, repository="octo-org/octo-repo"))
        finally:
            register_pools(nomad)
        assert reply.status == 502 and "something_else" in reply.document["reason"]

    def test_a_failing_ledger_does_not_fail_the_delivery(self, settings, nomad):
        class BrokenLedger:
            async def get(self, key):
                raise LedgerUnavailable("KV said 429")

            async def put(self, key, value, ttl_seconds):
                raise AssertionError("not reached")

        harness = Harness(settings, BrokenLedger())
        reply = harness.post(delivery(workflow_job(job_id=unique_job())))
        assert reply.status == 202 and reply.log["ledger"].startswith("failed")


class TestSettings:
    def test_routing_is_parsed_from_the_binding(self, nomad):
        assert settings_from_bindings(bindings(nomad.url).get).routing == ROUTING

    @pytest.mark.parametrize("name", ["ROUTING", "NOMAD_ADDR", "NOMAD_TOKEN", "WEBHOOK_SECRET_KEY"])
    def test_missing_binding_is_named(self, nomad, name):
        values = bindings(nomad.url)
        del values[name]
        with pytest.raises(ConfigurationError, match=name):
            settings_from_bindings(values.get)

    def test_bad_routing_is_named(self, nomad):
        values = bindings(nomad.url) | {"ROUTING": '{"version": 2}'}
        with pytest.raises(ConfigurationError, match=r"ROUTING: routing\.version"):
            settings_from_bindings(values.get)

    def test_nomad_addr_must_be_a_url(self, nomad):
        values = bindings(nomad.url) | {"NOMAD_ADDR": "nomad.example.com"}
        with pytest.raises(ConfigurationError, match="NOMAD_ADDR"):
            settings_from_bindings(values.get)

    def test_repr_of_settings_hides_secrets(self, settings):
        text = repr(settings)
        assert not any(secret in text for secret in SECRETS)


class TestDeferredLedger:
    def test_with_a_defer_port_the_ledger_is_written_after_the_reply(self, settings, ledger):
        deferred = []
        ports = Ports(
            transport=UrllibTransport(),
            ledger=ledger,
            monotonic=time.monotonic,
            defer=lambda delivery_id, pending: deferred.append((delivery_id, pending)),
        )
        job_id = unique_job()
        queued = delivery(workflow_job(job_id=job_id))
        request = IncomingRequest("POST", queued.path, queued.headers, queued.body)
        dispatched = asyncio.run(handle(request, settings, ports, datetime.now(UTC)))
        assert dispatched.status == 202 and deferred == []  # nothing to write: Nomad has it
        sent = delivery(workflow_job("in_progress", job_id=job_id, runner_id=3))
        request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
        reply = asyncio.run(handle(request, settings, ports, datetime.now(UTC)))
        assert reply.status == 200 and reply.log["ledger"] == "deferred"
        assert ledger.snapshot() == {}, "nothing written before the reply"
        ((delivery_id, pending),) = deferred
        assert delivery_id == sent.headers["x-github-delivery"]
        assert asyncio.run(pending) == "written"
        record = LedgerRecord.from_json(ledger.snapshot()[ledger_key(REPOSITORY, job_id)])
        assert record.child_id == dispatched.document["nomad_job_id"]
