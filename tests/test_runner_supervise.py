"""The runner task's supervisor, run with bash against a fake run.sh, and the whole allocation.

``tests/fakes/run.sh`` prints the real runner's log lines on cue (a job, no job, a job that never
ends). The allocation tests chain the three tasks as Nomad runs them (register, then runner, then
deregister) against the GitHub stand-in. Timeouts are 1-2 s; every run has a hard time bound.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner_job import RUNNER_JOB_DIR, SCRIPTS_DIR, credential_variable_paths
from tests.standins.github import ADMIN_TOKEN, REPOSITORY, GitHubStandIn

TESTS_DIR = Path(__file__).resolve().parent
FAKE_RUN_SH = TESTS_DIR / "fakes" / "run.sh"
SUPERVISE = SCRIPTS_DIR / "supervise.sh"
ALLOC_ID = "9a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
POOL = "linux"


def supervise(
    config_file: Path, record: Path, *, timeout: float = 20, **settings: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "RUNNER_RUN_SH": str(FAKE_RUN_SH),
        "RUNNER_JITCONFIG_FILE": str(config_file),
        "FAKE_RECORD": str(record),
        "RUNNER_STOP_GRACE_SECONDS": "2",
    } | settings
    return subprocess.run(
        ["bash", str(SUPERVISE)], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "runner-handoff" / "jitconfig"
    path.parent.mkdir()
    path.write_text("ZW5jb2RlZC1qaXQtY29uZmln")
    return path


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record"


def recorded_pid(record: Path) -> int:
    for line in record.read_text().splitlines():
        if line.startswith("pid: "):
            return int(line.removeprefix("pid: "))
    raise AssertionError("the fake runner recorded no pid")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestSupervisor:
    def test_runs_one_job_and_passes_the_runner_output_on(self, config_file, record):
        result = supervise(config_file, record, FAKE_RUNNER_SCENARIO="job")
        assert result.returncode == 0, result.stderr
        assert "Listening for Jobs" in result.stdout
        assert "Running job: build" in result.stdout
        assert "Job build completed with result: Succeeded" in result.stdout

    def test_starts_run_sh_with_the_config_and_deletes_the_file_first(self, config_file, record):
        supervise(config_file, record, FAKE_RUNNER_SCENARIO="job")
        lines = record.read_text().splitlines()
        assert "args: --jitconfig ZW5jb2RlZC1qaXQtY29uZmln" in lines
        assert "config file: absent" in lines
        assert not config_file.exists()

    def test_a_line_written_in_pieces_is_read_whole(self, config_file, record):
        """The output is read with a timeout: a line split across reads must still match."""
        result = supervise(config_file, record, FAKE_RUNNER_SCENARIO="split")
        assert result.returncode == 0, result.stderr
        assert any(line.endswith(": Running job: build") for line in result.stdout.splitlines())
        assert "a job started" in result.stderr

    def test_passes_on_the_runners_exit_status(self, config_file, record):
        result = supervise(config_file, record, FAKE_RUNNER_SCENARIO="job", FAKE_EXIT_CODE="3")
        assert result.returncode == 3

    def test_a_refused_runner_version_fails_the_task_and_says_why(self, config_file, record):
        """With the jobspec's ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE=1, run.sh exits 7
        on GitHub's version refusal; the supervisor passes it on and names the fix."""
        result = supervise(
            config_file,
            record,
            FAKE_RUNNER_SCENARIO="refused",
            ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE="1",
        )
        assert result.returncode == 7
        assert "GitHub refused this runner version" in result.stderr
        assert "images.runner" in result.stderr

    def test_without_the_setting_a_refused_runner_would_look_like_a_clean_end(
        self, config_file, record
    ):
        """Why the jobspec sets it: run.sh turns the listener's refusal into status 0 otherwise."""
        result = supervise(config_file, record, FAKE_RUNNER_SCENARIO="refused")
        assert result.returncode == 0
        assert "GitHub refused" not in result.stderr

    def test_ends_a_runner_that_gets_no_job_within_the_idle_timeout(self, config_file, record):
        began = time.monotonic()
        result = supervise(
            config_file, record, FAKE_RUNNER_SCENARIO="idle", RUNNER_IDLE_TIMEOUT_SECONDS="1"
        )
        assert result.returncode == 0, result.stderr
        assert time.monotonic() - began < 8
        assert "no job started within 1s" in result.stderr
        assert "Exiting..." in result.stdout, "the runner got SIGTERM and shut down itself"

    def test_the_idle_timeout_does_not_cut_a_started_job(self, config_file, record):
        result = supervise(
            config_file,
            record,
            FAKE_RUNNER_SCENARIO="job",
            FAKE_JOB_SECONDS="2.5",
            RUNNER_IDLE_TIMEOUT_SECONDS="1",
        )
        assert result.returncode == 0, result.stderr
        assert "Job build completed with result: Succeeded" in result.stdout
        assert "stopping" not in result.stderr

    def test_stops_a_job_that_runs_longer_than_the_maximum(self, config_file, record):
        began = time.monotonic()
        result = supervise(
            config_file,
            record,
            FAKE_RUNNER_SCENARIO="long",
            RUNNER_IDLE_TIMEOUT_SECONDS="1",
            RUNNER_MAX_JOB_SECONDS="2",
        )
        assert result.returncode == 124
        assert time.monotonic() - began < 10
        assert "has run for 2s, the maximum" in result.stderr
        assert "Exiting..." in result.stdout

    def test_kills_a_runner_that_ignores_sigterm_after_the_grace(self, config_file, record):
        result = supervise(
            config_file,
            record,
            FAKE_RUNNER_SCENARIO="long",
            FAKE_IGNORE_TERM="1",
            RUNNER_MAX_JOB_SECONDS="1",
            RUNNER_STOP_GRACE_SECONDS="1",
        )
        assert result.returncode == 124
        assert "killing it" in result.stderr
        assert not process_exists(recorded_pid(record))

    def test_a_nomad_stop_reaches_the_runner(self, config_file, record):
        env = os.environ | {
            "RUNNER_RUN_SH": str(FAKE_RUN_SH),
            "RUNNER_JITCONFIG_FILE": str(config_file),
            "FAKE_RECORD": str(record),
            "FAKE_RUNNER_SCENARIO": "long",
            "FAKE_TERM_EXIT_CODE": "143",
        }
        process = subprocess.Popen(
            ["bash", str(SUPERVISE)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            deadline = time.monotonic() + 10
            while not record.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=10)
        finally:
            process.kill()
        assert process.returncode == 143
        assert b"Nomad is stopping the task" in stderr
        assert b"Exiting..." in stdout

    def test_refuses_to_start_without_a_config(self, config_file, record):
        config_file.unlink()
        result = supervise(config_file, record)
        assert result.returncode == 3
        assert "register task" in result.stderr
        assert not record.exists(), "run.sh must not have been started"

    def test_refuses_an_empty_config(self, config_file, record):
        config_file.write_text("")
        result = supervise(config_file, record)
        assert result.returncode == 3
        assert not record.exists()

    @pytest.mark.parametrize(
        "setting", ["RUNNER_IDLE_TIMEOUT_SECONDS", "RUNNER_MAX_JOB_SECONDS", "RUNNER_POLL_SECONDS"]
    )
    def test_rejects_a_bad_setting_by_name(self, config_file, record, setting):
        result = supervise(config_file, record, **{setting: "ten"})
        assert result.returncode == 2
        assert setting in result.stderr
        assert config_file.exists(), "nothing was consumed"


class TestAllocation:
    """register -> runner -> deregister, as Nomad runs one dispatched allocation."""

    @pytest.fixture
    def github(self) -> Iterator[GitHubStandIn]:
        with GitHubStandIn() as standin:
            yield standin

    def helper(
        self, script: str, github: GitHubStandIn, root: Path
    ) -> subprocess.CompletedProcess[str]:
        variable = credential_variable_paths("github-runner-linux")[script == "deregister"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GITHUB_API_URL": github.url,
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_TOKEN_FILE": str(root / script / "secrets" / "github_token"),
            "CREDENTIAL_VARIABLE": variable,
            "RUNNER_POOL": POOL,
            "RUNNER_GROUP_ID": "1",
            "RUNNER_LABELS": json.dumps(["self-hosted", "linux"]),
            "RUNNER_HANDOFF_DIR": str(root / "alloc" / "runner-handoff"),
            "NOMAD_ALLOC_ID": ALLOC_ID,
        }
        delays = ["--retry-delay", "0"] + (["--busy-delay", "0"] if script == "deregister" else [])
        return subprocess.run(
            [sys.executable, str(SCRIPTS_DIR / f"{script}.py"), *delays],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        # Each helper task has its own secrets dir; the runner task has none.
        for task in ("register", "deregister"):
            secrets = tmp_path / task / "secrets"
            secrets.mkdir(parents=True)
            (secrets / "github_token").write_text(ADMIN_TOKEN + "\n")
        return tmp_path

    def run_allocation(
        self, github: GitHubStandIn, root: Path, **settings: str
    ) -> tuple[int, subprocess.CompletedProcess[str]]:
        registered = self.helper("register", github, root)
        assert registered.returncode == 0, registered.stderr
        [runner] = github.runners.values()
        config = root / "alloc" / "runner-handoff" / "jitconfig"
        result = supervise(config, root / "record", RUNNER_IDLE_TIMEOUT_SECONDS="1", **settings)
        # The runner got exactly the config GitHub issued, with no credential around it.
        assert f"args: --jitconfig {runner.jit_config}" in (root / "record").read_text()
        assert ADMIN_TOKEN not in result.stdout + result.stderr
        return runner.id, result

    def test_a_job_runs_and_nothing_is_left_behind(self, github, root):
        runner_id, result = self.run_allocation(github, root, FAKE_RUNNER_SCENARIO="job")
        assert result.returncode == 0
        del github.runners[runner_id]  # GitHub removes an ephemeral runner after its job
        deregistered = self.helper("deregister", github, root)
        assert deregistered.returncode == 0, deregistered.stderr
        assert not github.runners
        assert not github.calls("DELETE")
        assert not (root / "alloc" / "runner-handoff" / "jitconfig").exists()

    def test_no_job_came_so_the_idle_runner_is_ended_and_deleted(self, github, root):
        runner_id, result = self.run_allocation(github, root, FAKE_RUNNER_SCENARIO="idle")
        assert result.returncode == 0
        deregistered = self.helper("deregister", github, root)
        assert deregistered.returncode == 0, deregistered.stderr
        assert runner_id not in github.runners
        assert len(github.calls("DELETE")) == 1

    def test_an_overlong_job_is_stopped_and_its_runner_deleted(self, github, root):
        runner_id, result = self.run_allocation(
            github, root, FAKE_RUNNER_SCENARIO="long", RUNNER_MAX_JOB_SECONDS="1"
        )
        assert result.returncode == 124
        deregistered = self.helper("deregister", github, root)
        assert deregistered.returncode == 0, deregistered.stderr
        assert runner_id not in github.runners

    def test_a_failed_registration_starts_nothing_and_deregister_exits_quietly(self, github, root):
        github.fail_next(401, message="Bad credentials")
        registered = self.helper("register", github, root)
        assert registered.returncode == 1
        result = supervise(
            root / "alloc" / "runner-handoff" / "jitconfig", root / "record", timeout=10
        )
        assert result.returncode == 3
        deregistered = self.helper("deregister", github, root)
        assert deregistered.returncode == 0, deregistered.stderr
        assert [c.method for c in github.requests] == ["POST"]


def test_every_shell_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: `make tools` installs it"
    scripts = sorted({*RUNNER_JOB_DIR.rglob("*.sh"), *TESTS_DIR.rglob("*.sh")})
    assert SUPERVISE in scripts and FAKE_RUN_SH in scripts
    result = subprocess.run(
        [shellcheck, "--severity=style", *map(str, scripts)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
