"""The runner jobspec, parsed by the real HCL parser (pygohcl), against what the toolkit relies on.

pygohcl returns expressions as their source text with ``${...}`` wrappers removed, so
``"nomad/jobs/${var.job_name}/runner/register"`` reads ``nomad/jobs/var.job_name/runner/register``.
"""

from __future__ import annotations

import re
from typing import Any

import pygohcl
import pytest

from handler.contract import DISPATCH_META_KEYS, META_REPOSITORY
from runner_job import (
    DEREGISTER_TASK,
    GITHUB_APP_KEY_ITEM,
    GITHUB_TOKEN_ITEM,
    REGISTER_TASK,
    RUNNER_GROUP,
    RUNNER_JOBSPEC,
    RUNNER_TASK,
    SCRIPTS_DIR,
    credential_variable_paths,
)

# The HCL2 variables the Nomad stack passes (names and types agreed with the stacks).
AGREED_VARIABLES = {
    "job_name": "string",
    "namespace": "string",
    "datacenters": "list(string)",
    "node_pool": "string",
    "pool": "string",
    "runner_labels": "list(string)",
    "runner_group_id": "number",
    "runner_image": "string",
    "helper_image": "string",
    "driver": "string",
    "cpu": "number",
    "memory": "number",
    "pids_limit": "number",
    "disk": "number",
    "runner_sudo": "string",
    "constraints": "list(object({attribute=string operator=string value=string}))",
    "idle_timeout_seconds": "number",
    "max_job_seconds": "number",
    "github_api_url": "string",
    "github_auth": "string",
    "github_app_id": "string",
    "github_app_installation_id": "string",
    "runner_scope": "string",
    "github_owner": "string",
    "scripts_dir": "string",
}
NOMAD_MAX_KILL_TIMEOUT_SECONDS = 30  # a client's default max_kill_timeout


def as_list(value: Any) -> list[Any]:
    """pygohcl gives one block as a dict and repeated blocks as a list."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return pygohcl.loads(RUNNER_JOBSPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def job(spec: dict[str, Any]) -> dict[str, Any]:
    jobs = spec["job"]
    assert len(jobs) == 1, "one job per jobspec"
    return next(iter(jobs.values()))


@pytest.fixture(scope="module")
def tasks(job: dict[str, Any]) -> dict[str, Any]:
    assert list(job["group"]) == [RUNNER_GROUP]
    return job["group"][RUNNER_GROUP]["task"]


def seconds(duration: str) -> int:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, f"expected a duration in seconds, got {duration!r}"
    return int(match.group(1))


class TestJob:
    def test_is_a_batch_job_in_the_configured_namespace_with_the_configured_id(self, job):
        assert job["type"] == "batch"
        assert job["id"] == "var.job_name"
        assert job["namespace"] == "var.namespace"
        assert job["datacenters"] == "var.datacenters"
        assert job["node_pool"] == "var.node_pool"

    def test_is_parameterized_with_exactly_the_handlers_meta_keys(self, job):
        parameterized = job["parameterized"]
        assert sorted(parameterized["meta_required"]) == sorted(DISPATCH_META_KEYS)
        assert len(parameterized["meta_required"]) == len(DISPATCH_META_KEYS)
        assert "meta_optional" not in parameterized

    def test_refuses_a_payload(self, job):
        """A payload is readable by anyone with read-job: never a channel for anything."""
        assert job["parameterized"]["payload"] == "forbidden"

    def test_constraints_come_from_the_variable(self, job):
        dynamic = job["dynamic"]["constraint"]
        assert dynamic["for_each"] == "var.constraints"
        assert set(dynamic["content"]) == {"attribute", "operator", "value"}

    def test_retries_are_off(self, job):
        group = job["group"][RUNNER_GROUP]
        assert group["count"] == 1
        assert group["restart"] == {"attempts": 0, "mode": "fail"}
        assert group["reschedule"] == {"attempts": 0, "unlimited": False}


class TestTasks:
    def test_has_the_three_agreed_tasks(self, tasks):
        assert set(tasks) == {REGISTER_TASK, RUNNER_TASK, DEREGISTER_TASK}

    def test_register_is_prestart_and_not_a_sidecar(self, tasks):
        assert tasks[REGISTER_TASK]["lifecycle"] == {"hook": "prestart", "sidecar": False}

    def test_deregister_is_poststop(self, tasks):
        assert tasks[DEREGISTER_TASK]["lifecycle"] == {"hook": "poststop", "sidecar": False}

    def test_runner_is_the_main_task(self, tasks):
        assert "lifecycle" not in tasks[RUNNER_TASK]

    def test_every_task_uses_the_configured_driver(self, tasks):
        assert {task["driver"] for task in tasks.values()} == {"var.driver"}

    def test_runner_runs_the_supervisor_in_the_runner_image(self, tasks):
        runner = tasks[RUNNER_TASK]
        assert runner["config"]["image"] == "var.runner_image"
        assert runner["config"]["command"] == "/bin/bash"
        assert runner["config"]["args"] == ["NOMAD_TASK_DIR/supervise.sh"]
        assert runner["resources"] == {"cpu": "var.cpu", "memory": "var.memory"}
        env = runner["env"]
        assert env["RUNNER_IDLE_TIMEOUT_SECONDS"] == "var.idle_timeout_seconds"
        assert env["RUNNER_MAX_JOB_SECONDS"] == "var.max_job_seconds"

    @pytest.mark.parametrize("name", [REGISTER_TASK, DEREGISTER_TASK])
    def test_helper_tasks_run_their_script_in_the_helper_image(self, tasks, name):
        task = tasks[name]
        assert task["config"]["image"] == "var.helper_image"
        assert task["config"]["command"] == "python3"
        assert task["config"]["args"] == [f"NOMAD_TASK_DIR/{name}.py"]
        assert task["env"]["GITHUB_REPOSITORY"] == f"NOMAD_META_{META_REPOSITORY}"
        assert task["env"]["RUNNER_POOL"] == "var.pool"

    def test_register_passes_the_pool_settings(self, tasks):
        env = tasks[REGISTER_TASK]["env"]
        assert env["RUNNER_LABELS"] == "jsonencode(var.runner_labels)"
        assert env["RUNNER_GROUP_ID"] == "var.runner_group_id"
        assert env["GITHUB_API_URL"] == "var.github_api_url"

    def test_all_tasks_share_one_handoff_directory_in_the_allocation_dir(self, tasks):
        handoff = "NOMAD_ALLOC_DIR/runner-handoff"
        assert tasks[REGISTER_TASK]["env"]["RUNNER_HANDOFF_DIR"] == handoff
        assert tasks[DEREGISTER_TASK]["env"]["RUNNER_HANDOFF_DIR"] == handoff
        assert tasks[RUNNER_TASK]["env"]["RUNNER_JITCONFIG_FILE"] == f"{handoff}/jitconfig"

    def test_kill_timeout_fits_a_default_client_and_exceeds_the_supervisor_grace(self, tasks):
        runner = tasks[RUNNER_TASK]
        assert runner["kill_signal"] == "SIGTERM"
        timeout = seconds(runner["kill_timeout"])
        assert timeout <= NOMAD_MAX_KILL_TIMEOUT_SECONDS
        assert int(runner["env"]["RUNNER_STOP_GRACE_SECONDS"]) < timeout

    def test_a_refused_runner_version_exits_non_zero(self, tasks):
        """run.sh exits 0 on GitHub's version refusal unless this is 1 (then 7): supervise.sh."""
        env = tasks[RUNNER_TASK]["env"]
        assert env["ACTIONS_RUNNER_RETURN_VERSION_DEPRECATED_EXIT_CODE"] == "1"


class TestCredential:
    @pytest.mark.parametrize(
        ("name", "path"),
        list(
            zip(
                (REGISTER_TASK, DEREGISTER_TASK),
                credential_variable_paths("var.job_name"),
                strict=True,
            )
        ),
    )
    def test_helper_tasks_read_their_own_variable_into_secrets(self, tasks, name, path):
        templates = [t for t in as_list(tasks[name]["template"]) if "nomadVar" in t["data"]]
        assert len(templates) == 1
        template = templates[0]
        assert f'nomadVar "{path}"' in template["data"]
        # One item or the other, by var.github_auth, into the file the scripts read for it.
        assert (
            f'.%{{if var.github_auth == "app"}}{GITHUB_APP_KEY_ITEM}%{{else}}{GITHUB_TOKEN_ITEM}'
            "%{endif} }}" in template["data"]
        )
        assert template["destination"] == (
            'var.github_auth == "app" ? "secrets/github_app_key" : "secrets/github_token"'
        )
        assert template["change_mode"] == "noop"
        assert template["env"] is False
        env = tasks[name]["env"]
        assert env["GITHUB_TOKEN_FILE"] == "NOMAD_SECRETS_DIR/github_token"
        assert env["GITHUB_APP_KEY_FILE"] == "NOMAD_SECRETS_DIR/github_app_key"
        assert env["GITHUB_AUTH"] == "var.github_auth"
        assert env["RUNNER_SCOPE"] == "var.runner_scope"
        assert env["GITHUB_OWNER"] == "var.github_owner"
        assert env["CREDENTIAL_VARIABLE"] == path

    def test_runner_task_has_no_template_reading_a_variable(self, tasks):
        for template in as_list(tasks[RUNNER_TASK].get("template")):
            assert "nomadVar" not in template["data"]
            assert not template["destination"].startswith("secrets/")

    def test_runner_task_environment_mentions_no_credential(self, tasks):
        for key, value in tasks[RUNNER_TASK]["env"].items():
            text = f"{key}={value}".lower()
            assert "token" not in text
            assert "secret" not in text
            assert "key" not in text and "github_app" not in text
            assert "github_api_url" not in text

    def test_no_task_exposes_its_workload_identity_or_asks_for_vault(self, tasks):
        """Without an identity block the token for Nomad's task API stays out of every task."""
        for name, task in tasks.items():
            assert "identity" not in task, name
            assert "vault" not in task, name

    def test_no_credential_is_written_in_the_jobspec(self):
        text = RUNNER_JOBSPEC.read_text(encoding="utf-8")
        assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_", text)


class TestVariables:
    def test_declares_exactly_the_agreed_variables_with_their_types(self, spec):
        types = {
            name: re.sub(r"\s+", "", variable["type"])
            for name, variable in spec["variable"].items()
        }
        assert types == {name: re.sub(r"\s+", "", t) for name, t in AGREED_VARIABLES.items()}

    def test_every_variable_has_a_description_and_a_default(self, spec):
        """All but runner_image: a version written there would be refused by GitHub in weeks."""
        for name, variable in spec["variable"].items():
            assert variable.get("description", "").strip(), name
            assert ("default" in variable) is (name != "runner_image"), name

    def test_defaults_match_the_shared_decisions(self, spec):
        defaults = {name: v["default"] for name, v in spec["variable"].items() if "default" in v}
        assert defaults["namespace"] == "github-runners"
        assert defaults["datacenters"] == ["*"]
        assert defaults["node_pool"] == "default"
        assert defaults["runner_group_id"] == 1
        assert defaults["driver"] == "docker"
        assert defaults["constraints"] == []
        assert defaults["idle_timeout_seconds"] == 600
        assert defaults["max_job_seconds"] == 21600
        assert defaults["github_api_url"] == "https://api.github.com"
        assert defaults["scripts_dir"] == "scripts"
        assert "self-hosted" in defaults["runner_labels"]

    def test_helper_image_default_is_pinned_to_a_version(self, spec):
        image = spec["variable"]["helper_image"]["default"]
        name, _, tag = image.rpartition(":")
        assert name == "python"
        assert re.match(r"^\d+\.\d+\.\d+", tag), f"{image} is not pinned to a version"


class TestScripts:
    def test_every_script_template_points_at_a_shipped_file(self, tasks):
        shipped = set()
        for task in tasks.values():
            for template in as_list(task.get("template")):
                match = re.fullmatch(r'file\("\$\{var\.scripts_dir\}/([^"]+)"\)', template["data"])
                if match:
                    assert (SCRIPTS_DIR / match.group(1)).is_file()
                    assert template["destination"] == f"local/{match.group(1)}"
                    shipped.add(match.group(1))
        assert shipped == {"github_api.py", "register.py", "deregister.py", "supervise.sh"}

    def test_scripts_contain_no_go_template_action(self):
        """Nomad renders template data as a Go template: '{{' would be executed or break it."""
        for path in SCRIPTS_DIR.iterdir():
            if path.is_file():
                assert "{{" not in path.read_text(encoding="utf-8"), path.name


class TestSandbox:
    """The walls around workflow code (the runner task) and its helpers."""

    def test_the_allocation_has_a_network_namespace_of_its_own(self, job):
        """Nomad's bridge: the tasks share it, and no task sits on the node's own network."""
        group = job["group"][RUNNER_GROUP]
        assert group["network"] == {"mode": "bridge"}
        for name, task in group["task"].items():
            assert "network_mode" not in task["config"], name

    def test_the_allocation_reserves_the_pools_disk(self, job):
        assert job["group"][RUNNER_GROUP]["ephemeral_disk"] == {"size": "var.disk"}

    def test_no_task_is_privileged(self, tasks):
        for name, task in tasks.items():
            assert task["config"]["privileged"] is False, name

    def test_every_task_has_a_process_limit(self, tasks):
        assert tasks[RUNNER_TASK]["config"]["pids_limit"] == "var.pids_limit"
        for name in (REGISTER_TASK, DEREGISTER_TASK):
            assert 0 < tasks[name]["config"]["pids_limit"] <= 1024, name

    def test_the_helpers_never_gain_privileges(self, tasks):
        for name in (REGISTER_TASK, DEREGISTER_TASK):
            assert tasks[name]["config"]["security_opt"] == ["no-new-privileges"], name

    def test_without_sudo_the_runner_drops_its_groups_and_cannot_gain_privileges(self, tasks):
        """'runner:runner' names the group, so Docker adds no supplementary group (the official
        image grants sudo to group 'sudo'); no-new-privileges stops sudo on either driver."""
        runner = tasks[RUNNER_TASK]
        assert runner["user"] == 'var.runner_sudo == "none" ? "runner:runner" : ""'
        assert runner["config"]["security_opt"] == (
            'var.runner_sudo == "none" ? ["no-new-privileges"] : []'
        )

    def test_the_sudo_variable_takes_two_values_only(self, spec):
        variable = spec["variable"]["runner_sudo"]
        assert variable["default"] == "image"
        assert variable["validation"]["condition"] == 'contains(["image", "none"], var.runner_sudo)'

    def test_only_options_both_drivers_take(self, tasks):
        """docker and podman accept these keys (their task config schemas); an unknown key fails
        the task, so the jobspec uses nothing else."""
        both = {"image", "command", "args", "privileged", "pids_limit", "security_opt"}
        for name, task in tasks.items():
            assert set(task["config"]) <= both, name

    def test_no_host_socket_or_host_path_is_mounted(self):
        text = RUNNER_JOBSPEC.read_text(encoding="utf-8")
        assert "docker.sock" not in text
        for key in ("volumes", "mount", "devices", "cap_add", "network_mode"):
            assert not re.search(rf"^\s*{key}\s*[={{]", text, re.MULTILINE), key

    def test_sandbox_defaults(self, spec):
        defaults = {name: v["default"] for name, v in spec["variable"].items() if "default" in v}
        assert defaults["pids_limit"] == 4096
        assert defaults["disk"] == 10240
