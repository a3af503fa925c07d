"""handler.decide: which deliveries dispatch a runner, to which pool, and why others do not."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from handler.contract import DISPATCH_META_KEYS, Routing
from handler.decide import Dispatch, Ignore, choose_pool, decide
from handler.events import WorkflowJobEvent, parse_event
from tests.standins.webhooks import (
    FIXTURES,
    OTHER_REPOSITORY,
    ROUTING,
    ROUTING_DOCUMENT,
    workflow_job,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def event_of(payload) -> WorkflowJobEvent:
    event = parse_event("workflow_job", json.dumps(payload).encode())
    assert isinstance(event, WorkflowJobEvent)
    return event


def decision(routing=ROUTING, **kwargs):
    kwargs.setdefault("created_at", NOW - timedelta(minutes=1))
    return decide(event_of(workflow_job(**kwargs)), routing, NOW)


class TestDispatches:
    def test_queued_self_hosted_job_dispatches_to_its_pool(self):
        result = decision()
        assert isinstance(result, Dispatch)
        assert result.pool.name == "linux-x64"
        assert result.idempotency_token == "289782451"

    def test_meta_has_exactly_the_contract_keys_and_no_secret(self):
        result = decision()
        assert isinstance(result, Dispatch)
        assert tuple(sorted(result.meta)) == tuple(sorted(DISPATCH_META_KEYS))
        assert dict(result.meta) == {
            "github_repository": "Codertocat/Hello-World",
            "github_job_id": "289782451",
            "github_run_id": "2202229078",
            "runner_pool": "linux-x64",
        }

    def test_labels_compare_case_insensitively(self):
        result = decision(labels=["Self-Hosted", "LINUX", "X64"])
        assert isinstance(result, Dispatch) and result.pool.name == "linux-x64"

    def test_a_subset_of_a_pools_labels_is_enough(self):
        result = decision(labels=["self-hosted"])
        assert isinstance(result, Dispatch)

    def test_the_tightest_pool_wins_when_several_match(self):
        """self-hosted+linux matches all three pools of the repo; the 3-label pool wins."""
        result = decision(labels=["self-hosted", "linux"])
        assert isinstance(result, Dispatch) and result.pool.name == "linux-x64"

    def test_a_label_only_a_richer_pool_has_selects_it(self):
        result = decision(labels=["self-hosted", "large"])
        assert isinstance(result, Dispatch) and result.pool.name == "linux-x64-large"

    def test_ties_are_broken_by_pool_name_not_order(self):
        """Two pools with equally many labels: the alphabetically first, whatever the order."""
        document = json.loads(json.dumps(ROUTING_DOCUMENT))
        document["pools"] = [
            {
                "name": "zeta",
                "labels": ["self-hosted", "linux"],
                "nomad_job": "z",
                "max_runners": 1,
            },
            {"name": "alpha", "labels": ["self-hosted", "x64"], "nomad_job": "a", "max_runners": 1},
        ]
        document["repositories"] = {"codertocat/hello-world": ["zeta", "alpha"]}
        forward = Routing.from_document(document)
        document["pools"].reverse()
        backward = Routing.from_document(document)
        for routing in (forward, backward):
            assert choose_pool(("self-hosted",), routing, "Codertocat/Hello-World").name == "alpha"

    def test_the_waiting_fixture_turned_queued_dispatches_once_approved(self):
        payload = json.loads((FIXTURES / "workflow_job/waiting.payload.json").read_text())
        payload["action"] = "queued"
        payload["workflow_job"]["status"] = "queued"
        payload["workflow_job"]["created_at"] = "2026-11-28T11:00:00Z"
        payload["repository"]["full_name"] = OTHER_REPOSITORY
        payload["workflow_job"]["labels"] = ["self-hosted", "arm64"]
        result = decide(event_of(payload), ROUTING, NOW)
        assert isinstance(result, Dispatch) and result.pool.name == "arm"

    def test_redelivery_decides_the_same_token(self):
        payload = workflow_job(created_at=NOW - timedelta(minutes=1))
        first = decide(event_of(payload), ROUTING, NOW)
        again = decide(event_of(payload), ROUTING, NOW + timedelta(hours=1))
        assert first == again


class TestIgnores:
    def assert_ignored(self, result, code, pool=None):
        assert isinstance(result, Ignore), result
        assert result.code == code
        assert result.pool == pool
        assert result.reason

    def test_the_real_queued_fixture_is_github_hosted(self):
        payload = json.loads((FIXTURES / "workflow_job/queued.payload.json").read_text())
        self.assert_ignored(decide(event_of(payload), ROUTING, NOW), "not_self_hosted")

    def test_labels_without_self_hosted(self):
        self.assert_ignored(decision(labels=["linux", "x64"]), "not_self_hosted")

    def test_labels_matching_no_pool(self):
        self.assert_ignored(decision(labels=["self-hosted", "windows"]), "no_matching_pool")

    def test_a_pool_the_repository_may_not_use(self):
        """arm64 exists, but only for octo-org/octo-repo."""
        self.assert_ignored(decision(labels=["self-hosted", "arm64"]), "no_matching_pool")

    def test_unknown_repository(self):
        self.assert_ignored(decision(repository="someone/else"), "repository_not_served")

    def test_repository_match_is_case_insensitive(self):
        assert isinstance(decision(repository="CODERTOCAT/hello-WORLD"), Dispatch)

    def test_stale_job(self):
        result = decision(created_at=NOW - timedelta(hours=24, seconds=1))
        self.assert_ignored(result, "stale", "linux-x64")

    def test_a_job_just_under_24_hours_still_dispatches(self):
        assert isinstance(decision(created_at=NOW - timedelta(hours=23, minutes=59)), Dispatch)

    def test_queued_while_waiting_for_approval(self):
        """The real queued.with-deployment fixture: queued action, status waiting."""
        payload = json.loads(
            (FIXTURES / "workflow_job/queued.with-deployment.payload.json").read_text()
        )
        payload["repository"]["full_name"] = OTHER_REPOSITORY
        payload["workflow_job"]["labels"] = ["self-hosted", "arm64"]
        payload["workflow_job"]["created_at"] = "2026-11-28T11:00:00Z"
        self.assert_ignored(decide(event_of(payload), ROUTING, NOW), "awaiting_approval", "arm")

    @pytest.mark.parametrize("action", ["waiting", "in_progress", "completed", "brand_new_action"])
    def test_other_actions_of_our_jobs_are_recorded_not_dispatched(self, action):
        self.assert_ignored(decision(action=action), "recorded", "linux-x64")

    def test_cancelled_before_assignment_is_recorded(self):
        result = decision(action="completed", conclusion="cancelled", runner_id=None)
        self.assert_ignored(result, "recorded", "linux-x64")


def without(payload, *keys):
    for key in keys:
        del payload["workflow_job"][key]
    return event_of(payload)


class TestDecidingOnWhatIsPresent:
    """A delivery lacking optional fields is decided on the fields it has."""

    def test_without_created_at_the_age_comes_from_started_at(self):
        fresh = workflow_job(created_at=NOW - timedelta(minutes=1))
        fresh["workflow_job"]["started_at"] = fresh["workflow_job"]["created_at"]
        assert isinstance(decide(without(fresh, "created_at"), ROUTING, NOW), Dispatch)
        old = workflow_job(created_at=NOW - timedelta(hours=25))
        old["workflow_job"]["started_at"] = old["workflow_job"]["created_at"]
        result = decide(without(old, "created_at"), ROUTING, NOW)
        assert isinstance(result, Ignore) and result.code == "stale"

    def test_without_any_timestamp_a_queued_job_cannot_be_stale_and_dispatches(self):
        """Documented choice: a queued job gets its runner; a redelivery of a cancelled job
        would cost one runner until its idle timeout."""
        payload = workflow_job(created_at=NOW - timedelta(days=3))
        event = without(payload, "created_at", "started_at")
        assert event.job.queued_at is None
        assert isinstance(decide(event, ROUTING, NOW), Dispatch)

    def test_a_missing_status_is_not_taken_for_waiting(self):
        event = without(workflow_job(created_at=NOW - timedelta(minutes=1)), "status")
        assert event.job.status is None
        assert isinstance(decide(event, ROUTING, NOW), Dispatch)

    def test_a_malformed_status_is_not_taken_for_waiting_either(self):
        payload = workflow_job(created_at=NOW - timedelta(minutes=1))
        payload["workflow_job"]["status"] = ["waiting"]
        assert isinstance(decide(event_of(payload), ROUTING, NOW), Dispatch)

    def test_an_explicit_waiting_status_still_waits(self):
        result = decision(status="waiting")
        assert isinstance(result, Ignore) and result.code == "awaiting_approval"

    def test_every_optional_field_missing_still_decides(self):
        payload = workflow_job(created_at=NOW - timedelta(minutes=1))
        event = without(payload, "run_attempt", "name", "status", "created_at", "started_at")
        result = decide(event, ROUTING, NOW)
        assert isinstance(result, Dispatch) and result.idempotency_token == "289782451"
