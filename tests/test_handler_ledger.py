"""handler.ledger: record format, key scheme, expiry, and merging out-of-order deliveries."""

import json

from handler.ledger import (
    LEDGER_TTL_SECONDS,
    LedgerRecord,
    Observation,
    has_started,
    ledger_key,
    merge,
    record_changed,
    replays_a_started_job,
)


def seen(action="queued", **overrides):
    values = {
        "repository": "codertocat/hello-world",
        "job_id": 7,
        "run_id": 8,
        "run_attempt": 1,
        "pool": "linux-x64",
        "action": action,
        "conclusion": None,
        "runner_id": None,
        "runner_name": None,
        "delivery": f"d-{action}",
        "child_id": None,
        "dispatch_outcome": None,
        "at": 1000.0,
    }
    values.update(overrides)
    return Observation(**values)


def test_key_scheme_is_per_repository_and_job():
    assert ledger_key("Codertocat/Hello-World", 7) == "job:codertocat/hello-world:7"


def test_expiry_outlives_githubs_redelivery_window():
    assert LEDGER_TTL_SECONDS > 3 * 24 * 3600


def test_round_trip_through_json():
    record = merge(None, seen(child_id="j/dispatch-1-ab", dispatch_outcome="dispatched"))
    text = record.to_json()
    assert json.loads(text)["v"] == 1
    assert LedgerRecord.from_json(text) == record


def test_unreadable_records_are_treated_as_absent():
    assert LedgerRecord.from_json("not json") is None
    assert LedgerRecord.from_json('{"v": 99}') is None
    assert LedgerRecord.from_json('{"v": 1, "unexpected": true}') is None


def test_lifecycle_in_order():
    record = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
    record = merge(record, seen("in_progress", runner_name="r-1", runner_id=3, at=1010.0))
    record = merge(record, seen("completed", conclusion="success", runner_id=3, at=1100.0))
    assert (record.state, record.child_id, record.conclusion) == ("completed", "c1", "success")
    assert record.runner_name == "r-1"
    assert (record.first_seen, record.updated_at) == (1000.0, 1100.0)
    assert record.deliveries == ("d-queued", "d-in_progress", "d-completed")
    assert not record.cancelled_before_assignment


def test_a_late_queued_delivery_does_not_move_the_state_back():
    record = merge(None, seen("completed", conclusion="success", runner_id=3, at=1100.0))
    record = merge(record, seen(child_id="c1", dispatch_outcome="dispatched", at=1000.0))
    assert record.state == "completed" and record.last_action == "completed"
    assert record.child_id == "c1"
    assert record.first_seen == 1000.0


def test_redelivery_is_recorded_once():
    record = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
    again = merge(record, seen(child_id="c1", dispatch_outcome="already_dispatched"))
    assert again.deliveries == ("d-queued",)
    assert again.dispatch_outcome == "dispatched"


def test_cancelled_before_assignment_is_flagged():
    record = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
    record = merge(record, seen("completed", conclusion="cancelled", runner_id=None))
    assert record.cancelled_before_assignment and record.child_id == "c1"


def test_cancelled_after_assignment_is_not_flagged():
    record = merge(None, seen("completed", conclusion="cancelled", runner_id=5))
    assert not record.cancelled_before_assignment


class TestRecoveryFields:
    """created_at, dispatched_at and reconciled: what status and the reconciler rely on."""

    def test_a_new_child_sets_dispatched_at_once_and_replays_do_not_move_it(self):
        record = merge(None, seen(created_at=990.0))
        record = merge(record, seen(child_id="c1", dispatch_outcome="dispatched", at=1005.0))
        assert (record.created_at, record.dispatched_at, record.reconciled) == (
            990.0,
            1005.0,
            False,
        )
        replay = seen(child_id="c1", dispatch_outcome="already_dispatched", at=1300.0)
        assert merge(record, replay).dispatched_at == 1005.0

    def test_reconciled_only_when_the_reconciler_started_the_child(self):
        deferred = merge(None, seen(dispatch_outcome="deferred", created_at=990.0))
        recovered = merge(
            deferred,
            seen(child_id="c2", dispatch_outcome="dispatched", at=1100.0, source="reconciler"),
        )
        assert recovered.reconciled and recovered.dispatch_outcome == "dispatched"
        by_webhook = merge(None, seen(child_id="c3", dispatch_outcome="dispatched"))
        late = seen(child_id="c3", dispatch_outcome="already_dispatched", source="reconciler")
        assert not merge(by_webhook, late).reconciled

    def test_records_written_before_these_fields_still_read(self):
        document = json.loads(merge(None, seen()).to_json())
        for name in ("created_at", "dispatched_at", "reconciled"):
            del document[name]
        record = LedgerRecord.from_json(json.dumps(document))
        assert record is not None and record.dispatched_at is None and not record.reconciled

    def test_summary_is_small_and_names_no_repository(self):
        record = merge(None, seen(child_id="c4", dispatch_outcome="dispatched", created_at=999.5))
        text = record.summary()
        assert len(text.encode()) < 1024 and "hello-world" not in text
        assert json.loads(text) == {
            "p": "linux-x64",
            "s": "queued",
            "o": "dispatched",
            "q": 999.5,
            "d": 1000.0,
            "t": None,
            "f": None,
            "r": 0,
            "x": 0,
            "c": 1,
        }

    def test_the_first_start_and_the_first_deferral_are_kept(self):
        deferred = merge(None, seen(dispatch_outcome="deferred", at=1000.0, created_at=990.0))
        assert deferred.deferred_at == 1000.0
        again = merge(deferred, seen(dispatch_outcome="deferred", at=1060.0))
        assert again.deferred_at == 1000.0
        dispatched = merge(again, seen(child_id="c5", dispatch_outcome="dispatched", at=1100.0))
        running = merge(dispatched, seen("in_progress", at=1130.0, started_at=1120.0))
        late = merge(running, seen("completed", at=1400.0, started_at=1125.0))
        assert (late.started_at, late.deferred_at, late.dispatched_at) == (1120.0, 1000.0, 1100.0)
        summary = json.loads(late.summary())
        assert (summary["t"], summary["f"], summary["q"]) == (1120.0, 1000.0, 990.0)


class TestWorthAWrite:
    """record_changed: only a merge that says something new is worth a KV write."""

    def test_a_first_record_is_always_new(self):
        assert record_changed(None, merge(None, seen()))

    def test_the_same_delivery_again_changes_nothing_but_bookkeeping(self):
        record = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
        again = merge(record, seen(child_id="c1", dispatch_outcome="already_dispatched", at=2e3))
        assert again.updated_at == 2e3 and not record_changed(record, again)

    def test_the_same_body_under_a_new_delivery_id_changes_nothing(self):
        record = merge(None, seen("completed", conclusion="cancelled"))
        replay = merge(record, seen("completed", conclusion="cancelled", delivery="forged-id"))
        assert "forged-id" in replay.deliveries and not record_changed(record, replay)

    def test_a_new_state_is_a_change(self):
        record = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
        assert record_changed(record, merge(record, seen("in_progress", runner_id=3)))

    def test_two_known_bodies_sent_in_turn_stop_changing_the_record(self):
        queued = seen(dispatch_outcome="deferred")
        done = seen(
            "completed", conclusion="cancelled", dispatch_outcome="not dispatched: recorded"
        )
        record = merge(merge(None, queued), done)
        for _ in range(3):
            for body in (queued, done):
                merged = merge(record, body)
                assert not record_changed(record, merged), body.action
                record = merged
        assert (record.state, record.last_action, record.dispatch_outcome) == (
            "completed",
            "completed",
            "deferred",
        )

    def test_a_recorded_note_fills_an_empty_outcome_but_replaces_none(self):
        recorded = "not dispatched: recorded"
        first = merge(None, seen("in_progress", runner_id=3, dispatch_outcome=recorded))
        assert first.dispatch_outcome == recorded
        failed = merge(None, seen(dispatch_outcome="failed"))
        assert merge(failed, seen("waiting", dispatch_outcome=recorded)).dispatch_outcome == (
            "failed"
        )

    def test_started_means_in_progress_or_later(self):
        assert not has_started(merge(None, seen()))
        assert not has_started(merge(None, seen("waiting")))
        assert has_started(merge(None, seen("in_progress", runner_id=3)))
        assert has_started(merge(None, seen("completed", conclusion="cancelled")))

    def test_a_queued_delivery_replays_a_started_job_only_if_one_was_handled_before(self):
        recorded = "not dispatched: recorded"
        dispatched = merge(None, seen(child_id="c1", dispatch_outcome="dispatched"))
        ran = merge(dispatched, seen("in_progress", runner_id=3, dispatch_outcome=recorded))
        assert replays_a_started_job(ran)
        deferred = merge(None, seen(dispatch_outcome="deferred"))
        cancelled = merge(deferred, seen("completed", conclusion="cancelled"))
        assert replays_a_started_job(cancelled)
        # GitHub does not order deliveries: a first queued after completed still dispatches.
        late = merge(None, seen("completed", conclusion="success", dispatch_outcome=recorded))
        assert not replays_a_started_job(late)
        assert not replays_a_started_job(dispatched)
