"""The GitHub stand-in's Actions runs and jobs endpoints answer as GitHub documents them.

The reconciler's tests lean on these answers, so their shape is pinned here: run status derived
from the jobs, ``ETag`` and 304 on ``If-None-Match``, permissions (a runner-admin token cannot read
Actions), 404 for a run of another repository, rate-limit headers.
"""

import json
import urllib.error
import urllib.request

import pytest

from tests.standins.github import ACTIONS_READ_TOKEN, ADMIN_TOKEN, GitHubStandIn
from tests.standins.webhooks import workflow_job

REPO = "octo-org/hello-world"


@pytest.fixture
def github():
    tokens = {ACTIONS_READ_TOKEN: {REPO: "actions_read"}, ADMIN_TOKEN: {REPO: "admin"}}
    with GitHubStandIn(tokens=tokens) as stand_in:
        for job_id in (1, 2):
            stand_in.queue_job(REPO, workflow_job(job_id=job_id, run_id=500)["workflow_job"])
        yield stand_in


def get(github, path, token=ACTIONS_READ_TOKEN, etag=None):
    headers = {"Authorization": f"Bearer {token}"}
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(github.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        body = error.read()
        return error.code, error.headers, json.loads(body) if body else None


def test_runs_list_filters_by_status_and_carries_an_etag(github):
    status, headers, document = get(github, f"/repos/{REPO}/actions/runs?status=queued")
    assert status == 200 and [run["id"] for run in document["workflow_runs"]] == [500]
    assert headers["ETag"].startswith('W/"') and int(headers["x-ratelimit-remaining"]) > 0
    assert get(github, f"/repos/{REPO}/actions/runs?status=in_progress")[2]["total_count"] == 0


def test_matching_etag_is_304_without_a_body_until_something_changes(github):
    path = f"/repos/{REPO}/actions/runs?status=queued"
    etag = get(github, path)[1]["ETag"]
    status, _, body = get(github, path, etag=etag)
    assert (status, body) == (304, None)
    github.set_job_status(1, "in_progress")
    status, _, document = get(github, path, etag=etag)
    assert status == 200 and document["workflow_runs"] == []


def test_run_status_follows_its_jobs(github):
    github.set_job_status(1, "in_progress")
    assert github.runs[500]["status"] == "in_progress"
    github.set_job_status(1, "completed", "success")
    github.set_job_status(2, "completed", "cancelled")
    assert github.runs[500]["status"] == "completed"


def test_jobs_of_a_run_and_unknown_runs(github):
    status, _, document = get(github, f"/repos/{REPO}/actions/runs/500/jobs?filter=latest")
    assert status == 200 and sorted(job["id"] for job in document["jobs"]) == [1, 2]
    assert all(job["status"] == "queued" for job in document["jobs"])
    assert get(github, f"/repos/{REPO}/actions/runs/999/jobs")[0] == 404


def test_permissions_as_github_answers_them(github):
    path = f"/repos/{REPO}/actions/runs?status=queued"
    status, _, body = get(github, path, token=ADMIN_TOKEN)
    assert status == 403 and body["message"] == "Resource not accessible by personal access token"
    assert get(github, path, token="github_pat_unknown")[0] == 401
    assert get(github, "/repos/octo-org/other/actions/runs")[0] == 404


def test_rate_limit_switches(github):
    github.rate_limit_remaining = 42
    assert get(github, f"/repos/{REPO}/actions/runs")[1]["x-ratelimit-remaining"] == "42"
    github.rate_limited = True
    status, headers, body = get(github, f"/repos/{REPO}/actions/runs")
    assert status == 403 and headers["x-ratelimit-remaining"] == "0"
    assert "rate limit" in body["message"]


def test_one_run_carries_its_repository_and_head_repository(github):
    status, _, run = get(github, f"/repos/{REPO}/actions/runs/500")
    assert status == 200 and run["id"] == 500 and run["event"] == "push"
    assert run["repository"]["full_name"] == run["head_repository"]["full_name"] == REPO
    assert run["head_repository"]["fork"] is False
    # The list holds the same run objects.
    listed = get(github, f"/repos/{REPO}/actions/runs?status=queued")[2]["workflow_runs"]
    assert listed == [run]


def test_a_run_from_a_fork_and_one_whose_fork_was_deleted(github):
    github.queue_job(
        REPO,
        workflow_job(job_id=3, run_id=501)["workflow_job"],
        event="pull_request",
        head_repository="mallory/hello-world",
    )
    github.queue_job(REPO, workflow_job(job_id=4, run_id=502)["workflow_job"], head_repository=None)
    fork = get(github, f"/repos/{REPO}/actions/runs/501")[2]
    assert fork["event"] == "pull_request" and fork["repository"]["full_name"] == REPO
    assert fork["head_repository"]["full_name"] == "mallory/hello-world"
    assert fork["head_repository"]["fork"] is True
    assert get(github, f"/repos/{REPO}/actions/runs/502")[2]["head_repository"] is None


def test_one_run_needs_actions_read_and_its_own_repository(github):
    assert get(github, f"/repos/{REPO}/actions/runs/999")[0] == 404
    assert get(github, "/repos/octo-org/other/actions/runs/500")[0] == 404
    assert get(github, f"/repos/{REPO}/actions/runs/500", token=ADMIN_TOKEN)[0] == 403


def test_a_fault_can_be_aimed_at_one_path(github):
    github.fail_next(502, path=f"/repos/{REPO.upper()}/actions/runs/500")
    assert get(github, f"/repos/{REPO}/actions/runs?status=queued")[0] == 200
    assert get(github, f"/repos/{REPO}/actions/runs/500")[0] == 502
    assert get(github, f"/repos/{REPO}/actions/runs/500")[0] == 200


def test_full_run_objects_are_githubs_size_and_touch_changes_their_etag():
    """The CPU bench's lists: GitHub's documented run fields, ~12 KB a run, ETag moves on."""
    tokens = {ACTIONS_READ_TOKEN: {REPO: "actions_read"}}
    with GitHubStandIn(tokens=tokens, full_run_objects=True) as github:
        github.queue_job(REPO, workflow_job(job_id=7, run_id=700)["workflow_job"])
        path = f"/repos/{REPO}/actions/runs?status=queued"
        status, headers, document = get(github, path)
        [run] = document["workflow_runs"]
        assert status == 200 and (run["id"], run["status"]) == (700, "queued")
        for name in ("head_sha", "jobs_url", "actor", "head_commit", "head_repository"):
            assert name in run, name
        assert run["repository"]["full_name"] == REPO
        assert run["jobs_url"].endswith(f"/repos/{REPO}/actions/runs/700/jobs")
        assert len(json.dumps(run)) > 10_000
        assert get(github, path, etag=headers["ETag"])[0] == 304
        github.touch_runs()
        status, _, moved = get(github, path, etag=headers["ETag"])
        assert status == 200 and moved["workflow_runs"][0]["updated_at"] != run["updated_at"]
