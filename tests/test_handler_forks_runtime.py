"""The fork policy and liberal parsing in the real Workers runtime (wrangler 3.92.0, Pyodide).

One ``wrangler dev`` for the module, with a routing that refuses fork runs, the GitHub stand-in
(run lookups, runs and jobs lists) and the Nomad stand-in as origins, and KV persisted in a temp
dir: the Worker's own ``fetch`` looks runs up with its read token through the runtime's
``fetch``, and ``Default.scheduled`` (``GET /__test/scheduled``) recovers what it deferred.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from handler.ledger import LedgerRecord, ledger_key
from tests.standins.github import ACTIONS_READ_TOKEN, GitHubStandIn
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REFUSING_FORKS,
    REPOSITORY,
    bindings,
    delivery,
    register_pools,
    workflow_job,
)
from tests.worker_runtime.harness import WRANGLER, LocalWorker

FORK = "Mallory/Hello-World"


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    if not WRANGLER.exists():  # fail, not skip: `make test` always installs it
        pytest.fail("wrangler is not installed: run `make install` (make test does)")
    grants = {ACTIONS_READ_TOKEN: {REPOSITORY.lower(): "actions_read"}}
    with GitHubStandIn(tokens=grants) as github, NomadStandIn() as nomad:
        register_pools(nomad)
        values = bindings(nomad.url) | {
            "ROUTING": REFUSING_FORKS.to_json(),
            "GITHUB_API_URL": github.url,
            "GITHUB_READ_TOKEN": ACTIONS_READ_TOKEN,
        }
        with LocalWorker(values, tmp_path_factory.mktemp("worker")) as worker:
            yield worker, github, nomad


def send(worker, payload):
    sent = delivery(payload)
    request = urllib.request.Request(
        worker.url + sent.path, data=sent.body, headers=sent.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def record(worker, job_id, settled=lambda record: True):
    """The job's ledger record once written (the Worker writes it after answering)."""
    url = worker.url + "/__test/kv/" + urllib.parse.quote(ledger_key(REPOSITORY, job_id), safe="")
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        found = LedgerRecord.from_json(text) if text else None
        if (found is not None and settled(found)) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def tokens(nomad):
    return [child.idempotency_token for child in nomad.children("github-runner-linux-x64")]


def queue(github, job_id, run_id, head=REPOSITORY):
    payload = workflow_job(job_id=job_id, run_id=run_id)
    github.queue_job(
        REPOSITORY, payload["workflow_job"], event="pull_request", head_repository=head
    )
    return payload


def test_a_fork_pull_request_job_is_ignored_with_its_reason(runtime):
    worker, github, nomad = runtime
    status, document = send(worker, queue(github, 5001, 5901, head=FORK))
    assert (status, document["outcome"], document["code"]) == (200, "ignored", "fork_pull_request")
    assert "5001" not in tokens(nomad)
    assert record(worker, 5001).dispatch_outcome == "not dispatched: fork_pull_request"
    lookups = [c for c in github.calls("GET") if c.path.endswith("/actions/runs/5901")]
    assert len(lookups) == 1
    assert lookups[0].headers["authorization"] == f"Bearer {ACTIONS_READ_TOKEN}"


def test_a_same_repository_job_is_dispatched(runtime):
    worker, github, nomad = runtime
    status, document = send(worker, queue(github, 5002, 5902))
    assert (status, document["outcome"]) == (202, "dispatched"), document
    assert tokens(nomad).count("5002") == 1


def test_a_delivery_lacking_optional_fields_is_dispatched_and_recorded(runtime):
    worker, github, nomad = runtime
    payload = queue(github, 5003, 5903)
    for key in ("created_at", "started_at", "run_attempt", "status", "name"):
        del payload["workflow_job"][key]
    status, document = send(worker, payload)
    assert (status, document["outcome"]) == (202, "dispatched"), document
    found = record(worker, 5003)
    assert found.missing_fields == ("created_at", "name", "run_attempt", "started_at", "status")
    assert found.child_id is not None and tokens(nomad).count("5003") == 1


def test_a_failed_lookup_dispatches_nothing_and_the_reconciler_dispatches_it(runtime):
    worker, github, nomad = runtime
    payload = queue(github, 5004, 5904)
    github.fail_next(502, path=f"/repos/{REPOSITORY}/actions/runs/5904")
    status, document = send(worker, payload)
    assert (status, document["outcome"], document["code"]) == (202, "deferred", "run_lookup_failed")
    assert "5004" not in tokens(nomad)
    with urllib.request.urlopen(worker.url + "/__test/scheduled", timeout=60) as response:
        assert response.status == 200
    assert tokens(nomad).count("5004") == 1
    assert "5001" not in tokens(nomad), "the reconciler must refuse the fork job too"
    assert record(worker, 5004, settled=lambda found: found.reconciled).reconciled
