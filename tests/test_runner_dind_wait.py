"""The dind runner's entry point (dind-runner.sh), run with bash, against a Docker daemon stand-in.

It runs as the runner task does: wait for the daemon at DOCKER_HOST, copy the externals into the
share, then exec the real supervise.sh, which starts ``tests/fakes/run.sh``. The daemon comes up
late, never, hangs, or answers errors and dies; the runner must never start before the daemon
has answered, and must not start at all when it never does. Every run has a hard time bound.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from runner_job import SCRIPTS_DIR
from tests.standins.docker import DockerDaemonStandIn

TESTS_DIR = Path(__file__).resolve().parent
FAKE_RUN_SH = TESTS_DIR / "fakes" / "run.sh"
DIND_RUNNER = SCRIPTS_DIR / "dind-runner.sh"
SUPERVISE = SCRIPTS_DIR / "supervise.sh"
EXIT_NO_DAEMON = 4
EXIT_NO_SHARE = 5


class Task:
    """One runner task's files: the hand-off config, the image's externals, the share."""

    def __init__(self, root: Path) -> None:
        self.config = root / "alloc" / "runner-handoff" / "jitconfig"
        self.config.parent.mkdir(parents=True)
        self.config.write_text("ZW5jb2RlZC1qaXQtY29uZmln")
        self.externals = root / "home" / "runner" / "externals"
        (self.externals / "node20" / "bin").mkdir(parents=True)
        (self.externals / "node20" / "bin" / "node").write_text("#!/bin/sh\n")
        (self.externals / "node20" / "bin" / "node").chmod(0o755)
        (self.externals / "node20" / "bin" / "npm").symlink_to("node")
        self.share = root / "alloc" / "tmp" / "runner-externals"
        self.share.mkdir(parents=True)
        self.record = root / "record"

    def env(self, docker_host: str, **settings: str) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DOCKER_HOST": docker_host,
            "RUNNER_DOCKER_WAIT_SECONDS": "3",
            "RUNNER_DOCKER_PROBE_SECONDS": "1",
            "RUNNER_EXTERNALS_DIR": str(self.externals),
            "RUNNER_EXTERNALS_SHARE": str(self.share),
            "RUNNER_SUPERVISOR": str(SUPERVISE),
            "RUNNER_RUN_SH": str(FAKE_RUN_SH),
            "RUNNER_JITCONFIG_FILE": str(self.config),
            "RUNNER_STOP_GRACE_SECONDS": "2",
            "FAKE_RECORD": str(self.record),
            "FAKE_RUNNER_SCENARIO": "job",
        } | settings

    def run(self, docker_host: str, **settings: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(DIND_RUNNER)],
            env=self.env(docker_host, **settings),
            capture_output=True,
            text=True,
            timeout=30,
        )

    def runner_started_at(self) -> float:
        assert self.record.exists(), "the fake runner never started"
        return self.record.stat().st_mtime

    def runner_started(self) -> bool:
        return self.record.exists()


@pytest.fixture
def task(tmp_path: Path) -> Task:
    return Task(tmp_path)


def test_a_daemon_that_comes_up_late_is_waited_for_and_the_runner_starts_after_it(task):
    with DockerDaemonStandIn(up_after=1.5) as daemon:
        began = time.time()
        result = task.run(daemon.host, RUNNER_DOCKER_WAIT_SECONDS="10")
        first_ok = daemon.first_ok()
    assert result.returncode == 0, result.stderr
    assert "Running job: build" in result.stdout
    assert first_ok is not None and first_ok >= began + 1.4
    assert task.runner_started_at() >= first_ok - 0.05, "the runner started before the daemon"
    assert f"the Docker daemon at {daemon.host} answered after" in result.stderr
    assert not task.config.exists(), "supervise.sh read and deleted the JIT config"


def test_a_daemon_that_is_up_at_once_costs_no_wait(task):
    with DockerDaemonStandIn(up_after=0) as daemon:
        time.sleep(0.2)
        began = time.monotonic()
        result = task.run(daemon.host)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - began < 5
    assert "answered after 0s" in result.stderr


@pytest.mark.parametrize(
    "behaviour",
    [
        pytest.param({"up_after": None}, id="never-listens"),
        pytest.param({"up_after": 0, "hang": True}, id="listens-but-hangs"),
        pytest.param({"up_after": 0, "error_status": 500, "error_seconds": 1.0}, id="errs-dies"),
    ],
)
def test_a_daemon_that_never_answers_fails_the_task_without_a_runner(task, behaviour):
    with DockerDaemonStandIn(**behaviour) as daemon:
        began = time.monotonic()
        result = task.run(daemon.host, RUNNER_DOCKER_WAIT_SECONDS="3")
        elapsed = time.monotonic() - began
        answered = [status for _, status in daemon.pings]
    assert result.returncode == EXIT_NO_DAEMON, result.stderr
    assert "did not answer within 3s" in result.stderr
    # Bounded: the wait plus one probe; the slack is wide because a loaded CI machine can take
    # seconds to start bash and curl (this checks that the wait ends, not how fast).
    assert 3 <= elapsed < 3 + 1 + 10, "bounded: the wait plus one probe, with slack"
    assert not task.runner_started()
    assert 200 not in answered
    # No runner ran: the config stays for the deregister task, which removes it.
    assert task.config.exists()


def test_a_stop_during_the_wait_ends_the_task_at_once_without_a_runner(task):
    with DockerDaemonStandIn(up_after=None) as daemon:
        process = subprocess.Popen(
            ["bash", str(DIND_RUNNER)],
            env=task.env(daemon.host, RUNNER_DOCKER_WAIT_SECONDS="30"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.5)
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 143, stderr
    assert time.monotonic() - began < 3
    assert "the runner was never started" in stderr
    assert not task.runner_started()


def test_the_externals_are_in_the_share_before_the_runner_starts(task):
    with DockerDaemonStandIn(up_after=0) as daemon:
        result = task.run(daemon.host)
    assert result.returncode == 0, result.stderr
    node = task.share / "node20" / "bin" / "node"
    assert node.read_text() == "#!/bin/sh\n"
    assert os.access(node, os.X_OK)
    assert (task.share / "node20" / "bin" / "npm").is_symlink()
    assert node.stat().st_mtime <= task.runner_started_at()


def test_a_share_it_cannot_write_stops_it_before_the_runner(task):
    task.share.rmdir()
    task.share.parent.joinpath("runner-externals").write_text("not a directory")
    with DockerDaemonStandIn(up_after=0) as daemon:
        result = task.run(daemon.host)
    assert result.returncode == EXIT_NO_SHARE, result.stderr
    assert "cannot copy" in result.stderr
    assert not task.runner_started()


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"DOCKER_HOST": "unix:///var/run/docker.sock"}, "DOCKER_HOST"),
        ({"DOCKER_HOST": "tcp://127.0.0.1"}, "DOCKER_HOST"),
        ({"RUNNER_DOCKER_WAIT_SECONDS": "soon"}, "RUNNER_DOCKER_WAIT_SECONDS"),
        ({"RUNNER_DOCKER_WAIT_SECONDS": "0"}, "RUNNER_DOCKER_WAIT_SECONDS"),
        ({"RUNNER_EXTERNALS_SHARE": ""}, "RUNNER_EXTERNALS_SHARE"),
    ],
)
def test_bad_settings_are_named_and_nothing_starts(task, settings, named):
    result = task.run("tcp://127.0.0.1:9", **settings)
    assert result.returncode == 2
    assert named in result.stderr
    assert not task.runner_started()
