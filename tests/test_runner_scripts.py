"""The register and deregister task scripts, run as processes against the GitHub stand-in.

Each script is started the way Nomad starts it: ``python3 <script>`` with the environment the
jobspec sets (plus short retry delays), and a token file where the template renders it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from handler.contract import REPOSITORY_PATTERN
from runner_job import SCRIPTS_DIR, credential_variable_paths
from tests.standins.github import ADMIN_TOKEN, READ_ONLY_TOKEN, REPOSITORY, GitHubStandIn

JOB = "github-runner-linux"
POOL = "linux"
ALLOC_ID = "5f3c1a2b-9d8e-4f70-a1b2-c3d4e5f60718"
LABELS = ["self-hosted", "linux", "x64"]
REGISTER_VARIABLE, DEREGISTER_VARIABLE = credential_variable_paths(JOB)
RUNNER_UID = 1001


@dataclass
class Allocation:
    """The files one allocation's helper tasks see: a secrets dir each and the hand-off dir."""

    root: Path
    alloc_id: str = ALLOC_ID

    @property
    def handoff(self) -> Path:
        return self.root / "alloc" / "runner-handoff"

    @property
    def token_file(self) -> Path:
        return self.root / "secrets" / "github_token"

    def runner_name(self) -> str:
        return f"nomad-{POOL}-{self.alloc_id.replace('-', '')}"


@pytest.fixture
def github() -> Iterator[GitHubStandIn]:
    with GitHubStandIn() as standin:
        yield standin


@pytest.fixture
def alloc(tmp_path: Path) -> Allocation:
    allocation = Allocation(tmp_path)
    allocation.token_file.parent.mkdir()
    # The template renders the Variable's item followed by a newline.
    allocation.token_file.write_text(ADMIN_TOKEN + "\n")
    return allocation


def run(
    script: str,
    github: GitHubStandIn,
    alloc: Allocation,
    *flags: str,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    variable = REGISTER_VARIABLE if script == "register" else DEREGISTER_VARIABLE
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "GITHUB_API_URL": github.url,
        "GITHUB_REPOSITORY": REPOSITORY,
        "GITHUB_TOKEN_FILE": str(alloc.token_file),
        "CREDENTIAL_VARIABLE": variable,
        "RUNNER_POOL": POOL,
        "RUNNER_HANDOFF_DIR": str(alloc.handoff),
        "NOMAD_ALLOC_ID": alloc.alloc_id,
    }
    if script == "register":
        environment |= {"RUNNER_GROUP_ID": "1", "RUNNER_LABELS": json.dumps(LABELS)}
    environment |= env or {}
    delays = ["--retry-delay", "0"] + (["--busy-delay", "0"] if script == "deregister" else [])
    result = subprocess.run(
        [sys.executable, str(SCRIPTS_DIR / f"{script}.py"), *delays, *flags],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Whatever happens, the credential is never printed.
    token = alloc.token_file.read_text().strip() if alloc.token_file.exists() else ""
    if token:
        assert token not in result.stdout + result.stderr
    return result


def register(github: GitHubStandIn, alloc: Allocation) -> int:
    result = run("register", github, alloc)
    assert result.returncode == 0, result.stderr
    return int((alloc.handoff / "runner_id").read_text())


class TestRegister:
    def test_mints_a_jit_config_and_hands_it_over(self, github, alloc):
        result = run("register", github, alloc)
        assert result.returncode == 0, result.stderr
        [runner] = github.runners.values()
        assert (alloc.handoff / "jitconfig").read_text() == runner.jit_config
        assert (alloc.handoff / "runner_id").read_text().strip() == str(runner.id)
        assert (alloc.handoff / "runner_name").read_text().strip() == alloc.runner_name()
        assert alloc.runner_name() in result.stdout

    def test_asks_for_the_pools_labels_group_and_a_name_for_this_allocation(self, github, alloc):
        run("register", github, alloc)
        [call] = github.calls("POST")
        assert call.path == f"/repos/{REPOSITORY}/actions/runners/generate-jitconfig"
        assert call.body == {
            "name": alloc.runner_name(),
            "runner_group_id": 1,
            "labels": LABELS,
            "work_folder": "_work",
        }
        assert call.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"
        assert call.headers["x-github-api-version"] == "2022-11-28"

    def test_the_config_is_readable_by_the_runner_user_only(self, github, alloc):
        run("register", github, alloc)
        config = (alloc.handoff / "jitconfig").stat()
        assert stat.S_IMODE(config.st_mode) == 0o600
        expected_owner = RUNNER_UID if os.geteuid() == 0 else os.geteuid()
        assert config.st_uid == expected_owner
        # The runner user owns the directory, so it can delete the config once read.
        assert alloc.handoff.stat().st_uid == expected_owner

    def test_runner_names_differ_between_allocations(self, github, tmp_path):
        names = set()
        for index, alloc_id in enumerate(
            ("0b6a4c1e-0000-4000-8000-000000000001", "0b6a4c1e-0000-4000-8000-000000000002")
        ):
            allocation = Allocation(tmp_path / str(index), alloc_id)
            allocation.token_file.parent.mkdir(parents=True)
            allocation.token_file.write_text(ADMIN_TOKEN)
            assert run("register", github, allocation).returncode == 0
            names.add(allocation.runner_name())
        assert {r.name for r in github.runners.values()} == names
        assert len(names) == 2

    def test_a_lost_answer_then_a_retry_ends_with_exactly_one_runner(self, github, alloc):
        """GitHub registered the runner but its answer was lost; the retry's 409 is not fatal."""
        github.lose_next_answer(method="POST", status=502)
        result = run("register", github, alloc)
        assert result.returncode == 0, result.stderr
        [runner] = github.runners.values()
        assert runner.name == alloc.runner_name()
        assert (alloc.handoff / "runner_id").read_text().strip() == str(runner.id)
        assert (alloc.handoff / "jitconfig").read_text() == runner.jit_config
        assert "earlier try" in result.stdout
        steps = [(c.method, c.path.partition("?")[0].rsplit("/", 1)[-1]) for c in github.requests]
        assert steps[:3] == [("POST", "generate-jitconfig")] * 2 + [("GET", "runners")]
        assert steps[3][0] == "DELETE"
        assert steps[4:] == [("POST", "generate-jitconfig")]
        lookup = github.requests[2]
        assert lookup.path.partition("?")[2].startswith(f"name={alloc.runner_name()}")

    def test_a_timed_out_answer_then_a_retry_ends_with_exactly_one_runner(self, github, alloc):
        github.lose_next_answer(method="POST", delay=1.5)
        result = run("register", github, alloc, "--timeout", "0.5")
        assert result.returncode == 0, result.stderr
        [runner] = github.runners.values()
        assert (alloc.handoff / "runner_id").read_text().strip() == str(runner.id)
        assert len(github.calls("DELETE")) == 1

    def test_a_leftover_runner_of_this_allocations_name_is_replaced(self, github, alloc):
        first = register(github, alloc)
        result = run("register", github, alloc)
        assert result.returncode == 0, result.stderr
        [runner] = github.runners.values()
        assert runner.id != first
        assert (alloc.handoff / "runner_id").read_text().strip() == str(runner.id)

    def test_a_busy_runner_of_this_name_is_left_alone_and_fails_the_task(self, github, alloc):
        other = github.add_runner(REPOSITORY, alloc.runner_name())
        github.mark_busy(other.id, deletes=100)
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "already exists" in result.stderr
        assert "busy" in result.stderr
        assert f"id {other.id}" in result.stderr
        assert "re-dispatch" in result.stderr
        assert not github.calls("DELETE")
        assert list(github.runners) == [other.id]
        assert len(github.calls("POST")) == 1
        assert not alloc.handoff.exists()

    def test_a_runner_of_this_name_that_cannot_be_deleted_fails_the_task(self, github, alloc):
        other = github.add_runner(REPOSITORY, alloc.runner_name())
        github.fail_next(422, method="DELETE", message="Bad request - still running a job")
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "refused to delete" in result.stderr
        assert "re-dispatch" in result.stderr
        assert list(github.runners) == [other.id]
        assert not alloc.handoff.exists()

    def test_a_name_taken_again_after_the_removal_is_refused_with_advice(self, github, alloc):
        github.add_runner(REPOSITORY, alloc.runner_name())
        github.fail_next(409, method="POST", message="Already exists - A runner with the name")
        github.fail_next(409, method="POST", message="Already exists - A runner with the name")
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "409" in result.stderr
        assert "re-dispatch" in result.stderr
        assert len(github.calls("POST")) == 2

    def test_bad_credentials_name_the_variable_to_fix(self, github, alloc):
        alloc.token_file.write_text("ghp_revoked_or_mistyped_token_000000000")
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "401" in result.stderr
        assert REGISTER_VARIABLE in result.stderr
        assert "github_token" in result.stderr
        assert not alloc.handoff.exists()

    def test_a_token_without_administration_permission_says_which_permission(self, github, alloc):
        alloc.token_file.write_text(READ_ONLY_TOKEN)
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "403" in result.stderr
        assert '"Administration: read and write"' in result.stderr
        assert not alloc.handoff.exists()

    def test_an_unknown_repository_points_at_the_meta_and_token_access(self, github, alloc):
        result = run("register", github, alloc, env={"GITHUB_REPOSITORY": "octo-org/missing"})
        assert result.returncode == 1
        assert "404" in result.stderr
        assert "github_repository" in result.stderr

    def test_an_unknown_runner_group_points_at_runner_group_id(self, github, alloc):
        result = run("register", github, alloc, env={"RUNNER_GROUP_ID": "7"})
        assert result.returncode == 1
        assert "422" in result.stderr
        assert "runner_group_id" in result.stderr

    def test_an_exhausted_rate_limit_is_reported_as_such(self, github, alloc):
        github.rate_limited = True
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "403" in result.stderr
        assert "rate limit" in result.stderr
        assert "Administration" not in result.stderr

    def test_a_secondary_rate_limit_429_is_reported_as_such(self, github, alloc):
        github.fail_next(429, message="You have exceeded a secondary rate limit.")
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "rate limit" in result.stderr

    def test_a_secondary_rate_limit_403_is_not_called_a_permission_problem(self, github, alloc):
        github.fail_next(
            403,
            message="You have exceeded a secondary rate limit. Please wait a few minutes.",
            headers={"retry-after": "60"},
        )
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "rate limit" in result.stderr
        assert "Administration" not in result.stderr

    def test_a_github_outage_is_retried_then_reported(self, github, alloc):
        github.fail_next(502, times=3)
        result = run("register", github, alloc)
        assert result.returncode == 1
        assert "502" in result.stderr
        assert "try again later" in result.stderr
        assert len(github.calls("POST")) == 3
        assert not github.runners

    def test_a_passing_github_failure_is_retried(self, github, alloc):
        github.fail_next(503)
        result = run("register", github, alloc)
        assert result.returncode == 0, result.stderr
        assert len(github.calls("POST")) == 2
        assert (alloc.handoff / "jitconfig").exists()

    def test_an_unreachable_api_names_the_setting(self, github, alloc):
        result = run("register", github, alloc, env={"GITHUB_API_URL": "http://127.0.0.1:9"})
        assert result.returncode == 1
        assert "cannot reach" in result.stderr
        assert "github_api_url" in result.stderr

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({"GITHUB_REPOSITORY": ""}, "GITHUB_REPOSITORY"),
            ({"GITHUB_REPOSITORY": "not-a-repository"}, "owner/name"),
            ({"RUNNER_LABELS": "self-hosted,linux"}, "RUNNER_LABELS"),
            ({"RUNNER_LABELS": "[]"}, "RUNNER_LABELS"),
            ({"RUNNER_GROUP_ID": "default"}, "RUNNER_GROUP_ID"),
            ({"NOMAD_ALLOC_ID": ""}, "NOMAD_ALLOC_ID"),
        ],
    )
    def test_bad_settings_are_named_and_nothing_is_sent(self, github, alloc, env, named):
        result = run("register", github, alloc, env=env)
        assert result.returncode == 2
        assert named in result.stderr
        assert not github.requests

    def test_a_missing_credential_file_is_named(self, github, alloc):
        alloc.token_file.unlink()
        result = run("register", github, alloc)
        assert result.returncode == 2
        assert str(alloc.token_file) in result.stderr

    def test_an_empty_credential_file_points_at_the_item(self, github, alloc):
        alloc.token_file.write_text("\n")
        result = run("register", github, alloc)
        assert result.returncode == 2
        assert "github_token" in result.stderr


class TestDeregister:
    def test_after_a_job_the_runner_github_removed_is_left_alone(self, github, alloc):
        runner_id = register(github, alloc)
        del github.runners[runner_id]  # an ephemeral runner that ran its job is gone
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert "already gone" in result.stdout
        assert [c.method for c in github.requests[1:]] == ["GET"]

    def test_after_no_job_the_runner_is_deleted(self, github, alloc):
        runner_id = register(github, alloc)
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert runner_id not in github.runners
        [delete] = github.calls("DELETE")
        assert delete.path == f"/repos/{REPOSITORY}/actions/runners/{runner_id}"
        assert delete.headers["authorization"] == f"Bearer {ADMIN_TOKEN}"

    def test_a_config_the_runner_never_read_is_removed(self, github, alloc):
        register(github, alloc)
        assert (alloc.handoff / "jitconfig").exists()
        assert run("deregister", github, alloc).returncode == 0
        assert not (alloc.handoff / "jitconfig").exists()

    def test_is_idempotent(self, github, alloc):
        register(github, alloc)
        assert run("deregister", github, alloc).returncode == 0
        again = run("deregister", github, alloc)
        assert again.returncode == 0, again.stderr
        assert len(github.calls("DELETE")) == 1

    def test_a_delete_that_finds_nothing_counts_as_success(self, github, alloc):
        register(github, alloc)
        github.fail_next(404, method="DELETE", message="Not Found")
        assert run("deregister", github, alloc).returncode == 0

    def test_without_a_registration_it_exits_quietly_without_calling_github(self, github, alloc):
        alloc.token_file.unlink()  # not even the credential is needed
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert "nothing to remove" in result.stdout
        assert not github.requests

    def test_waits_while_github_still_reports_the_runner_busy(self, github, alloc):
        runner_id = register(github, alloc)
        github.mark_busy(runner_id, deletes=2)
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert len(github.calls("DELETE")) == 3
        assert runner_id not in github.runners

    def test_gives_up_on_a_runner_that_stays_busy(self, github, alloc):
        runner_id = register(github, alloc)
        github.mark_busy(runner_id, deletes=10)
        result = run("deregister", github, alloc, "--busy-retries", "3")
        assert result.returncode == 1
        assert "busy" in result.stderr
        assert len(github.calls("DELETE")) == 3

    def test_refuses_to_delete_a_runner_of_another_name(self, github, alloc):
        """The hand-off dir is writable where workflow code runs: an id is not trusted alone."""
        register(github, alloc)
        other = github.add_runner(REPOSITORY, "someone-elses-runner")
        (alloc.handoff / "runner_id").write_text(f"{other.id}\n")
        result = run("deregister", github, alloc)
        assert result.returncode == 1
        assert "refusing" in result.stderr
        assert other.id in github.runners
        assert not github.calls("DELETE")

    def test_bad_credentials_name_the_deregister_variable(self, github, alloc):
        register(github, alloc)
        alloc.token_file.write_text("ghp_revoked_or_mistyped_token_000000000")
        result = run("deregister", github, alloc)
        assert result.returncode == 1
        assert "401" in result.stderr
        assert DEREGISTER_VARIABLE in result.stderr

    def test_a_github_outage_is_retried(self, github, alloc):
        runner_id = register(github, alloc)
        github.fail_next(500, method="DELETE")
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert runner_id not in github.runners

    def test_a_corrupt_runner_id_is_named(self, github, alloc):
        register(github, alloc)
        (alloc.handoff / "runner_id").write_text("not-a-number")
        result = run("deregister", github, alloc)
        assert result.returncode == 2
        assert "runner_id" in result.stderr

    def test_a_runner_id_linked_to_the_credential_is_refused_without_printing_it(
        self, github, alloc
    ):
        """A symlink planted by workflow code resolves in this task's container: never follow."""
        register(github, alloc)
        (alloc.handoff / "runner_id").unlink()
        (alloc.handoff / "runner_id").symlink_to(alloc.token_file)
        result = run("deregister", github, alloc)  # run() asserts the token is not printed
        assert result.returncode == 2
        assert "not a plain file" in result.stderr
        assert len(github.requests) == 1, "only register called GitHub"

    def test_a_runner_id_replaced_by_a_fifo_does_not_hang(self, github, alloc):
        register(github, alloc)
        (alloc.handoff / "runner_id").unlink()
        os.mkfifo(alloc.handoff / "runner_id")
        result = run("deregister", github, alloc)
        assert result.returncode == 2
        assert "not a plain file" in result.stderr

    def test_a_jitconfig_path_taken_by_a_directory_does_not_keep_the_runner(self, github, alloc):
        """Register cannot hand over, yet leaves the id; deregister still removes the runner."""
        alloc.handoff.mkdir(parents=True)
        (alloc.handoff / "jitconfig").mkdir()
        registered = run("register", github, alloc)
        assert registered.returncode == 2
        assert "deregister task removes the runner" in registered.stderr
        [runner_id] = github.runners
        result = run("deregister", github, alloc)
        assert result.returncode == 0, result.stderr
        assert runner_id not in github.runners


@cache
def load_github_api() -> ModuleType:
    """The scripts' helper module, loaded from its file as the task scripts import it on Nomad."""
    spec = importlib.util.spec_from_file_location("task_github_api", SCRIPTS_DIR / "github_api.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# Dispatch meta values that must never reach a GitHub API path: a query, a fragment, another
# path, a dot segment, a trailing newline, characters GitHub names never contain.
BAD_REPOSITORIES = [
    "acme/victim?x=",
    "acme/victim#x",
    "../x",
    "./x",
    "acme/..",
    "acme/.",
    "acme/victim/extra",
    "acme/victim%2F..",
    "acme/victim\n",
    "acme/vic tim",
    "acme",
    "/victim",
    "acme/",
    "acme\\victim",
]


class TestRepositoryMeta:
    def test_the_scripts_use_the_handlers_repository_pattern(self):
        """Same pattern text, same flags: what the handler accepts is what the tasks accept."""
        github_api = load_github_api()
        assert github_api.REPOSITORY_PATTERN.pattern == REPOSITORY_PATTERN.pattern
        assert github_api.REPOSITORY_PATTERN.flags == REPOSITORY_PATTERN.flags

    @pytest.mark.parametrize("repository", BAD_REPOSITORIES)
    def test_both_patterns_refuse_a_bad_repository(self, repository):
        assert not REPOSITORY_PATTERN.match(repository)
        assert not load_github_api().REPOSITORY_PATTERN.match(repository)

    @pytest.mark.parametrize("repository", ["octo-org/hello-world", "a.b/c_d.e-f", "x/.github"])
    def test_real_names_pass_and_stay_one_segment_each(self, repository):
        owner, name = load_github_api().split_repository(repository)
        assert f"{owner}/{name}" == repository

    @pytest.mark.parametrize("repository", BAD_REPOSITORIES)
    def test_register_refuses_a_bad_repository_before_any_request(self, github, alloc, repository):
        result = run("register", github, alloc, env={"GITHUB_REPOSITORY": repository})
        assert result.returncode == 2
        assert "GITHUB_REPOSITORY" in result.stderr
        assert not github.requests
        assert not alloc.handoff.exists()

    @pytest.mark.parametrize("repository", BAD_REPOSITORIES)
    def test_deregister_refuses_a_bad_repository_before_any_request(
        self, github, alloc, repository
    ):
        alloc.handoff.mkdir(parents=True)
        (alloc.handoff / "runner_id").write_text("42\n")
        result = run("deregister", github, alloc, env={"GITHUB_REPOSITORY": repository})
        assert result.returncode == 2
        assert "GITHUB_REPOSITORY" in result.stderr
        assert not github.requests
