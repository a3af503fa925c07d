"""The Docker-in-Docker jobspec, parsed by pygohcl: runner.nomad.hcl plus the allocation's daemon.

The two files are kept separate so that an operator reads one whole job per mode and a pool
without Docker gets exactly the file it had; these tests hold them together (everything equal
but the listed differences) and assert what makes Docker in jobs work: the sidecar and its
image, privileged mode there only, the workspace at the same path in the runner and the daemon,
the runner's DOCKER_HOST, the daemon's storage inside the allocation, and the task order. The
daemon's entry script runs for real in a mount namespace (root or passwordless sudo), handing
its command line to a stand-in of the image's entrypoint (tests/fakes/dockerd-entrypoint.sh).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pygohcl
import pytest

from runner_job import (
    DEREGISTER_TASK,
    DOCKER_TASK,
    REGISTER_TASK,
    RUNNER_DIND_JOBSPEC,
    RUNNER_GROUP,
    RUNNER_JOBSPEC,
    RUNNER_TASK,
    SCRIPTS_DIR,
)

DAEMON_SCRIPT = SCRIPTS_DIR / "dind-daemon.sh"
FAKES = Path(__file__).resolve().parent / "fakes"
WORK_FOLDER = "/home/runner/_work"  # Root (/home/runner) + the JIT config's work_folder "_work"
DAEMON_ADDRESS = "tcp://127.0.0.1:2375"
DIND_VARIABLES = {
    "docker_image": "string",
    "docker_cpu": "number",
    "docker_memory": "number",
    "registry_mirror": "string",
    "docker_wait_seconds": "number",
}


def parse(path: Any) -> dict[str, Any]:
    result: dict[str, Any] = pygohcl.loads(path.read_text(encoding="utf-8"))
    return result


@pytest.fixture(scope="module")
def plain() -> dict[str, Any]:
    return parse(RUNNER_JOBSPEC)


@pytest.fixture(scope="module")
def dind() -> dict[str, Any]:
    return parse(RUNNER_DIND_JOBSPEC)


def as_list(value: Any) -> list[Any]:
    """pygohcl gives one block as a dict and repeated blocks as a list."""
    return value if isinstance(value, list) else [value]


def job_of(spec: dict[str, Any]) -> dict[str, Any]:
    [job] = spec["job"].values()
    return dict(job)


def tasks_of(spec: dict[str, Any]) -> dict[str, Any]:
    return dict(job_of(spec)["group"][RUNNER_GROUP]["task"])


def volume_targets(task: dict[str, Any]) -> dict[str, str]:
    """container path -> source of each docker `volumes` entry."""
    return {entry.split(":")[1]: entry.split(":")[0] for entry in task["config"].get("volumes", [])}


class TestSameJobOtherwise:
    def test_variables_are_the_plain_ones_plus_the_daemons(self, plain, dind):
        assert set(dind["variable"]) - set(plain["variable"]) == set(DIND_VARIABLES)
        for name, kind in DIND_VARIABLES.items():
            assert dind["variable"][name]["type"] == kind
            assert dind["variable"][name]["description"].strip()
        for name, variable in plain["variable"].items():
            other = dind["variable"][name]
            assert other["type"] == variable["type"], name
            assert other.get("default") == variable.get("default"), name
            if name not in ("driver", "scripts_dir"):
                assert other == variable, name

    def test_the_job_and_group_settings_are_the_same(self, plain, dind):
        ours, theirs = job_of(dind), job_of(plain)
        for key in set(ours) | set(theirs):
            if key not in ("group", "constraint"):
                assert ours.get(key) == theirs.get(key), key
        group, other = ours["group"][RUNNER_GROUP], theirs["group"][RUNNER_GROUP]
        for key in set(group) | set(other):
            if key != "task":
                assert group.get(key) == other.get(key), key
        assert ours["dynamic"] == theirs["dynamic"]

    @pytest.mark.parametrize("name", [REGISTER_TASK, DEREGISTER_TASK])
    def test_the_helper_tasks_are_the_same(self, plain, dind, name):
        assert tasks_of(dind)[name] == tasks_of(plain)[name]

    def test_the_runner_task_differs_only_by_the_daemon_it_uses(self, plain, dind):
        ours = copy.deepcopy(tasks_of(dind)[RUNNER_TASK])
        theirs = copy.deepcopy(tasks_of(plain)[RUNNER_TASK])
        assert ours["config"].pop("args") == ["NOMAD_TASK_DIR/dind-runner.sh"]
        theirs["config"].pop("args")
        assert ours["config"].pop("volumes") == [f"../alloc/data:{WORK_FOLDER}"]
        assert ours["config"].pop("cgroupns") == "private"
        added = set(ours["env"]) - set(theirs["env"])
        assert added == {
            "DOCKER_HOST",
            "RUNNER_DOCKER_WAIT_SECONDS",
            "RUNNER_EXTERNALS_SHARE",
            "RUNNER_SUPERVISOR",
        }
        for key in added:
            ours["env"].pop(key)
        templates = ours.pop("template")
        assert templates[0] == theirs.pop("template")
        assert templates[1]["destination"] == "local/dind-runner.sh"
        assert ours == theirs


class TestDaemon:
    def test_task_order(self, dind):
        """register and the daemon before the runner; the daemon a sidecar, so Nomad kills it
        after the runner (sidecars last) and before deregister (poststop) runs."""
        tasks = tasks_of(dind)
        assert set(tasks) == {REGISTER_TASK, DOCKER_TASK, RUNNER_TASK, DEREGISTER_TASK}
        assert tasks[REGISTER_TASK]["lifecycle"] == {"hook": "prestart", "sidecar": False}
        assert tasks[DOCKER_TASK]["lifecycle"] == {"hook": "prestart", "sidecar": True}
        assert "lifecycle" not in tasks[RUNNER_TASK]
        assert tasks[DEREGISTER_TASK]["lifecycle"] == {"hook": "poststop", "sidecar": False}

    def test_the_daemon_runs_the_pinned_dind_image(self, dind):
        daemon = tasks_of(dind)[DOCKER_TASK]
        assert daemon["driver"] == "var.driver"
        assert daemon["config"]["image"] == "var.docker_image"
        assert daemon["config"]["entrypoint"] == ["/bin/sh", "NOMAD_TASK_DIR/dind-daemon.sh"]
        image = dind["variable"]["docker_image"]["default"]
        assert re.fullmatch(r"docker:\d+\.\d+\.\d+-dind", image), image

    def test_privileged_only_in_the_daemon(self, dind):
        privileged = {
            name for name, task in tasks_of(dind).items() if task["config"]["privileged"] is True
        }
        assert privileged == {DOCKER_TASK}
        for name, task in tasks_of(dind).items():
            assert task["config"]["privileged"] is (name == DOCKER_TASK), name

    def test_only_nodes_that_allow_privileged_containers_on_cgroup_v2(self, dind):
        """The runner refuses container jobs when /proc/1/cgroup shows ':/docker/': cgroup v2
        nodes and a private cgroup namespace keep it from seeing that."""
        assert as_list(job_of(dind)["constraint"]) == [
            {"attribute": "${attr.driver.docker.privileged.enabled}", "value": "true"},
            {"attribute": "${attr.os.cgroups.version}", "value": "2"},
        ]
        assert tasks_of(dind)[RUNNER_TASK]["config"]["cgroupns"] == "private"

    def test_docker_driver_only(self, dind):
        assert dind["variable"]["driver"]["validation"]["condition"] == 'var.driver == "docker"'

    def test_the_workspace_is_at_the_same_path_in_the_runner_and_the_daemon(self, dind):
        """container: jobs and actions get -v /home/runner/_work:/__w, resolved by the daemon."""
        tasks = tasks_of(dind)
        runner, daemon = volume_targets(tasks[RUNNER_TASK]), volume_targets(tasks[DOCKER_TASK])
        assert runner[WORK_FOLDER] == daemon[WORK_FOLDER] == "../alloc/data"

    def test_the_daemons_storage_is_inside_the_allocation(self, dind):
        """Its own task dir, bound over the image's VOLUME so no anonymous volume is left."""
        source = volume_targets(tasks_of(dind)[DOCKER_TASK])["/var/lib/docker"]
        assert source == "local/docker"
        for task in tasks_of(dind).values():
            for source in volume_targets(task).values():
                assert not source.startswith("/"), "a host path outside the allocation"

    def test_the_runner_reaches_the_daemon_on_the_allocations_loopback_only(self, dind):
        tasks = tasks_of(dind)
        assert tasks[RUNNER_TASK]["env"]["DOCKER_HOST"] == DAEMON_ADDRESS
        daemon_script = (SCRIPTS_DIR / "dind-daemon.sh").read_text(encoding="utf-8")
        hosts = re.findall(r"--host=(\S+)", daemon_script)
        assert hosts == ["unix:///var/run/docker.sock", DAEMON_ADDRESS]
        assert "--tls=false" in daemon_script
        assert "0.0.0.0" not in daemon_script
        assert job_of(dind)["group"][RUNNER_GROUP]["network"] == {"mode": "bridge"}
        assert "docker.sock" not in str(tasks[RUNNER_TASK]["config"])

    def test_the_externals_are_shared_at_the_runners_path(self, dind):
        tasks = tasks_of(dind)
        share = tasks[RUNNER_TASK]["env"]["RUNNER_EXTERNALS_SHARE"]
        assert share == tasks[DOCKER_TASK]["env"]["DOCKER_EXTERNALS_SHARE"]
        assert share.startswith("NOMAD_ALLOC_DIR/")
        daemon_script = (SCRIPTS_DIR / "dind-daemon.sh").read_text(encoding="utf-8")
        assert "/home/runner/externals" in daemon_script  # the default DOCKER_EXTERNALS_PATH
        assert "DOCKER_EXTERNALS_PATH" not in tasks[DOCKER_TASK]["env"]

    def test_the_sandbox_limits_apply_to_the_daemon(self, dind):
        daemon = tasks_of(dind)[DOCKER_TASK]
        assert daemon["config"]["pids_limit"] == "var.pids_limit"
        assert daemon["resources"] == {"cpu": "var.docker_cpu", "memory": "var.docker_memory"}
        assert job_of(dind)["group"][RUNNER_GROUP]["ephemeral_disk"] == {"size": "var.disk"}

    def test_the_daemon_stops_within_the_kill_timeout(self, dind):
        daemon = tasks_of(dind)[DOCKER_TASK]
        assert daemon["kill_signal"] == "SIGTERM"
        assert daemon["kill_timeout"] == "30s"
        script = (SCRIPTS_DIR / "dind-daemon.sh").read_text(encoding="utf-8")
        assert int(re.search(r"--shutdown-timeout=(\d+)", script).group(1)) < 30

    def test_the_mirror_reaches_dockerd(self, dind):
        daemon = tasks_of(dind)[DOCKER_TASK]
        assert daemon["env"]["REGISTRY_MIRROR"] == "var.registry_mirror"
        script = (SCRIPTS_DIR / "dind-daemon.sh").read_text(encoding="utf-8")
        assert '"--registry-mirror=$REGISTRY_MIRROR"' in script

    def test_every_script_it_reads_is_shipped(self, dind):
        shipped = set()
        for task in tasks_of(dind).values():
            templates = task.get("template", [])
            for template in templates if isinstance(templates, list) else [templates]:
                match = re.fullmatch(r'file\("\$\{var\.scripts_dir\}/([^"]+)"\)', template["data"])
                if match:
                    assert (SCRIPTS_DIR / match.group(1)).is_file()
                    shipped.add(match.group(1))
        assert {"dind-daemon.sh", "dind-runner.sh", "supervise.sh"} <= shipped


class TestDaemonScript:
    """dind-daemon.sh run for real (as root, in a mount namespace of its own) with a stand-in
    for the image's dockerd-entrypoint.sh that prints what it was handed."""

    @staticmethod
    def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
        command = [shutil.which("unshare") or "unshare", "-m", "sh", str(DAEMON_SCRIPT)]
        if os.geteuid() != 0:
            sudo = shutil.which("sudo")
            assert sudo, "a mount namespace needs root: run as root or with passwordless sudo"
            command = [sudo, "-n", "env", *(f"{k}={v}" for k, v in env.items()), *command]
        return subprocess.run(
            command,
            env={"PATH": f"{FAKES}:{os.environ.get('PATH', '/usr/bin:/bin')}"} | env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def test_shares_the_externals_and_starts_dockerd_on_the_loopback(self, tmp_path):
        share, target = tmp_path / "alloc" / "tmp" / "runner-externals", tmp_path / "externals"
        share.mkdir(parents=True)
        (share / "node20").mkdir()
        result = self.run(
            tmp_path,
            DOCKER_EXTERNALS_SHARE=str(share),
            DOCKER_EXTERNALS_PATH=str(target),
            RUNNER_UID="1001",
            REGISTRY_MIRROR="https://mirror.example.com",
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        args = [line.removeprefix("arg: ") for line in lines if line.startswith("arg: ")]
        assert args == [
            "dockerd",
            "--host=unix:///var/run/docker.sock",
            f"--host={DAEMON_ADDRESS}",
            "--tls=false",
            "--shutdown-timeout=20",
            "--registry-mirror=https://mirror.example.com",
        ]
        # The share is bound at the externals path the runner mounts into container: jobs.
        assert "externals: node20" in lines
        assert (share.stat().st_uid, share.stat().st_gid) == (1001, 1001)

    def test_no_mirror_no_flag(self, tmp_path):
        share = tmp_path / "share"
        result = self.run(
            tmp_path,
            DOCKER_EXTERNALS_SHARE=str(share),
            DOCKER_EXTERNALS_PATH=str(tmp_path / "externals"),
            REGISTRY_MIRROR="",
        )
        assert result.returncode == 0, result.stderr
        assert "--registry-mirror" not in result.stdout
        assert share.is_dir()

    def test_without_the_share_setting_it_refuses_to_start(self, tmp_path):
        result = self.run(tmp_path, DOCKER_EXTERNALS_PATH=str(tmp_path / "externals"))
        assert result.returncode != 0
        assert "DOCKER_EXTERNALS_SHARE" in result.stderr
        assert "arg: dockerd" not in result.stdout
