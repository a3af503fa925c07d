"""handler.events: the real payloads parse; only a needed field missing or malformed rejects one,
naming it; an optional one is recorded as missing (cases derived from the real schemas)."""

import json
from datetime import UTC, datetime

import pytest

from handler.events import (
    OPTIONAL_FIELDS,
    OtherEvent,
    PayloadError,
    Ping,
    WorkflowJobEvent,
    parse_event,
)
from tests.standins.webhooks import FIXTURES, LINUX_LABELS, SCHEMAS, workflow_job

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
            (("workflow_job", "labels"), "self-hosted", "workflow_job.labels"),
            (("workflow_job", "labels"), ["self-hosted", 1], r"workflow_job.labels\[1\]"),
            (("workflow_job", "labels"), ["self-hosted", ""], r"workflow_job.labels\[1\]"),
            (("workflow_job", "labels"), ["x"] * 101, "workflow_job.labels"),
        ],
    )
    def test_wrong_needed_fields_are_named(self, path, value, field):
        with pytest.raises(PayloadError, match=f"^{field}"):
            parse_event("workflow_job", mutate(path, value))


# -- liberal in what a delivery may lack --------------------------------------------------------
# What the decision cannot do without; everything else a delivery may lack.
NEEDED = {("action",), ("repository",), ("workflow_job",)}
NEEDED_IN_JOB = {"id", "run_id", "labels"}


def schema(name):
    return json.loads((SCHEMAS / name).read_text())


def required_top_level():
    names = set()
    for path in sorted((SCHEMAS / "workflow_job").glob("*.schema.json")):
        names |= set(json.loads(path.read_text())["required"])
    return sorted(names)


JOB_REQUIRED = schema("common/workflow-job.schema.json")["required"]
# The keys of the workflow_job object in GitHub Enterprise Server 3.3's documented example
# payload (the first GHES release with the event; 3.4 and 3.5 document the same keys), as cached
# in octokit/webhooks (cache/ghes-33/webhook-events-and-payloads.html): no run_attempt, no
# created_at, no workflow_name, no head_branch.
GHES_3_3_JOB_KEYS = (
    "id", "run_id", "run_url", "node_id", "head_sha", "url", "html_url", "status", "conclusion",
    "started_at", "completed_at", "name", "steps", "check_run_url", "labels", "runner_id",
    "runner_name", "runner_group_id", "runner_group_name",
)  # fmt: skip


def parsed(payload):
    event = parse_event("workflow_job", body(payload))
    assert isinstance(event, WorkflowJobEvent)
    return event


class TestSchemaRequiredFields:
    def test_the_schemas_are_there(self):
        assert set(NEEDED_IN_JOB) <= set(JOB_REQUIRED)
        assert {"created_at", "run_attempt", "status"} <= set(JOB_REQUIRED)
        assert set(required_top_level()) >= {"action", "repository", "workflow_job"}

    @pytest.mark.parametrize("key", required_top_level())
    def test_each_top_level_field_removed(self, key):
        payload = workflow_job()
        del payload[key]
        if (key,) in NEEDED:
            with pytest.raises(PayloadError, match=f"^{key}"):
                parse_event("workflow_job", body(payload))
        else:  # e.g. sender: never read
            assert parsed(payload).job.missing == ()

    @pytest.mark.parametrize("key", JOB_REQUIRED)
    def test_each_job_field_removed(self, key):
        """Every field the schema calls required, removed from a real payload: only a needed
        one rejects the delivery; an optional one the Worker reads is named as missing."""
        payload = workflow_job()
        del payload["workflow_job"][key]
        if key in NEEDED_IN_JOB:
            with pytest.raises(PayloadError, match=f"^workflow_job.{key}"):
                parse_event("workflow_job", body(payload))
            return
        event = parsed(payload)
        assert event.job.missing == ((key,) if key in OPTIONAL_FIELDS else ())
        assert event.job.id == 289782451 and event.job.labels == LINUX_LABELS

    @pytest.mark.parametrize("path", WORKFLOW_JOB_FIXTURES, ids=lambda path: path.name)
    def test_every_optional_field_removed_from_every_fixture(self, path):
        payload = json.loads(path.read_bytes())
        for key in OPTIONAL_FIELDS:
            payload["workflow_job"].pop(key, None)
        event = parsed(payload)
        assert event.job.missing == OPTIONAL_FIELDS
        assert event.job.created_at is None and event.job.status is None
        assert event.job.run_attempt is None and event.job.queued_at is None

    def test_the_real_fixtures_lack_nothing(self):
        for path in WORKFLOW_JOB_FIXTURES:
            assert parse_event("workflow_job", path.read_bytes()).job.missing == (), path.name

    def test_a_ghes_3_3_shaped_delivery(self):
        payload = workflow_job()
        payload["workflow_job"] = {
            key: value for key, value in payload["workflow_job"].items() if key in GHES_3_3_JOB_KEYS
        }
        event = parsed(payload)
        assert event.job.missing == ("run_attempt", "created_at")
        assert event.job.queued_at == event.job.started_at is not None


class TestOptionalFieldsMalformed:
    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("run_attempt", 0),
            ("run_attempt", "1"),
            ("name", 5),
            ("name", ""),
            ("status", None),
            ("status", ["queued"]),
            ("status", "q" * 2000),
            ("conclusion", 1),
            ("runner_id", "5"),
            ("runner_id", -1),
            ("runner_name", ["r"]),
            ("created_at", "yesterday"),
            ("created_at", "2021-09-13T02:21:13"),  # no time zone
            ("created_at", 1631499673),
            ("created_at", None),
            ("started_at", "2021-13-45T99:99:99Z"),
        ],
    )
    def test_a_malformed_optional_field_is_recorded_as_missing(self, key, value):
        payload = workflow_job()
        payload["workflow_job"][key] = value
        event = parsed(payload)
        assert event.job.missing == (key,)
        assert getattr(event.job, key) is None

    @pytest.mark.parametrize("key", ["conclusion", "runner_id", "runner_name"])
    def test_null_is_a_value_where_github_sends_null(self, key):
        payload = workflow_job()
        payload["workflow_job"][key] = None
        assert parsed(payload).job.missing == ()

    def test_missing_names_are_bounded_and_in_a_fixed_order(self):
        payload = workflow_job()
        for key in reversed(OPTIONAL_FIELDS):
            payload["workflow_job"][key] = {"junk": "x" * 5000}
        payload["workflow_job"]["extra"] = "ignored"
        assert parsed(payload).job.missing == OPTIONAL_FIELDS
