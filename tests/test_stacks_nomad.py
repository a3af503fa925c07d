"""stacks/nomad.py: namespace, dispatch-only token, credentials and jobs from runner_job/."""

from __future__ import annotations

import re
from typing import Any

import pygohcl
import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from runner_job import (
    CLOUDFLARED_JOBSPEC,
    DOCKER_TASK,
    PREWARM_JOBSPEC,
    RUNNER_DIND_JOBSPEC,
    RUNNER_JOBSPEC,
    SCRIPTS_DIR,
    credential_variable_paths,
    tunnel_token_variable_path,
)
from stacks.components.cloudflared_job import CLOUDFLARED_JOB
from stacks.terraform_text import unescape
from tests.stack_synth import (
    VARIANTS,
    jobs_by_name,
    masked,
    newest_runner_image,
    only,
    resources,
    synthesized,
)


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("variant", VARIANTS)
def test_snapshot(variant: str, snapshot_json: SnapshotAssertion) -> None:
    assert masked(synthesized(variant).stacks["nomad"]) == snapshot_json


def nomad(variant: str = "example") -> dict[str, Any]:
    return synthesized(variant).stacks["nomad"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_policy_grants_only_dispatch_in_the_runner_namespace(variant: str) -> None:
    config = synthesized(variant).config
    stack = nomad(variant)
    policy = only(stack, "nomad_acl_policy")
    rules = pygohcl.loads(policy["rules_hcl"])
    assert rules == {
        "namespace": {config.nomad.namespace: {"capabilities": ["dispatch-job", "read-job"]}}
    }
    token = only(stack, "nomad_acl_token")
    (policy_name,) = resources(stack, "nomad_acl_policy")
    assert token["type"] == "client"
    assert token["policies"] == [f"${{nomad_acl_policy.{policy_name}.name}}"]
    assert only(stack, "nomad_namespace")["name"] == config.nomad.namespace


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_runner_job_per_pool_plus_cloudflared(variant: str) -> None:
    config = synthesized(variant).config
    jobs = jobs_by_name(nomad(variant))
    prewarms = [pool.prewarm_job for pool in config.pools if pool.prewarm]
    expected = [pool.nomad_job for pool in config.pools] + [CLOUDFLARED_JOB] + prewarms
    assert sorted(jobs) == sorted(expected)
    for name, job in jobs.items():
        assert job["purge_on_destroy"] is True
        # Filesystem access only where the jobspec reads the task scripts with file().
        reads_files = "file(" in unescape(job["jobspec"])
        assert job["hcl2"]["allow_fs"] is reads_files, name
        assert reads_files is (name != CLOUDFLARED_JOB and name not in prewarms)


def jobspec_of(name: str) -> Any:
    if name == CLOUDFLARED_JOB:
        return CLOUDFLARED_JOBSPEC
    return PREWARM_JOBSPEC if name.startswith("github-prewarm-") else RUNNER_JOBSPEC


def declared_variables(path: Any) -> dict[str, dict[str, Any]]:
    variables: dict[str, dict[str, Any]] = pygohcl.loads(path.read_text())["variable"]
    return variables


@pytest.mark.parametrize(
    ("jobspec", "variant", "job"),
    [
        (RUNNER_JOBSPEC, "two-pools", None),
        (RUNNER_DIND_JOBSPEC, "docker-in-docker", "github-runner-docker"),
        (CLOUDFLARED_JOBSPEC, "two-pools", CLOUDFLARED_JOB),
        (PREWARM_JOBSPEC, "two-pools", "github-prewarm-gpu"),
    ],
)
def test_job_variables_are_declared_by_the_jobspec(
    jobspec: Any, variant: str, job: str | None
) -> None:
    """Nomad rejects an undeclared -var; a variable without default must be given."""
    synth = synthesized(variant)
    name = job or synth.config.pools[0].nomad_job
    given = set(jobs_by_name(synth.stacks["nomad"])[name]["hcl2"]["vars"])
    declared = declared_variables(jobspec)
    assert given <= set(declared), sorted(given - set(declared))
    required = {var for var, spec in declared.items() if "default" not in spec}
    assert required <= given, sorted(required - given)


@pytest.mark.parametrize("variant", VARIANTS)
def test_jobspec_text_reaches_nomad_unchanged(variant: str) -> None:
    """Escaped for Terraform, which then yields exactly the file, ${NOMAD_...} included."""
    config = synthesized(variant).config
    dind_jobs = {pool.nomad_job for pool in config.pools if pool.docker == "dind"}
    for name, job in jobs_by_name(nomad(variant)).items():
        path = jobspec_of(name)
        if name in dind_jobs:
            path = RUNNER_DIND_JOBSPEC
        assert unescape(job["jobspec"]) == path.read_text()
        text = job["jobspec"]
        assert text.count("${") == text.count("$${"), "an unescaped ${ reaches Terraform"
        assert text.count("%{") == text.count("%%{"), "an unescaped %{ reaches Terraform"


def test_runner_job_variable_values_parse_as_nomad_reads_them() -> None:
    """string/number values are literal; list and object values parse as HCL to the config."""
    synth = synthesized("two-pools")
    gpu = synth.config.pool("gpu")
    variables = jobs_by_name(synth.stacks["nomad"])[gpu.nomad_job]["hcl2"]["vars"]
    declared = declared_variables(RUNNER_JOBSPEC)

    def value(name: str) -> Any:
        raw = unescape(variables[name])
        kind = str(declared[name].get("type", "string")).strip("${}")
        if kind in ("string", "number"):
            return raw
        return pygohcl.loads(f"v = {raw}")["v"]

    assert value("job_name") == "github-runner-gpu"
    assert value("pool") == "gpu"
    assert value("runner_labels") == list(gpu.labels)
    assert value("datacenters") == ["eu-west-1a", "eu-west-1b"]
    assert value("runner_image") == gpu.image
    assert value("cpu") == "8000"
    assert value("max_job_seconds") == "43200"
    assert value("runner_group_id") == "4"
    assert value("driver") == "podman"
    assert value("constraints") == [
        {"attribute": "${meta.gpu}", "operator": "=", "value": "true"},
        {"attribute": "${node.unique.id}", "operator": "distinct_hosts", "value": ""},
    ]
    small = jobs_by_name(synth.stacks["nomad"])["github-runner-small"]["hcl2"]["vars"]
    # No pin: the newest release's image, which Terraform resolves at plan time.
    assert small["runner_image"] == newest_runner_image(synth.stacks["nomad"])
    assert unescape(small["driver"]) == "docker"


@pytest.mark.parametrize("variant", VARIANTS)
def test_github_credential_only_in_the_register_and_deregister_variables(variant: str) -> None:
    synth = synthesized(variant)
    stack = synth.stacks["nomad"]
    variables = {item["path"]: item for item in resources(stack, "nomad_variable").values()}
    expected_paths = {
        path for pool in synth.config.pools for path in credential_variable_paths(pool.nomad_job)
    }
    expected_paths.add(tunnel_token_variable_path(CLOUDFLARED_JOB))
    assert set(variables) == expected_paths
    for path, variable in variables.items():
        if path == tunnel_token_variable_path(CLOUDFLARED_JOB):
            (reference,) = variable["items"].values()
            assert list(variable["items"]) == ["tunnel_token"]
            assert reference.startswith(
                "${sensitive(data.terraform_remote_state.cross-stack-reference-input-edge."
            )
        elif synth.config.github.auth == "app":
            assert variable["items"] == {"github_app_private_key": "${var.github_app_private_key}"}
        else:
            assert variable["items"] == {"github_token": "${var.github_runner_token}"}
        assert variable["namespace"].startswith("${nomad_namespace.")
    # Exactly one credential variable: the runner token, or the App's key.
    wanted = (
        "github_app_private_key" if synth.config.github.auth == "app" else "github_runner_token"
    )
    credentials = {"github_app_private_key", "github_runner_token"} & set(stack["variable"])
    assert credentials == {wanted}
    assert stack["variable"][wanted]["sensitive"] is True
    assert "default" not in stack["variable"][wanted]


@pytest.mark.parametrize("variant", VARIANTS)
def test_jobs_get_the_auth_kind_and_scope_as_settings(variant: str) -> None:
    synth = synthesized(variant)
    github = synth.config.github
    for pool in synth.config.pools:
        hcl_vars = jobs_by_name(synth.stacks["nomad"])[pool.nomad_job]["hcl2"]["vars"]
        assert hcl_vars["github_auth"] == github.auth
        assert hcl_vars["runner_scope"] == github.runner_scope
        assert hcl_vars["github_owner"] == github.owner
        assert hcl_vars["github_app_id"] == str(github.app_id or "")
        assert hcl_vars["github_app_installation_id"] == str(github.installation_id or "")
    if variant == "two-pools":  # the App and organization example
        assert (github.auth, github.runner_scope) == ("app", "organization")


def test_scripts_ship_beside_the_stack() -> None:
    """The asset the jobspec's file() reads: the task scripts, by a path relative to the stack."""
    synth = synthesized("example")
    job = jobs_by_name(synth.stacks["nomad"])[synth.config.pools[0].nomad_job]
    relative = job["hcl2"]["vars"]["scripts_dir"]
    assert re.fullmatch(r"assets/runner_scripts/[0-9A-F]{32}", relative)
    copied = synth.outdir / "stacks" / "nomad" / relative
    scripts = sorted(p.name for p in SCRIPTS_DIR.iterdir() if p.suffix in (".py", ".sh"))
    assert sorted(p.name for p in copied.iterdir()) == scripts
    for name in scripts:
        assert (copied / name).read_bytes() == (SCRIPTS_DIR / name).read_bytes()
    for name in re.findall(r'file\("\$\{var\.scripts_dir\}/([^"]+)"\)', RUNNER_JOBSPEC.read_text()):
        assert name in scripts, f"the jobspec reads {name}, which is not shipped"


def test_runner_jobs_carry_each_pools_sandbox_settings() -> None:
    """The synthesized jobs: the pool's node pool (else nomad.node_pool, where cloudflared runs),
    process limit, disk and sudo choice, as the variables the jobspec's walls read."""
    synth = synthesized("two-pools")
    jobs = jobs_by_name(synth.stacks["nomad"])
    for pool in synth.config.pools:
        variables = {k: unescape(v) for k, v in jobs[pool.nomad_job]["hcl2"]["vars"].items()}
        assert variables["node_pool"] == (pool.node_pool or synth.config.nomad.node_pool)
        assert variables["pids_limit"] == str(pool.pids_limit)
        assert variables["disk"] == str(pool.disk)
        assert variables["runner_sudo"] == ("image" if pool.sudo else "none")
    small = jobs["github-runner-small"]["hcl2"]["vars"]
    assert unescape(small["node_pool"]) == "ci-runners"
    assert unescape(small["runner_sudo"]) == "none"
    assert unescape(small["pids_limit"]) == "2048"
    gpu = jobs["github-runner-gpu"]["hcl2"]["vars"]
    assert unescape(gpu["node_pool"]) == "ci"
    assert unescape(gpu["disk"]) == "51200"
    cloudflared = jobs[CLOUDFLARED_JOB]["hcl2"]["vars"]
    assert unescape(cloudflared["node_pool"]) == "ci"


@pytest.mark.parametrize("variant", VARIANTS)
def test_synthesized_runner_jobspecs_have_their_walls(variant: str) -> None:
    """What Nomad receives, parsed back: bridge network, disk reservation, nothing privileged,
    a process limit on every task; cloudflared's metrics on the node's loopback."""
    for name, job in jobs_by_name(nomad(variant)).items():
        spec = pygohcl.loads(unescape(job["jobspec"]))
        [body] = spec["job"].values()
        [group] = body["group"].values()
        if name == CLOUDFLARED_JOB:
            config = group["task"]["cloudflared"]["config"]
            assert config["args"][config["args"].index("--metrics") + 1].startswith("127.0.0.1:")
            assert group["service"]["address"] == "127.0.0.1"
            continue
        if jobspec_of(name) == PREWARM_JOBSPEC:  # sleeping tasks: no network at all
            config = group["dynamic"]["task"]["content"]["config"]
            assert config["network_mode"] == "none" and config["privileged"] is False
            assert config["pids_limit"]
            continue
        assert group["network"] == {"mode": "bridge"}
        assert group["ephemeral_disk"] == {"size": "var.disk"}
        privileged = {task for task, body in group["task"].items() if body["config"]["privileged"]}
        # Only a dind pool's Docker daemon, and nothing in any other pool.
        dind = unescape(job["jobspec"]) == RUNNER_DIND_JOBSPEC.read_text()
        assert privileged == ({DOCKER_TASK} if dind else set()), name
        for task in group["task"].values():
            assert task["config"]["pids_limit"]


def test_a_dind_pool_gets_the_dind_jobspec_and_half_its_resources_for_the_daemon() -> None:
    synth = synthesized("docker-in-docker")
    pool = synth.config.pool("docker")
    jobs = jobs_by_name(synth.stacks["nomad"])
    variables = {k: unescape(v) for k, v in jobs[pool.nomad_job]["hcl2"]["vars"].items()}
    assert unescape(jobs[pool.nomad_job]["jobspec"]) == RUNNER_DIND_JOBSPEC.read_text()
    assert variables["docker_image"] == synth.config.images.dind == "docker:29.7.2-dind"
    assert variables["registry_mirror"] == "https://mirror.internal.example.com"
    # cpu 4000 and memory 8192 for the whole allocation: the runner and the daemon share them.
    assert (variables["cpu"], variables["docker_cpu"]) == ("2000", "2000")
    assert (variables["memory"], variables["docker_memory"]) == ("4096", "4096")
    assert variables["node_pool"] == "dind-runners"
    assert variables["driver"] == "docker"
    plain = {k: unescape(v) for k, v in jobs["github-runner-linux"]["hcl2"]["vars"].items()}
    assert unescape(jobs["github-runner-linux"]["jobspec"]) == RUNNER_JOBSPEC.read_text()
    assert not {"docker_image", "docker_cpu", "docker_memory", "registry_mirror"} & set(plain)
    assert (plain["cpu"], plain["memory"]) == ("2000", "4096")


def hcl2_value(job: dict[str, Any], name: str, jobspec: Any) -> Any:
    """A variable as Nomad reads it: string/number literal, list/map/object parsed as HCL."""
    raw = unescape(job["hcl2"]["vars"][name])
    kind = str(declared_variables(jobspec)[name].get("type", "string")).strip("${}")
    if kind in ("string", "number"):
        return raw
    return pygohcl.loads(f"v = {raw}")["v"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_prewarm_job_only_for_pools_that_ask_for_it(variant: str) -> None:
    config = synthesized(variant).config
    jobs = jobs_by_name(nomad(variant))
    for pool in config.pools:
        assert (pool.prewarm_job in jobs) is pool.prewarm, pool.name
    expected = {"two-pools": ["gpu"], "docker-in-docker": ["docker"]}.get(variant, [])
    assert [pool.name for pool in config.pools if pool.prewarm] == expected


@pytest.mark.parametrize(
    ("variant", "pool_name"), [("two-pools", "gpu"), ("docker-in-docker", "docker")]
)
def test_prewarm_job_keeps_the_pools_images_where_its_runners_may_run(
    variant: str, pool_name: str
) -> None:
    """Same placement, driver and images as the pool's runner job: nothing more, nothing less."""
    synth = synthesized(variant)
    pool = synth.config.pool(pool_name)
    jobs = jobs_by_name(synth.stacks["nomad"])
    prewarm, runner = jobs[pool.prewarm_job], jobs[pool.nomad_job]
    runner_jobspec = RUNNER_DIND_JOBSPEC if pool.docker == "dind" else RUNNER_JOBSPEC
    # The runner image exactly as the runner job gets it: a pin, or the newest release's
    # expression (a reference, left unescaped).
    assert prewarm["hcl2"]["vars"]["runner_image"] == runner["hcl2"]["vars"]["runner_image"]
    for name in ("helper_image", "datacenters", "node_pool", "constraints", "driver"):
        assert hcl2_value(prewarm, name, PREWARM_JOBSPEC) == hcl2_value(
            runner, name, runner_jobspec
        ), name
    docker_image = hcl2_value(prewarm, "docker_image", PREWARM_JOBSPEC)
    if pool.docker == "dind":
        assert docker_image == hcl2_value(runner, "docker_image", runner_jobspec)
        assert docker_image == synth.config.images.dind
        assert hcl2_value(prewarm, "node_pool", PREWARM_JOBSPEC) == pool.node_pool
        assert "(data.github_release." in prewarm["hcl2"]["vars"]["runner_image"]  # newest
    else:
        assert docker_image == ""  # no daemon: no third task
        assert hcl2_value(prewarm, "runner_image", PREWARM_JOBSPEC) == pool.image
        assert hcl2_value(prewarm, "constraints", PREWARM_JOBSPEC)[0] == {
            "attribute": "${meta.gpu}",
            "operator": "=",
            "value": "true",
        }
    # In the runner namespace, after it exists (a reference to the namespace resource).
    assert prewarm["hcl2"]["vars"]["namespace"].startswith("${nomad_namespace.")
    assert prewarm["detach"] is True


def test_prewarm_job_reads_no_credential() -> None:
    """No Variable for it, no template, no file: a prewarm task can read nothing secret."""
    synth = synthesized("two-pools")
    stack = synth.stacks["nomad"]
    paths = {item["path"] for item in resources(stack, "nomad_variable").values()}
    gpu = synth.config.pool("gpu")
    assert not any(path.startswith(f"nomad/jobs/{gpu.prewarm_job}") for path in paths)
    job = jobs_by_name(stack)[gpu.prewarm_job]
    assert job["hcl2"]["allow_fs"] is False
    assert not any("token" in name for name in job["hcl2"]["vars"])
