"""handler.events: the real payloads parse; malformed ones fail naming the field."""

import json
from datetime import UTC, datetime

import pytest

from handler.events import OtherEvent, PayloadError, Ping, WorkflowJobEvent, parse_event
from tests.standins.webhooks import FIXTURES, workflow_job

WORKFLOW_JOB_FIXTURES = sorted((FIXTURES / "workflow_job").glob("*.payload.json"))
PING_FIXTURES = sorted((FIXTURES / "ping").glob("*.payload.json"))


def body(document) -> bytes:
    return json.dumps(document).encode()


class TestRealPayloads:
    def test_the_fixtures_are_there(self):
        assert len(WORKFLOW_JOB_FIXTURES) >= 5
        assert PING_FIXTURES

    @pytest.mark.parametrize("path", WORKFLOW_JOB_FIXTURES, ids=lambda path: path.name)
    def test_every_workflow_job_fixture_parses(self, path):
        raw = json.loads(path.read_bytes())
        event = parse_event("workflow_job", path.read_bytes())
        assert isinstance(event, WorkflowJobEvent)
        assert event.action == raw["action"]
        assert event.repository == raw["repository"]["full_name"]
        assert event.job.id == raw["workflow_job"]["id"]
        assert event.job.labels == tuple(raw["workflow_job"]["labels"])
        assert event.job.created_at.tzinfo is not None

    @pytest.mark.parametrize("path", PING_FIXTURES, ids=lambda path: path.name)
    def test_every_ping_fixture_parses(self, path):
        event = parse_event("ping", path.read_bytes())
        assert isinstance(event, Ping)
        assert event.zen

    def test_queued_fixture_fields(self):
        event = parse_event(
            "workflow_job", (FIXTURES / "workflow_job/queued.payload.json").read_bytes()
        )
        assert isinstance(event, WorkflowJobEvent)
        assert event.job.run_id == 2202229078
        assert event.job.status == "queued"
        assert event.job.created_at == datetime(2021, 9, 13, 2, 21, 13, tzinfo=UTC)

    def test_other_events_are_not_parsed(self):
        assert parse_event("push", b"not even json") == OtherEvent("push")

    def test_runner_id_zero_means_no_runner(self):
        payload = workflow_job("completed", conclusion="cancelled", runner_id=0)
        payload["workflow_job"]["runner_id"] = 0
        event = parse_event("workflow_job", body(payload))
        assert isinstance(event, WorkflowJobEvent)
        assert event.job.runner_id is None


def mutate(path: tuple[str, ...], value):
    payload = workflow_job()
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body(payload)


class TestMalformedPayloads:
    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            (b"\xff\xfe", "body: not UTF-8"),
            (b"{", "body: not JSON"),
            (b"[]", "body: expected a JSON object"),
            (b'{"a": NaN}', "body: NaN is not JSON"),
            (b"[" * 100000 + b"]" * 100000, "body"),
        ],
    )
    def test_bodies_that_are_not_a_json_object(self, raw, field):
        with pytest.raises(PayloadError, match=field):
            parse_event("workflow_job", raw)

    @pytest.mark.parametrize(
        ("path", "value", "field"),
        [
            (("action",), KeyError, "action"),
            (("action",), 7, "action"),
            (("repository",), None, "repository"),
            (("repository", "full_name"), "a/b/c", "repository.full_name"),
            (("repository", "full_name"), "ev!l/$(rm -rf)", "repository.full_name"),
            (("workflow_job",), [], "workflow_job"),
            (("workflow_job", "id"), "289782451", "workflow_job.id"),
            (("workflow_job", "id"), True, "workflow_job.id"),
            (("workflow_job", "id"), -1, "workflow_job.id"),
            (("workflow_job", "id"), 2**64, "workflow_job.id"),
            (("workflow_job", "run_id"), 1.5, "workflow_job.run_id"),
            (("workflow_job", "run_attempt"), 0, "workflow_job.run_attempt"),
            (("workflow_job", "labels"), "self-hosted", "workflow_job.labels"),
            (("workflow_job", "labels"), ["self-hosted", 1], r"workflow_job.labels\[1\]"),
            (("workflow_job", "labels"), ["self-hosted", ""], r"workflow_job.labels\[1\]"),
            (("workflow_job", "labels"), ["x"] * 101, "workflow_job.labels"),
            (("workflow_job", "status"), None, "workflow_job.status"),
            (("workflow_job", "created_at"), "yesterday", "workflow_job.created_at"),
            (("workflow_job", "created_at"), "2021-09-13T02:21:13", "workflow_job.created_at"),
            (("workflow_job", "runner_id"), "5", "workflow_job.runner_id"),
        ],
    )
    def test_wrong_fields_are_named(self, path, value, field):
        with pytest.raises(PayloadError, match=f"^{field}"):
            parse_event("workflow_job", mutate(path, value))
