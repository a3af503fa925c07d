"""The cloudflared jobspec, parsed by the real HCL parser (pygohcl), against the tunnel's needs."""

from __future__ import annotations

import re
from typing import Any

import pygohcl
import pytest

from runner_job import (
    CLOUDFLARED_GROUP,
    CLOUDFLARED_JOBSPEC,
    CLOUDFLARED_TASK,
    TUNNEL_TOKEN_ITEM,
    tunnel_token_variable_path,
)

AGREED_VARIABLES = {
    "job_name": "string",
    "namespace": "string",
    "datacenters": "list(string)",
    "node_pool": "string",
    "image": "string",
    "count": "number",
    "cpu": "number",
    "memory": "number",
    "metrics_port": "number",
}
# cloudflared learned `tunnel run --token-file` in 2025.4.0.
TOKEN_FILE_SINCE = (2025, 4, 0)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return pygohcl.loads(CLOUDFLARED_JOBSPEC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def job(spec: dict[str, Any]) -> dict[str, Any]:
    [body] = spec["job"].values()
    return body


@pytest.fixture(scope="module")
def group(job: dict[str, Any]) -> dict[str, Any]:
    assert list(job["group"]) == [CLOUDFLARED_GROUP]
    return job["group"][CLOUDFLARED_GROUP]


@pytest.fixture(scope="module")
def task(group: dict[str, Any]) -> dict[str, Any]:
    assert list(group["task"]) == [CLOUDFLARED_TASK]
    return group["task"][CLOUDFLARED_TASK]


def test_is_a_service_job_with_the_configured_id_and_namespace(job):
    assert job["type"] == "service"
    assert job["id"] == "var.job_name"
    assert job["namespace"] == "var.namespace"
    assert job["datacenters"] == "var.datacenters"
    assert job["node_pool"] == "var.node_pool"


def test_runs_a_configurable_number_of_connectors_rolled_one_at_a_time(group):
    assert group["count"] == "var.count"
    assert group["update"]["max_parallel"] == 1
    assert group["update"]["health_check"] == "checks"


def test_runs_the_tunnel_without_autoupdate_and_with_metrics_on_the_nodes_loopback(task):
    """The metrics server also serves /debug/ (pprof), /config and /diag/*: loopback only, which
    a container on a bridge network (a runner) cannot reach."""
    args = task["config"]["args"]
    assert task["config"]["image"] == "var.image"
    assert args[:2] == ["tunnel", "--no-autoupdate"]
    assert args[args.index("--metrics") + 1] == "127.0.0.1:NOMAD_PORT_metrics"
    assert args.index("run") > args.index("--metrics")
    assert "0.0.0.0" not in CLOUDFLARED_JOBSPEC.read_text(encoding="utf-8")


def test_shares_the_nodes_network_unprivileged(task):
    """Host networking: the ingress reaches the Nomad API on 127.0.0.1, and so does the check."""
    assert task["config"]["network_mode"] == "host"
    assert task["config"]["privileged"] is False


def test_reads_the_token_from_its_secrets_dir_not_from_arguments_or_environment(task):
    args = task["config"]["args"]
    assert "--token" not in args
    token_file = args[args.index("--token-file") + 1]
    template = task["template"]
    assert token_file == "NOMAD_SECRETS_DIR/" + template["destination"].removeprefix("secrets/")
    assert template["destination"].startswith("secrets/")
    assert template["env"] is False
    assert "env" not in task


def test_the_token_template_reads_only_this_tasks_variable(task):
    template = task["template"]
    path = tunnel_token_variable_path("var.job_name")
    assert f'nomadVar "{path}"' in template["data"]
    assert f".{TUNNEL_TOKEN_ITEM}" in template["data"]
    # The trailing newline of the heredoc is trimmed: the file holds the token alone.
    assert template["data"].rstrip("\n").endswith("-}}")
    assert template["change_mode"] == "noop"


def test_readiness_is_a_nomad_health_check_on_the_metrics_port(group):
    assert "metrics" in group["network"]["port"]
    service = group["service"]
    assert service["provider"] == "nomad"
    assert service["port"] == "metrics"
    assert service["check"]["type"] == "http"
    assert service["check"]["path"] == "/ready"


def test_the_check_goes_to_the_loopback_the_metrics_server_listens_on(group):
    """A Nomad-provider check runs in the Nomad client, in the node's network namespace, at the
    service's address; without a custom address that is the node's advertised IP, where
    nothing listens any more. Address mode stays auto (Nomad refuses a custom address with
    any other), and the check inherits the address."""
    service = group["service"]
    assert service["address"] == "127.0.0.1"
    assert service.get("address_mode", "auto") == "auto"
    assert "address_mode" not in service["check"]
    assert "mode" not in group["network"], "host networking: the loopback is the node's"


def test_resources_are_small_by_default(spec, task):
    assert task["resources"] == {"cpu": "var.cpu", "memory": "var.memory"}
    assert spec["variable"]["cpu"]["default"] <= 200
    assert spec["variable"]["memory"]["default"] <= 256


def test_declares_exactly_the_agreed_variables_each_documented(spec):
    variables = spec["variable"]
    assert {name: v["type"] for name, v in variables.items()} == AGREED_VARIABLES
    for name, variable in variables.items():
        assert variable.get("description", "").strip(), name
        assert "default" in variable, name
    assert variables["job_name"]["default"] == "cloudflared"
    assert variables["namespace"]["default"] == "github-runners"
    assert variables["count"]["default"] == 2


def test_the_image_is_pinned_to_a_version_that_knows_token_file(spec):
    image = spec["variable"]["image"]["default"]
    name, _, tag = image.rpartition(":")
    assert name == "cloudflare/cloudflared"
    match = re.fullmatch(r"(\d{4})\.(\d+)\.(\d+)", tag)
    assert match, f"{image} is not pinned to a release"
    assert tuple(int(part) for part in match.groups()) >= TOKEN_FILE_SINCE


def test_no_token_is_written_in_the_jobspec():
    text = CLOUDFLARED_JOBSPEC.read_text(encoding="utf-8")
    assert "eyJ" not in text  # tunnel tokens are base64 JSON
    assert "TUNNEL_TOKEN" not in text
