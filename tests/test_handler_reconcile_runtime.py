"""The reconciler in the real Workers runtime: Cron Trigger, Default.scheduled, GitHub, Nomad, KV.

One ``wrangler dev`` (``GET /__test/scheduled`` runs the scheduled handler) with the
GitHub and Nomad stand-ins as origins and KV persisted in a temp dir.
"""

import json
import time
import urllib.error
import urllib.request

import pytest

from handler.ledger import LedgerRecord, ledger_key
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REPOSITORY,
    bindings,
    register_pools,
    status_headers,
    workflow_job,
)
from tests.worker_runtime.harness import WRANGLER, LocalWorker


@pytest.fixture(autouse=True)
def _wrangler_installed():
    if not WRANGLER.exists():  # fail, not skip: `make test` always installs it
        pytest.fail("wrangler is not installed: run `make install` (make test does)")


def get(worker, path, headers=None):
    request = urllib.request.Request(worker.url + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read().decode()


def reconcile_reports(worker, expected, within_seconds=10.0):
    """The reconcile log lines; wrangler may print a line after the HTTP answer, so wait for it."""
    deadline = time.monotonic() + within_seconds
    while True:
        reports = [
            json.loads(line)
            for line in worker.output().splitlines()
            if line.startswith("{") and '"reconcile"' in line
        ]
        if len(reports) >= expected or time.monotonic() > deadline:
            return reports
        time.sleep(0.05)


def test_scheduled_run_dispatches_a_lost_job_once_and_records_it(tmp_path):
    grants = {ACTIONS_READ_TOKEN: {REPOSITORY.lower(): "actions_read"}}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad)
        github.queue_job(REPOSITORY, workflow_job(job_id=9101, run_id=9200)["workflow_job"])
        values = bindings(nomad.url) | {
            "GITHUB_API_URL": github.url,
            "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
        }
        with LocalWorker(values, tmp_path) as worker:
            # Two consecutive Cron Trigger runs, as workerd's ScheduledController gives them.
            scheduled = 1_796_000_100_000  # a whole multiple of 5 minutes, in ms
            for run in range(2):
                at = scheduled + run * 300_000
                path = f"/__test/scheduled?time={at}&cron=%2A%2F5+%2A+%2A+%2A+%2A"
                assert get(worker, path)[0] == 200
            children = nomad.children("github-runner-linux-x64")
            assert [child.idempotency_token for child in children] == ["9101"]
            _, text = get(worker, "/__test/kv/" + ledger_key(REPOSITORY, 9101))
            record = LedgerRecord.from_json(text)
            assert record is not None and record.reconciled and record.child_id == children[0].id
            reports = reconcile_reports(worker, expected=2)
            assert [r["dispatched"] for r in reports] == [1, 0]
            # The rotation's place comes from the scheduled time, one slot per run.
            first_slot = scheduled // 300_000
            assert [r["slot"] for r in reports] == [first_slot, first_slot + 1]
            assert get(worker, "/__test/kv/reconcile%3Acursor")[1] == ""  # no cursor in KV
            # The second run's runs lists were conditional (ETag kept in KV) and unchanged.
            assert reports[1]["not_modified"] == 2 and reports[1]["already_dispatched"] == 1
            assert any("if-none-match" in call.headers for call in github.calls())
            status, body = get(worker, "/status", status_headers())
            pools = json.loads(body)["pools"]
            assert status == 200 and pools["linux-x64"]["reconciled"] == 1
            output = worker.output()
            assert ACTIONS_READ_TOKEN not in output[output.index("Starting local server") :]


def test_a_missing_read_token_fails_the_scheduled_run_naming_the_binding(tmp_path):
    with NomadStandIn() as nomad:
        register_pools(nomad)
        with LocalWorker(bindings(nomad.url), tmp_path) as worker:
            with pytest.raises(urllib.error.HTTPError) as failed:
                get(worker, "/__test/scheduled")
            assert failed.value.code == 500
            # Webhooks do not need the read token: they still work.
            assert get(worker, "/healthz")[0] == 200
            deadline = time.monotonic() + 10
            while "GITHUB_API_URL" not in worker.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            misconfigured = [
                json.loads(line)
                for line in worker.output().splitlines()
                if line.startswith("{") and '"misconfigured"' in line
            ]
            assert misconfigured and "GITHUB_API_URL" in misconfigured[0]["error"]
            assert nomad.dispatch_requests() == []


def test_a_malformed_request_budget_fails_the_scheduled_run_naming_the_binding(tmp_path):
    with NomadStandIn() as nomad:
        register_pools(nomad)
        values = bindings(nomad.url) | {
            "GITHUB_API_URL": "http://127.0.0.1:9",
            "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
            "RECONCILE_REQUEST_BUDGET": "lots",
        }
        with LocalWorker(values, tmp_path) as worker:
            with pytest.raises(urllib.error.HTTPError) as failed:
                get(worker, "/__test/scheduled")
            assert failed.value.code == 500
            deadline = time.monotonic() + 10
            while "RECONCILE_REQUEST_BUDGET" not in worker.output() and time.monotonic() < deadline:
                time.sleep(0.05)
            misconfigured = [
                json.loads(line)
                for line in worker.output().splitlines()
                if line.startswith("{") and '"misconfigured"' in line
            ]
            assert misconfigured and "RECONCILE_REQUEST_BUDGET" in misconfigured[0]["error"]
            assert nomad.dispatch_requests() == []


def test_without_a_plan_binding_a_run_keeps_to_the_free_plans_bound(tmp_path):
    """An older deployment has no RECONCILE_PLAN: the Free plan's 10 requests, and lists of 9
    runs (the plan's 20, cut to what a budget of 10 can follow)."""
    grants = {ACTIONS_READ_TOKEN: {REPOSITORY.lower(): "actions_read"}}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad)
        for index in range(12):  # more runs in progress than the budget can read the jobs of
            job_id = 9300 + index
            github.queue_job(REPOSITORY, workflow_job(job_id=job_id, run_id=job_id)["workflow_job"])
            github.set_job_status(job_id, "in_progress")
        values = bindings(nomad.url) | {
            "GITHUB_API_URL": github.url,
            "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
        }
        with LocalWorker(values, tmp_path) as worker:
            assert get(worker, "/__test/scheduled")[0] == 200
            [report] = reconcile_reports(worker, expected=1)
            assert report["github_requests"] == 10 and report["stopped"] == "budget"
            lists = [call.path for call in github.calls() if "/actions/runs?" in call.path]
            assert lists and all("per_page=9" in path for path in lists)
