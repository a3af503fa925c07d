"""The register and deregister tasks with a GitHub App and with organization runners.

Run as processes against the GitHub stand-in, as in tests/test_runner_scripts.py: the App's key
is where the template renders it (the task's secrets dir), the tasks sign the JWT with the
``openssl`` CLI, and the stand-in verifies it with the App's public key and GitHub's rules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner_job import SCRIPTS_DIR, credential_variable_paths
from tests.app_keys import AppKey, app_key
from tests.standins.github import (
    ADMIN_TOKEN,
    JWT_MAX_SECONDS,
    REPOSITORY,
    GitHubStandIn,
    Installation,
)

APP_ID = 123456
INSTALLATION_ID = 98765432
ORG = REPOSITORY.split("/")[0]
POOL = "linux"
ALLOC_ID = "5f3c1a2b-9d8e-4f70-a1b2-c3d4e5f60718"
RUNNER_NAME = f"nomad-{POOL}-{ALLOC_ID.replace('-', '')}"
REGISTER_VARIABLE, DEREGISTER_VARIABLE = credential_variable_paths("github-runner-linux")


def standin(grants: dict[str, str], **options: object) -> GitHubStandIn:
    return GitHubStandIn(
        apps={APP_ID: app_key().public_pem},
        installations={INSTALLATION_ID: Installation(APP_ID, grants)},
        runner_groups=frozenset({1, 4}),
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def repo_app() -> Iterator[GitHubStandIn]:
    """An App installed with repository Administration: read and write."""
    with standin({REPOSITORY: "admin"}) as github:
        yield github


@pytest.fixture
def org_app() -> Iterator[GitHubStandIn]:
    """An App installed with the organization permission Self-hosted runners: read and write."""
    with standin({f"org:{ORG}": "org_runners"}) as github:
        yield github


def key_file(tmp_path: Path, key: AppKey) -> Path:
    path = tmp_path / "secrets" / "github_app_key"
    path.parent.mkdir(exist_ok=True)
    # The template renders the item as stored, followed by a newline.
    path.write_bytes(key.private_pem + b"\n")
    return path


def run(
    script: str,
    github: GitHubStandIn,
    tmp_path: Path,
    *,
    key: AppKey | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    used = key or app_key()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GITHUB_API_URL": github.url,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_AUTH": "app",
        "GITHUB_APP_ID": str(APP_ID),
        "GITHUB_APP_INSTALLATION_ID": str(INSTALLATION_ID),
        "GITHUB_APP_KEY_FILE": str(key_file(tmp_path, used)),
        "GITHUB_TOKEN_FILE": str(tmp_path / "secrets" / "github_token"),
        "CREDENTIAL_VARIABLE": REGISTER_VARIABLE if script == "register" else DEREGISTER_VARIABLE,
        "RUNNER_POOL": POOL,
        "RUNNER_HANDOFF_DIR": str(tmp_path / "alloc" / "runner-handoff"),
        "NOMAD_ALLOC_ID": ALLOC_ID,
        "RUNNER_GROUP_ID": "1",
        "RUNNER_LABELS": json.dumps(["self-hosted", "linux"]),
    } | (env or {})
    result = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / f"{script}.py"), "--retry-delay", "0"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    for line in used.body_lines():
        assert line not in output  # never a line of the key
    for token in github.issued:
        assert token not in output  # nor an installation token
    return result


def call(github: GitHubStandIn, method: str, path: str, token: str) -> int:
    request = urllib.request.Request(github.url + path, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


class TestAppJwt:
    def test_register_mints_an_installation_token_then_the_jit_config(self, repo_app, tmp_path):
        result = run("register", repo_app, tmp_path)
        assert result.returncode == 0, result.stderr
        exchange, jit = repo_app.calls("POST")
        assert exchange.path == f"/app/installations/{INSTALLATION_ID}/access_tokens"
        assert jit.path == f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig"
        [token] = repo_app.issued
        assert jit.headers["authorization"] == f"Bearer {token}"
        [runner] = repo_app.runners.values()
        assert runner.name == RUNNER_NAME
        # The key and the token stay where they were: nothing new in the hand-off directory.
        handoff = sorted(p.name for p in (tmp_path / "alloc" / "runner-handoff").iterdir())
        assert handoff == ["jitconfig", "runner_id", "runner_name"]

    def test_the_jwt_carries_githubs_claims(self, repo_app, tmp_path):
        before = int(time.time())
        assert run("register", repo_app, tmp_path).returncode == 0
        after = time.time()
        [seen] = repo_app.jwts
        assert seen["header"] == {"alg": "RS256", "typ": "JWT"}
        claims = seen["claims"]
        assert claims["iss"] == str(APP_ID)
        # Backdated 60 s against clock drift; expiring within GitHub's 10 minutes.
        assert before - 60 - 1 <= claims["iat"] <= after - 60
        assert claims["exp"] <= claims["iat"] + 60 + JWT_MAX_SECONDS
        assert claims["exp"] - after <= JWT_MAX_SECONDS

    def test_a_key_that_is_not_the_apps_is_refused_with_401(self, repo_app, tmp_path):
        result = run("register", repo_app, tmp_path, key=app_key("another app"))
        assert result.returncode == 1
        assert "answered 401 (A JSON web token could not be decoded)" in result.stderr
        assert "is not this App's" in result.stderr
        assert repo_app.runners == {}

    def test_a_revoked_installation_answers_404(self, repo_app, tmp_path):
        repo_app.revoke_installation(INSTALLATION_ID)
        result = run("register", repo_app, tmp_path)
        assert result.returncode == 1
        assert "answered 404" in result.stderr
        assert "uninstalled or suspended" in result.stderr

    def test_an_expired_token_is_refused_and_each_task_mints_its_own(self, tmp_path):
        with standin({REPOSITORY: "admin"}, installation_token_seconds=1.0) as github:
            assert run("register", github, tmp_path).returncode == 0
            [first] = github.issued
            time.sleep(1.1)
            runner_id = next(iter(github.runners))
            path = f"/repos/{REPOSITORY}/actions/runners/{runner_id}"
            assert call(github, "GET", path, first) == 401  # Bad credentials: expired
            result = run("deregister", github, tmp_path)
            assert result.returncode == 0, result.stderr
            assert len(github.issued) == 2 and github.runners == {}

    def test_a_helper_image_without_openssl_is_a_bad_setting(self, repo_app, tmp_path):
        result = run("register", repo_app, tmp_path, env={"PATH": str(tmp_path)})
        assert result.returncode == 2
        assert "no openssl CLI" in result.stderr and "images.helper" in result.stderr
        assert repo_app.calls() == []

    def test_a_missing_key_item_is_named(self, repo_app, tmp_path):
        key_file(tmp_path, app_key()).write_text("\n")
        env = {"GITHUB_APP_KEY_FILE": str(tmp_path / "secrets" / "empty")}
        (tmp_path / "secrets" / "empty").write_text("")
        result = run("register", repo_app, tmp_path, env=env)
        assert result.returncode == 2
        assert "github_app_private_key item is missing or empty" in result.stderr


ORG_ENV = {"RUNNER_SCOPE": "organization", "GITHUB_OWNER": ORG, "RUNNER_GROUP_ID": "4"}


class TestOrganizationRunners:
    def test_register_and_deregister_at_organization_level(self, org_app, tmp_path):
        result = run("register", org_app, tmp_path, env=ORG_ENV)
        assert result.returncode == 0, result.stderr
        jit = org_app.calls("POST")[-1]
        assert jit.path == f"/orgs/{ORG}/actions/runners/generate-jitconfig"
        assert jit.body["runner_group_id"] == 4
        [runner] = org_app.runners.values()
        assert (runner.repository, runner.runner_group_id) == (f"org:{ORG}", 4)
        result = run("deregister", org_app, tmp_path, env=ORG_ENV)
        assert result.returncode == 0, result.stderr
        deleted = org_app.calls("DELETE")
        assert [c.path for c in deleted] == [f"/orgs/{ORG}/actions/runners/{runner.id}"]
        assert org_app.runners == {}

    def test_a_repository_permission_cannot_mint_organization_runners(self, repo_app, tmp_path):
        result = run("register", repo_app, tmp_path, env=ORG_ENV)
        assert result.returncode == 1
        assert "answered 403 (Resource not accessible by integration)" in result.stderr
        assert '"Self-hosted runners: read and write"' in result.stderr
        assert "item github_app_private_key" in result.stderr

    def test_a_repository_of_another_owner_is_refused_before_any_request(self, org_app, tmp_path):
        env = ORG_ENV | {"GITHUB_REPOSITORY": "someone-else/app"}
        result = run("register", org_app, tmp_path, env=env)
        assert result.returncode == 2
        assert "is not owned by the organization" in result.stderr
        assert org_app.calls() == []

    def test_a_token_with_the_organization_permission_works_too(self, tmp_path):
        tokens = {ADMIN_TOKEN: {f"org:{ORG}": "org_runners"}}
        with GitHubStandIn(tokens=tokens, runner_groups=frozenset({1, 4})) as github:
            token = tmp_path / "secrets" / "github_token"
            token.parent.mkdir()
            token.write_text(ADMIN_TOKEN + "\n")
            result = run("register", github, tmp_path, env=ORG_ENV | {"GITHUB_AUTH": "token"})
            assert result.returncode == 0, result.stderr
            assert github.calls("POST")[0].headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
