"""The GitHub stand-in itself answers as GitHub documents, so tests built on it mean something."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.standins.github import ADMIN_TOKEN, READ_ONLY_TOKEN, REPOSITORY, GitHubStandIn

JIT_PATH = f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig"
BODY = {"name": "r1", "runner_group_id": 1, "labels": ["self-hosted"], "work_folder": "_work"}


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn() as standin:
        yield standin


def call(
    github: GitHubStandIn, method: str, path: str, body: Any = None, token: str | None = ADMIN_TOKEN
) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(
        github.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None, dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def assert_github_error(body: Any, message: str) -> None:
    assert set(body) == {"message", "documentation_url"}
    assert body["message"].startswith(message)
    assert body["documentation_url"].startswith("https://docs.github.com/")


def test_jitconfig_is_201_with_the_runner_and_an_encoded_config(github):
    status, body, headers = call(github, "POST", JIT_PATH, BODY)
    assert status == 201
    assert set(body) == {"runner", "encoded_jit_config"}
    assert body["runner"]["name"] == "r1"
    assert isinstance(body["runner"]["id"], int)
    assert body["encoded_jit_config"]
    assert headers["x-ratelimit-limit"] == "5000"


def test_a_runner_can_be_read_then_deleted_once(github):
    _, body, _ = call(github, "POST", JIT_PATH, BODY)
    path = f"/repos/{REPOSITORY}/actions/runners/{body['runner']['id']}"
    assert call(github, "GET", path)[0] == 200
    assert call(github, "DELETE", path)[0] == 204
    status, error, _ = call(github, "GET", path)
    assert status == 404
    assert_github_error(error, "Not Found")
    assert call(github, "DELETE", path)[0] == 404


@pytest.mark.parametrize(
    ("token", "status", "message"),
    [
        (None, 401, "Requires authentication"),
        ("ghp_unknown", 401, "Bad credentials"),
        (READ_ONLY_TOKEN, 403, "Resource not accessible"),
    ],
)
def test_authentication_and_permission_errors(github, token, status, message):
    answer, body, _ = call(github, "POST", JIT_PATH, BODY, token=token)
    assert answer == status
    assert_github_error(body, message)
    assert not github.runners


def test_a_repository_the_token_cannot_see_is_404(github):
    status, body, _ = call(github, "POST", "/repos/octo-org/private/actions/runners/1")
    assert status == 404
    assert_github_error(body, "Not Found")


def test_an_exhausted_rate_limit_is_403_with_zero_remaining(github):
    github.rate_limited = True
    status, body, headers = call(github, "POST", JIT_PATH, BODY)
    assert status == 403
    assert headers["x-ratelimit-remaining"] == "0"
    assert_github_error(body, "API rate limit exceeded")


@pytest.mark.parametrize(
    "change",
    [{"labels": []}, {"labels": ["x"] * 101}, {"name": ""}, {"runner_group_id": "1"}],
)
def test_invalid_bodies_are_422(github, change):
    status, body, _ = call(github, "POST", JIT_PATH, BODY | change)
    assert status == 422
    assert_github_error(body, "Invalid request")


def test_an_unknown_runner_group_is_422_and_a_duplicate_name_409(github):
    assert call(github, "POST", JIT_PATH, BODY | {"runner_group_id": 9})[0] == 422
    assert call(github, "POST", JIT_PATH, BODY)[0] == 201
    status, body, _ = call(github, "POST", JIT_PATH, BODY)
    assert status == 409
    assert_github_error(body, "Already exists")


def test_a_busy_runner_cannot_be_deleted_until_it_is_idle(github):
    _, body, _ = call(github, "POST", JIT_PATH, BODY)
    runner_id = body["runner"]["id"]
    github.mark_busy(runner_id, deletes=1)
    path = f"/repos/{REPOSITORY}/actions/runners/{runner_id}"
    assert call(github, "DELETE", path)[0] == 422
    assert call(github, "DELETE", path)[0] == 204


def test_injected_failures_answer_the_next_requests_then_stop(github):
    github.fail_next(502, times=2)
    assert call(github, "POST", JIT_PATH, BODY)[0] == 502
    assert call(github, "POST", JIT_PATH, BODY)[0] == 502
    assert call(github, "POST", JIT_PATH, BODY)[0] == 201
    assert len(github.calls("POST")) == 3


def test_runners_are_listed_with_a_total_count_and_filtered_by_exact_name(github):
    call(github, "POST", JIT_PATH, BODY)
    call(github, "POST", JIT_PATH, BODY | {"name": "r10"})
    github.add_runner("octo-org/elsewhere", "r1")
    status, body, _ = call(github, "GET", f"/repos/{REPOSITORY}/actions/runners")
    assert status == 200
    assert set(body) == {"total_count", "runners"}
    assert body["total_count"] == 2
    assert [runner["name"] for runner in body["runners"]] == ["r1", "r10"]
    _, named, _ = call(github, "GET", f"/repos/{REPOSITORY}/actions/runners?name=r1")
    assert named["total_count"] == 1
    [runner] = named["runners"]
    assert {"id", "name", "os", "status", "busy", "labels"} <= set(runner)
    _, page, _ = call(github, "GET", f"/repos/{REPOSITORY}/actions/runners?per_page=1&page=2")
    assert page["total_count"] == 2
    assert [runner["name"] for runner in page["runners"]] == ["r10"]


def test_listing_runners_needs_administration_permission(github):
    path = f"/repos/{REPOSITORY}/actions/runners"
    assert call(github, "GET", path, token=READ_ONLY_TOKEN)[0] == 403
    assert call(github, "GET", path, token=None)[0] == 401


def test_a_lost_answer_is_handled_by_github_then_answered_with_an_error(github):
    github.lose_next_answer(method="POST", status=502)
    status, body, _ = call(github, "POST", JIT_PATH, BODY)
    assert status == 502
    assert_github_error(body, "Server Error")
    [runner] = github.runners.values()
    assert runner.name == "r1"
    assert call(github, "POST", JIT_PATH, BODY)[0] == 409
