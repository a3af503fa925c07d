"""handler.entry in the real Workers runtime (wrangler 3.92.0, workerd, Pyodide) against Nomad.

One ``wrangler dev`` for the whole module (Pyodide's cold start is paid once), the Nomad stand-in
as the origin behind the tunnel, KV persisted in a temp dir. The bundle holds exactly the
modules the Cloudflare stack uploads (``handler.bundle.worker_modules()``), plus the test-only
shim of tests/worker_runtime/, which reaches ``Default`` only through the uploaded main module
``worker.py``, imported by its name as production does.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from handler.ledger import LedgerRecord, ledger_key
from handler.service import STATUS_MAX_RECORDS
from tests.standins.hostile import corpus
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REPOSITORY,
    bindings,
    delivery,
    register_pools,
    status_headers,
    workflow_job,
)
from tests.worker_runtime.harness import WRANGLER, LocalWorker

SECRET_VALUES = ("nomad-token-for-tests", "access-client-secret-for-tests", "webhook-key-for-tests")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    if not WRANGLER.exists():  # fail, not skip: `make test` always installs it
        pytest.fail("wrangler is not installed: run `make install` (make test does)")
    with NomadStandIn() as nomad:
        register_pools(nomad)
        worker = LocalWorker(bindings(nomad.url), tmp_path_factory.mktemp("worker"))
        with worker:
            yield worker, nomad


def post(worker, method, path, headers, body=b""):
    request = urllib.request.Request(
        worker.url + path, data=body or None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def send(worker, sent):
    return post(worker, "POST", sent.path, sent.headers, sent.body)


def children(nomad, job_id):
    return [
        c for c in nomad.children("github-runner-linux-x64") if c.idempotency_token == str(job_id)
    ]


def kv(worker, key, *, settled=lambda text: bool(text)):
    """The KV value of ``key`` once ``settled``: the Worker writes the ledger after answering."""
    url = worker.url + "/__test/kv/" + urllib.parse.quote(key, safe="")
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
        if settled(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def test_health(runtime):
    worker, _ = runtime
    assert post(worker, "GET", "/healthz", {})[0] == 200


def test_signed_queued_self_hosted_event_dispatches_exactly_one_runner(runtime):
    worker, nomad = runtime
    sent = delivery(workflow_job(job_id=7001))
    status, document = send(worker, sent)
    assert status == 202 and document["outcome"] == "dispatched", document
    (child,) = children(nomad, 7001)
    assert document["nomad_job_id"] == child.id
    assert child.meta == {
        "github_repository": REPOSITORY,
        "github_job_id": "7001",
        "github_run_id": "2202229078",
        "runner_pool": "linux-x64",
    }
    dispatch = nomad.dispatch_requests()[-1]
    assert dispatch.headers["cf-access-client-id"] == "access-client-id.access"
    assert dispatch.query["idempotency_token"] == "7001"


def test_same_delivery_again_dispatches_no_second_runner(runtime):
    worker, nomad = runtime
    sent = delivery(workflow_job(job_id=7002))
    first = send(worker, sent)
    again = send(worker, sent)
    assert (first[0], again[0]) == (202, 202)
    assert again[1]["outcome"] == "already_dispatched"
    assert again[1]["nomad_job_id"] == first[1]["nomad_job_id"]
    assert len(children(nomad, 7002)) == 1


def test_forged_signature_is_401_and_dispatches_nothing(runtime):
    worker, nomad = runtime
    before = len(nomad.requests)
    sent = delivery(workflow_job(job_id=7003), signature="sha256=" + "ab" * 32)
    status, document = send(worker, sent)
    assert status == 401 and document["outcome"] == "rejected"
    assert len(nomad.requests) == before and children(nomad, 7003) == []


def test_a_dispatch_writes_no_kv_and_the_next_delivery_records_its_child(runtime):
    """Nomad holds the dispatch (the child's id names the job and its second); the in_progress
    delivery reads it from there, after the answer, into its own write."""
    worker, nomad = runtime
    sent = delivery(workflow_job(job_id=7004))
    status, document = send(worker, sent)
    assert status == 202 and document["outcome"] == "dispatched"
    key = ledger_key(REPOSITORY, 7004)
    assert worker.kv_entry(key) is None
    started = delivery(workflow_job("in_progress", job_id=7004, runner_id=3))
    assert send(worker, started)[0] == 200
    record = LedgerRecord.from_json(kv(worker, key))
    assert record is not None and record.state == "in_progress" and record.pool == "linux-x64"
    assert record.child_id == document["nomad_job_id"]
    assert record.dispatched_at == float(document["nomad_job_id"].split("-")[-2])
    assert record.deliveries == (started.headers["x-github-delivery"],)
    lookups = [
        r
        for r in nomad.requests
        if r.path == "/v1/jobs/statuses" and 'Meta.github_job_id == "7004"' in r.query["filter"]
    ]
    assert len(lookups) == 1


def test_ledger_keys_list_with_their_metadata(runtime):
    worker, _ = runtime
    assert send(worker, delivery(workflow_job(job_id=7010)))[0] == 202
    assert send(worker, delivery(workflow_job("in_progress", job_id=7010, runner_id=3)))[0] == 200
    key = ledger_key(REPOSITORY, 7010)
    record = LedgerRecord.from_json(kv(worker, key))  # waits for the write after the answer
    url = worker.url + "/__test/ledger-list/" + urllib.parse.quote("job:codertocat/", safe="")
    with urllib.request.urlopen(url, timeout=30) as response:
        page = json.loads(response.read())
    entries = dict(page["entries"])
    assert key in entries and page["cursor"] is None
    assert entries[key] == record.summary()


def test_status_counts_the_ledger_and_the_runners_only_nomad_knows_of(runtime):
    """GET /status lists KV through Default's own env (the SDK wraps the KV binding there),
    not through the adapter's raw binding as the ledger-list route above does, and adds the
    runners Nomad runs for jobs with no record yet (a dispatch writes no KV)."""
    worker, nomad = runtime
    assert send(worker, delivery(workflow_job(job_id=7011)))[0] == 202  # no record: Nomad's
    assert send(worker, delivery(workflow_job(job_id=7012)))[0] == 202
    assert send(worker, delivery(workflow_job("in_progress", job_id=7012, runner_id=3)))[0] == 200
    kv(worker, ledger_key(REPOSITORY, 7012))  # the write after the answer has landed
    status, document = post(worker, "GET", "/status", status_headers())
    assert status == 200 and document["outcome"] == "status", document
    assert document["complete"] is True and document["nomad"] == "ok"
    pool = document["pools"]["linux-x64"]
    assert pool["runners_starting"] >= 1 and pool["latency_ms"]["count"] >= 1
    assert pool["dispatched"] >= 2 and pool["queued_not_running"] >= 1
    assert any(
        r.path == "/v1/jobs/statuses"
        and 'ParentID == "github-runner-linux-x64"' in r.query["filter"]
        for r in nomad.requests
    )
    text = json.dumps(document)
    for secret in SECRET_VALUES:
        assert secret not in text


def test_status_without_the_bearer_token_is_401(runtime):
    worker, _ = runtime
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        status, document = post(worker, "GET", "/status", headers)
        assert status == 401 and document["outcome"] == "rejected"
        assert "pools" not in document


def test_50_replays_of_one_delivery_write_no_kv(runtime):
    """The README's replay figure, in the real runtime: a dispatch and its 49 replays leave the
    job's KV entry absent (Nomad holds the dispatch), and the first delivery that says
    something new writes it."""
    worker, nomad = runtime
    sent = delivery(workflow_job(job_id=7020))
    key = ledger_key(REPOSITORY, 7020)
    assert send(worker, sent)[1]["outcome"] == "dispatched"
    for _ in range(49):
        assert send(worker, sent)[1]["outcome"] == "already_dispatched"
    # The control: a delivery that changes a record is written, and seen to be; by then the
    # work after the answer of every earlier delivery has run too.
    status, _ = send(worker, delivery(workflow_job("in_progress", job_id=7021, runner_id=3)))
    assert status == 200
    kv(worker, ledger_key(REPOSITORY, 7021))
    assert worker.kv_entry(key) is None and len(children(nomad, 7020)) == 1
    assert send(worker, delivery(workflow_job("in_progress", job_id=7020, runner_id=3)))[0] == 200
    kv(worker, key, settled=lambda text: "in_progress" in text)
    assert worker.kv_entry(key) is not None


def test_a_replayed_queued_delivery_of_a_started_job_is_ignored(runtime):
    worker, nomad = runtime
    queued = delivery(workflow_job(job_id=7030))
    assert send(worker, queued)[0] == 202
    assert send(worker, delivery(workflow_job("in_progress", job_id=7030, runner_id=3)))[0] == 200
    kv(worker, ledger_key(REPOSITORY, 7030), settled=lambda text: "in_progress" in text)
    before = len(nomad.requests)
    status, document = send(worker, queued)
    assert status == 200 and document["code"] == "already_started"
    assert len(nomad.requests) == before


GPU = ("self-hosted", "linux", "x64", "gpu")  # pool "gpu", cap 1
LARGE = ("self-hosted", "linux", "x64", "large")  # pool "linux-x64-large", cap 2


def pool_tokens(nomad, parent):
    return sorted(child.idempotency_token for child in nomad.children(parent))


def queued(job_id, labels, age_minutes):
    created = datetime.now(UTC) - timedelta(minutes=age_minutes)
    return delivery(workflow_job(job_id=job_id, labels=labels, created_at=created))


def finished(job_id, labels, *, conclusion="success", runner_id=5):
    payload = workflow_job(
        "completed", job_id=job_id, labels=labels, conclusion=conclusion, runner_id=runner_id
    )
    return delivery(payload)


def listed(worker, prefix, count):
    """The keys under ``prefix`` once there are ``count`` (writes land after the answer)."""
    url = worker.url + "/__test/ledger-list/" + urllib.parse.quote(prefix, safe="")
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(url, timeout=30) as response:
            keys = [key for key, _ in json.loads(response.read())["entries"]]
        if len(keys) == count or time.monotonic() > deadline:
            return keys
        time.sleep(0.05)


def settle(nomad, parent, expected, *, quiet=1.0):
    """The pool's tokens once they reach ``expected`` and stay so for ``quiet`` seconds."""
    deadline = time.monotonic() + 10
    while pool_tokens(nomad, parent) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(quiet)  # long enough for a second, wrong dispatch to show
    return pool_tokens(nomad, parent)


def test_a_completion_at_the_cap_dispatches_the_oldest_deferred_job_once(runtime):
    worker, nomad = runtime
    parent = "github-runner-gpu"
    assert send(worker, queued(7101, GPU, 30))[1]["outcome"] == "dispatched"
    assert send(worker, queued(7102, GPU, 5))[1]["outcome"] == "deferred"
    assert send(worker, queued(7103, GPU, 10))[1]["outcome"] == "deferred"
    assert len(listed(worker, "deferred:gpu:", 2)) == 2
    (first,) = nomad.children(parent)
    nomad.set_status(first.id, "running")  # its deregister task still runs after completed
    status, document = send(worker, finished(7101, GPU))
    assert status == 200 and document["outcome"] == "ignored"
    # After the answer (waitUntil): the oldest deferred job, 7103, gets the slot, once.
    assert settle(nomad, parent, ["7101", "7103"]) == ["7101", "7103"]
    assert send(worker, finished(7101, GPU))[0] == 200  # a redelivery gives nothing away
    assert settle(nomad, parent, ["7101", "7103"]) == ["7101", "7103"]
    # 7103 left the queue with its dispatch: no later completion looks at it again.
    remaining = [key.rsplit(":", 1)[-1] for key in listed(worker, "deferred:gpu:", 1)]
    assert remaining == ["7102"]


def test_a_deferred_job_cancelled_meanwhile_is_skipped(runtime):
    worker, nomad = runtime
    parent = "github-runner-gpu"
    for child in nomad.children(parent):  # 7101 gone, 7103 holds the one slot
        nomad.set_status(child.id, "dead" if child.idempotency_token == "7101" else "running")
    assert send(worker, queued(7104, GPU, 20))[1]["outcome"] == "deferred"
    assert send(worker, queued(7105, GPU, 15))[1]["outcome"] == "deferred"
    # 7103, dispatched by the previous test, is no longer queued with them.
    waiting = [key.rsplit(":", 1)[-1] for key in listed(worker, "deferred:gpu:", 3)]
    assert waiting == ["7104", "7105", "7102"]  # oldest first
    cancel = finished(7104, GPU, conclusion="cancelled", runner_id=None)
    assert send(worker, cancel)[0] == 200
    kv(worker, ledger_key(REPOSITORY, 7104), settled=lambda text: "completed" in text)
    # Cancelled before a runner took it: 7104 leaves the queue with that delivery.
    remaining = [key.rsplit(":", 1)[-1] for key in listed(worker, "deferred:gpu:", 2)]
    assert remaining == ["7105", "7102"]
    assert send(worker, finished(7103, GPU))[0] == 200
    # 7104 was older but is cancelled: 7105 gets the slot, and leaves the queue with it.
    expected = ["7101", "7103", "7105"]
    assert settle(nomad, parent, expected) == expected
    remaining = [key.rsplit(":", 1)[-1] for key in listed(worker, "deferred:gpu:", 1)]
    assert remaining == ["7102"]


def test_two_completions_at_once_dispatch_two_never_three(runtime):
    worker, nomad = runtime
    parent = "github-runner-linux-x64-large"
    for job_id in (7201, 7202):
        assert send(worker, queued(job_id, LARGE, 30))[1]["outcome"] == "dispatched"
    for job_id, age in ((7203, 1), (7204, 5), (7205, 10)):
        assert send(worker, queued(job_id, LARGE, age))[1]["outcome"] == "deferred"
    assert len(listed(worker, "deferred:linux-x64-large:", 3)) == 3
    for child in nomad.children(parent):
        nomad.set_status(child.id, "running")
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda j: send(worker, finished(j, LARGE)), (7201, 7202)))
    assert [status for status, _ in answers] == [200, 200]
    expected = ["7201", "7202", "7204", "7205"]
    assert settle(nomad, parent, expected, quiet=1.5) == expected
    # The two dispatched have left the queue; the newest waits alone.
    remaining = [key.rsplit(":", 1)[-1] for key in listed(worker, "deferred:linux-x64-large:", 1)]
    assert remaining == ["7203"]


def test_one_structured_log_line_per_delivery_without_secrets(runtime):
    worker, _ = runtime
    sent = delivery(workflow_job(job_id=7005))
    assert send(worker, sent)[0] == 202
    lines: list[dict] = []
    deadline = time.monotonic() + 10
    while not lines and time.monotonic() < deadline:  # wrangler forwards console output late
        output = worker.output()
        lines = [
            json.loads(line)
            for line in output.splitlines()
            if line.startswith("{") and sent.headers["x-github-delivery"] in line
        ]
        time.sleep(0.1)
    assert len(lines) == 1
    (line,) = lines
    assert (line["repository"], line["job_id"], line["decision"]) == (
        "codertocat/hello-world",
        7005,
        "dispatched",
    )
    assert line["nomad_child"].startswith("github-runner-linux-x64/dispatch-gh7005-")
    assert "latency_ms" in line
    # wrangler lists the [vars] in its start-up banner (in production they are secret bindings);
    # everything the Worker printed comes after "Starting local server".
    worker_output = output[output.index("Starting local server") :]
    for secret in SECRET_VALUES:
        assert secret not in worker_output


def test_nomad_down_is_503_after_a_retry(runtime):
    worker, nomad = runtime
    with nomad.faulty("down"):
        status, document = send(worker, delivery(workflow_job(job_id=7006)))
    assert status == 503 and document["outcome"] == "failed"


def test_a_hanging_nomad_is_503_inside_githubs_10_seconds(runtime):
    """The per-attempt timeout must work in the runtime itself (asyncio timers on Pyodide's
    event loop), not only under CPython: otherwise GitHub gives up first and records a failure."""
    worker, nomad = runtime
    started = time.monotonic()
    with nomad.faulty("slow"):  # every request sleeps 6 s before answering
        status, document = send(worker, delivery(workflow_job(job_id=7008)))
    elapsed = time.monotonic() - started
    assert status == 503 and document["outcome"] == "failed", document
    assert elapsed < 10, elapsed


def test_one_nomad_500_is_retried(runtime):
    worker, nomad = runtime
    nomad.one_shot_faults.append("500")
    status, _ = send(worker, delivery(workflow_job(job_id=7007)))
    assert status == 202 and len(children(nomad, 7007)) == 1


def test_wrong_method(runtime):
    worker, _ = runtime
    sent = delivery(workflow_job())
    assert post(worker, "GET", sent.path, sent.headers)[0] == 405


# HTTP headers are latin-1 on the wire: cases with other characters in headers stay CPython-only.
def _sendable(case):
    try:
        for name, value in case.headers.items():
            (name + value).encode("latin-1")
        case.path.encode("ascii")
    except UnicodeEncodeError:
        return False
    # Oversize bodies are tested once, last (see test_oversized_body_is_413).
    return 413 not in case.expect


RUNTIME_SUBSET = [case for case in corpus() if _sendable(case)][::4]


@pytest.mark.parametrize("case", RUNTIME_SUBSET, ids=lambda case: case.name)
def test_hostile_subset_in_the_runtime(runtime, case):
    worker, nomad = runtime
    before = len(nomad.dispatch_requests())
    status, document = post(worker, case.method, case.path, case.headers, case.body)
    assert status in case.expect, (status, document)
    assert len(nomad.dispatch_requests()) == before


def test_status_on_the_free_plan_stops_at_its_bound_through_kv(runtime):
    """In the real runtime, through the SDK's KV binding: the Free plan's /status (no
    RECONCILE_PLAN binding) asks KV for one page of its record bound, summarizes exactly that
    many and says it is incomplete. The bench's I/O replay of that answer is one KV call."""
    worker, _ = runtime
    bound = STATUS_MAX_RECORDS["free"]
    summary = json.dumps({"p": "linux-x64", "s": "completed", "o": "dispatched", "c": 1, "x": 0})
    entries = [[f"job:octo-org/filler:{n:05d}", "{}", summary] for n in range(bound + 20)]
    request = urllib.request.Request(
        worker.url + "/__test/kv-fill", data=json.dumps(entries).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert json.loads(response.read()) == bound + 20
    with urllib.request.urlopen(worker.url + "/__test/io/arm", timeout=30) as response:
        assert response.status == 200  # also empties the isolate's /status cache
    status, document = post(worker, "GET", "/status", status_headers())
    assert status == 200, document
    assert document["complete"] is False and document["records_read"] == bound
    assert (
        sum(pool["jobs"] for pool in document["pools"].values()) + document["unreadable_records"]
        == bound
    )
    with urllib.request.urlopen(worker.url + "/__test/io/replay", timeout=30) as response:
        assert json.loads(response.read()) == {"fetch": 0, "kv": 1, "errors": 0}


def test_oversized_body_is_413(runtime):
    """Runs last: after a body the Worker chose not to read, wrangler's local dev proxy may fail
    a request (the next one, or this one when the answer beats the upload) with its own 503
    "Your worker restarted mid-request", an artefact of the local proxy only; production
    Workers may always leave a body unread. On a loaded machine the proxy may also reset the
    connection while the upload is still going, for the same reason. Such proxy answers are
    retried, ours never is."""
    worker, nomad = runtime
    before = len(nomad.dispatch_requests())
    sent = delivery(b" " * (1024 * 1024 + 1))
    status, body = 0, b""
    answers = []  # (status, body or None when the proxy reset before the body)
    for _ in range(5):
        request = urllib.request.Request(
            worker.url + sent.path, data=sent.body, headers=sent.headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status = error.code
            try:
                body = error.read()
            except (ConnectionResetError, BrokenPipeError):
                answers.append((status, None))
                continue  # our status came, the proxy reset before its body: ask again
        except (ConnectionResetError, BrokenPipeError):
            continue  # the proxy closed before the upload ended: no answer to judge
        except urllib.error.URLError as error:  # the same, met while sending
            if not isinstance(error.reason, ConnectionResetError | BrokenPipeError):
                raise
            continue
        answers.append((status, body))
        if not (status == 503 and body.startswith(b"Your worker restarted")):
            break
    ours = [(code, text) for code, text in answers if code != 503]
    assert ours, f"only proxy artefacts, no answer of the Worker: {answers}"
    assert all(code == 413 for code, _ in ours), answers
    # At least one body read whole, unless the proxy reset every time after the status line.
    bodies = [text for _, text in ours if text is not None]
    assert all(json.loads(text)["outcome"] == "rejected" for text in bodies), bodies
    assert len(nomad.dispatch_requests()) == before
