"""The prewarm jobspec, parsed by the real HCL parser (pygohcl): a system job that keeps a pool's
images on every node its runners may use, holding no credential and reserving next to nothing."""

from __future__ import annotations

from typing import Any

import pygohcl
import pytest

from runner_job import (
    PREWARM_GROUP,
    PREWARM_JOBSPEC,
    PREWARM_TASKS,
    RUNNER_DIND_JOBSPEC,
    RUNNER_JOBSPEC,
)

AGREED_VARIABLES = {
    "job_name": "string",
    "namespace": "string",
    "datacenters": "list(string)",
    "node_pool": "string",
    "constraints": None,  # the runner jobspec's own type, checked below
    "driver": "string",
    "runner_image": "string",
    "helper_image": "string",
    "docker_image": "string",
    "image_pull_timeout": "string",
}
# Like the runner jobspecs: no runner version written here would stay current for long.
NO_DEFAULT = {"runner_image"}
# Nomad's smallest allowed task resources are 1 MHz and 10 MB; a sleeping process needs ~1 MB.
MAX_TASK_CPU_MHZ = 20
MAX_TASK_MEMORY_MB = 32


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return pygohcl.loads(PREWARM_JOBSPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runner_spec() -> dict[str, Any]:
    return pygohcl.loads(RUNNER_JOBSPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def job(spec: dict[str, Any]) -> dict[str, Any]:
    [body] = spec["job"].values()
    return body


@pytest.fixture(scope="module")
def group(job: dict[str, Any]) -> dict[str, Any]:
    assert list(job["group"]) == [PREWARM_GROUP]
    return job["group"][PREWARM_GROUP]


@pytest.fixture(scope="module")
def task(group: dict[str, Any]) -> dict[str, Any]:
    """The one task template: one task per image, named after the ``images`` local's key."""
    assert "task" not in group, "tasks come only from the images local"
    dynamic = group["dynamic"]["task"]
    assert dynamic["for_each"] == "local.images"
    assert dynamic["labels"] == ["task.key"]
    return dynamic["content"]


def test_is_a_system_job_in_the_configured_id_namespace_and_placement(job):
    """System, not sysbatch: its allocations keep running, and nodes that join later get one."""
    assert job["type"] == "system"
    assert (job["id"], job["name"], job["namespace"]) == (
        "var.job_name",
        "var.job_name",
        "var.namespace",
    )
    assert (job["datacenters"], job["node_pool"]) == ("var.datacenters", "var.node_pool")
    assert "parameterized" not in job and "periodic" not in job


def test_placement_constraints_are_the_pools(job, runner_spec):
    [runner_job] = runner_spec["job"].values()
    assert job["dynamic"]["constraint"] == runner_job["dynamic"]["constraint"]


def test_never_preempts_a_runner(job, runner_spec):
    """System jobs preempt allocations more than 10 below their priority (on by default)."""
    [runner_job] = runner_spec["job"].values()
    assert job["priority"] < runner_job.get("priority", 50) - 10


def test_each_image_is_pulled_and_kept_by_a_task_that_does_nothing(task):
    config = task["config"]
    assert task["driver"] == "var.driver"
    assert config["image"] == "task.value"
    assert config["image_pull_timeout"] == "var.image_pull_timeout"
    # The image's own entrypoint never runs (a dind image would start a Docker daemon).
    assert config["entrypoint"] == ["sleep"] and config["args"] == ["2147483647"]
    assert config["network_mode"] == "none"
    assert "command" not in config and "force_pull" not in config


def test_holds_no_credential_and_nothing_else_to_read(task, group):
    """No template (hence no Nomad Variable), no env, no identity, no volume, no Vault."""
    for block in ("template", "env", "identity", "vault", "volume_mount", "artifact"):
        assert block not in task, block
    assert "volume" not in group
    assert set(task["config"]) == {
        "image",
        "image_pull_timeout",
        "entrypoint",
        "args",
        "network_mode",
        "privileged",
        "pids_limit",
    }
    assert task["config"]["privileged"] is False and task["config"]["pids_limit"] <= 8


def test_reserves_next_to_nothing(task, group):
    resources = task["resources"]
    assert 1 <= resources["cpu"] <= MAX_TASK_CPU_MHZ
    assert 10 <= resources["memory"] <= MAX_TASK_MEMORY_MB
    assert group["ephemeral_disk"] == {"size": 10}  # Nomad's minimum; the default is 300 MB
    assert task["kill_timeout"] == "1s"


def test_a_failed_pull_is_retried_on_the_node_not_given_up(group):
    restart = group["restart"]
    assert restart["mode"] == "delay" and restart["attempts"] >= 1
    assert "reschedule" not in group  # system jobs are never rescheduled elsewhere


def test_one_task_per_image_of_the_pool_and_none_for_an_empty_one(spec):
    """runner, helper and docker (a dind pool's daemon), each from its variable; "" drops it."""
    images = " ".join(spec["locals"]["images"].split())
    for task in PREWARM_TASKS:
        assert f"{task} = var.{task}_image" in images, task
    assert images.endswith('name => image if image != "" }')


def test_variables_are_documented_typed_and_defaulted(spec, runner_spec):
    variables = spec["variable"]
    assert set(variables) == set(AGREED_VARIABLES)
    for name, declared in variables.items():
        assert declared.get("description"), name
        assert ("default" in declared) is (name not in NO_DEFAULT), name
        if AGREED_VARIABLES[name] is not None:
            assert str(declared["type"]).strip("${}") == AGREED_VARIABLES[name], name
    runner_variables = runner_spec["variable"]
    assert variables["constraints"]["type"] == runner_variables["constraints"]["type"]
    for name in ("namespace", "datacenters", "node_pool", "driver"):
        assert variables[name]["default"] == runner_variables[name]["default"], name


def test_image_variables_are_the_runner_jobspecs(spec, runner_spec):
    """By hand, the same var file's images serve both jobspecs; no daemon unless asked for."""
    runner_variables = runner_spec["variable"]
    dind_variables = pygohcl.loads(RUNNER_DIND_JOBSPEC.read_text(encoding="utf-8"))["variable"]
    variables = spec["variable"]
    assert "default" not in runner_variables["runner_image"]
    assert variables["helper_image"]["default"] == runner_variables["helper_image"]["default"]
    assert "docker_image" in dind_variables and variables["docker_image"]["default"] == ""
