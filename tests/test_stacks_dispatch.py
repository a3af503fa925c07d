"""stacks/dispatch.py: the Worker with exactly the handler's bindings, its ledger and domain."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from handler.bundle import COMPATIBILITY_DATE, MAIN_MODULE, worker_modules
from handler.contract import WORKER_BINDINGS, Routing, worker_bindings
from stacks.components.dispatch_worker import DispatchWorker
from stacks.terraform_text import unescape
from tests.stack_synth import VARIANTS, masked, only, resources, synthesized


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("variant", VARIANTS)
def test_snapshot(variant: str, snapshot_json: SnapshotAssertion) -> None:
    assert masked(synthesized(variant).stacks["dispatch"]) == snapshot_json


def dispatch(variant: str = "example") -> dict[str, Any]:
    return synthesized(variant).stacks["dispatch"]


def version(variant: str = "example") -> dict[str, Any]:
    return only(dispatch(variant), "cloudflare_worker_version")


def test_python_worker_settings() -> None:
    worker_version = version()
    assert "python_workers" in worker_version["compatibility_flags"]
    assert worker_version["compatibility_date"] == COMPATIBILITY_DATE
    assert worker_version["main_module"] == MAIN_MODULE == "worker.py"


def test_modules_are_the_handler_package_base64_encoded() -> None:
    """Exactly worker_modules(), byte for byte; base64 cannot carry a Terraform ${ at all."""
    modules = version()["modules"]
    expected = worker_modules()
    assert [module["name"] for module in modules] == [name for name, _ in expected]
    assert any(module["name"] == MAIN_MODULE for module in modules)
    for module, (_, content) in zip(modules, expected, strict=True):
        assert module["content_type"] == "text/x-python"
        assert re.fullmatch(r"[A-Za-z0-9+/=]+", module["content_base64"])
        decoded = base64.b64decode(module["content_base64"])
        assert decoded == (content or b"\n")


@pytest.mark.parametrize("variant", VARIANTS)
def test_bindings_are_exactly_the_contract(variant: str) -> None:
    bindings = version(variant)["bindings"]
    assert [(binding["name"], binding["type"]) for binding in bindings] == [
        (spec.name, spec.type) for spec in worker_bindings(synthesized(variant).config.github.auth)
    ]


@pytest.mark.parametrize("variant", VARIANTS)
def test_binding_values(variant: str) -> None:
    synth = synthesized(variant)
    stack = synth.stacks["dispatch"]
    bindings = {binding["name"]: binding for binding in version(variant)["bindings"]}
    routing = unescape(bindings["ROUTING"]["text"])
    assert routing == synth.config.routing().to_json()
    assert Routing.from_json(routing) == synth.config.routing()
    assert bindings["NOMAD_ADDR"]["text"] == f"https://{synth.config.cloudflare.nomad_api_hostname}"
    (ledger,) = resources(stack, "cloudflare_workers_kv_namespace")
    assert bindings["LEDGER"]["namespace_id"] == f"${{cloudflare_workers_kv_namespace.{ledger}.id}}"
    # Secret bindings are references, filled in by Terraform at apply time, never literals, and
    # marked sensitive again (remote state drops the mark) so no plan prints them.
    remote = "${sensitive(data.terraform_remote_state.cross-stack-reference-input-"
    assert bindings["NOMAD_TOKEN"]["text"].startswith(remote + "nomad.outputs.")
    assert "nomad_acl_token" in bindings["NOMAD_TOKEN"]["text"]
    assert bindings["CF_ACCESS_CLIENT_ID"]["text"].startswith(remote + "edge.outputs.")
    assert bindings["CF_ACCESS_CLIENT_ID"]["text"].endswith("client_id)}")
    assert bindings["CF_ACCESS_CLIENT_SECRET"]["text"].endswith("client_secret)}")
    assert bindings["WEBHOOK_SECRET_KEY"]["text"] == "${random_password.webhook_secret_key.result}"
    assert unescape(bindings["GITHUB_API_URL"]["text"]) == synth.config.github.api_url
    assert bindings["RECONCILE_REQUEST_BUDGET"]["type"] == "plain_text"
    assert bindings["RECONCILE_REQUEST_BUDGET"]["text"] == str(
        synth.config.reconcile.request_budget
    )
    github = synth.config.github
    if github.auth == "app":
        assert "GITHUB_READ_TOKEN" not in bindings
        assert "github_read_token" not in stack["variable"]
        assert bindings["GITHUB_APP_ID"] == {
            "name": "GITHUB_APP_ID",
            "type": "plain_text",
            "text": str(github.app_id),
        }
        assert bindings["GITHUB_APP_INSTALLATION_ID"]["text"] == str(github.installation_id)
        key = bindings["GITHUB_APP_PRIVATE_KEY"]
        assert (key["type"], key["text"]) == ("secret_text", "${var.github_app_private_key}")
        variable = stack["variable"]["github_app_private_key"]
    else:
        assert bindings["GITHUB_READ_TOKEN"]["text"] == "${var.github_read_token}"
        variable = stack["variable"]["github_read_token"]
    assert variable["sensitive"] is True
    assert "default" not in variable


def test_webhook_key_is_generated_and_strong() -> None:
    password = dispatch()["resource"]["random_password"]["webhook_secret_key"]
    assert password["length"] >= 32


def test_status_token_is_generated_bound_and_an_operator_only_output() -> None:
    stack = dispatch()
    password = stack["resource"]["random_password"]["status_token"]
    assert password["length"] >= 32
    bindings = {binding["name"]: binding for binding in version()["bindings"]}
    assert bindings["STATUS_TOKEN"] == {
        "name": "STATUS_TOKEN",
        "type": "secret_text",
        "text": "${random_password.status_token.result}",
    }
    # `terraform output -raw status_token` in the stack's directory, as the README says.
    output = stack["output"]["status_token"]
    assert output["sensitive"] is True
    assert output["value"] == "${random_password.status_token.result}"


def test_deployment_and_custom_domain() -> None:
    synth = synthesized("example")
    stack = synth.stacks["dispatch"]
    (worker_name,) = resources(stack, "cloudflare_worker")
    (version_name,) = resources(stack, "cloudflare_worker_version")
    deployment = only(stack, "cloudflare_workers_deployment")
    assert deployment["versions"] == [
        {"percentage": 100, "version_id": f"${{cloudflare_worker_version.{version_name}.id}}"}
    ]
    assert deployment["script_name"] == f"${{cloudflare_worker.{worker_name}.name}}"
    domain = only(stack, "cloudflare_workers_custom_domain")
    assert domain["hostname"] == synth.config.cloudflare.webhook_hostname
    assert domain["zone_id"] == synth.config.cloudflare.zone_id
    assert domain["service"] == f"${{cloudflare_worker.{worker_name}.name}}"
    (deployment_name,) = resources(stack, "cloudflare_workers_deployment")
    assert domain["depends_on"] == [f"cloudflare_workers_deployment.{deployment_name}"]


def test_worker_answers_only_on_its_custom_domain() -> None:
    """No workers.dev address and no per-version preview URLs (old code, current secrets)."""
    worker = only(dispatch(), "cloudflare_worker")
    assert worker["subdomain"] == {"enabled": False, "previews_enabled": False}


def test_reconciler_runs_on_a_schedule() -> None:
    stack = dispatch()
    (worker_name,) = resources(stack, "cloudflare_worker")
    trigger = only(stack, "cloudflare_workers_cron_trigger")
    assert trigger["script_name"] == f"${{cloudflare_worker.{worker_name}.name}}"
    assert trigger["schedules"] == [{"cron": "*/5 * * * *"}]


def test_binding_values_must_match_the_contract() -> None:
    """A binding missing or unknown to handler.contract is a synth-time error naming it."""
    from cdktf import App, TerraformStack

    stack = TerraformStack(App(), "stack")
    values = {spec.name: "x" for spec in WORKER_BINDINGS if spec.type != "kv_namespace"}
    values.pop("NOMAD_TOKEN")
    values["EXTRA"] = "y"
    with pytest.raises(ValueError, match="missing NOMAD_TOKEN; not in the contract EXTRA"):
        DispatchWorker(
            stack,
            "worker",
            account_id="a",
            zone_id="z",
            name="n",
            hostname="h.example.com",
            text_bindings=values,
        )


def _dispatch_worker() -> DispatchWorker:
    from cdktf import App, TerraformStack

    values = {spec.name: "x" for spec in WORKER_BINDINGS if spec.type != "kv_namespace"}
    return DispatchWorker(
        TerraformStack(App(), "stack"),
        "worker",
        account_id="a",
        zone_id="z",
        name="n",
        hostname="h.example.com",
        text_bindings=values,
    )


@pytest.mark.parametrize(
    ("main_module", "problem"),
    [
        ("handler/entry.py", "must sit at the bundle root"),
        ("worker", "must end with .py"),
        ("my-worker.py", "is not a Python module name"),
    ],
)
def test_synth_refuses_a_main_module_the_runtime_cannot_load(
    monkeypatch: pytest.MonkeyPatch, main_module: str, problem: str
) -> None:
    monkeypatch.setattr("stacks.components.dispatch_worker.MAIN_MODULE", main_module)
    with pytest.raises(ValueError, match=f"main module '{re.escape(main_module)}': .*{problem}"):
        _dispatch_worker()


def test_synth_refuses_a_date_that_removes_the_built_in_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("stacks.components.dispatch_worker.COMPATIBILITY_DATE", "2026-04-21")
    with pytest.raises(ValueError, match="enable_python_external_sdk is on"):
        _dispatch_worker()


def test_reconcile_schedule_follows_the_configuration() -> None:
    """two-pools.toml sets [reconcile] interval_minutes = 10."""
    trigger = only(dispatch("two-pools"), "cloudflare_workers_cron_trigger")
    assert trigger["schedules"] == [{"cron": "*/10 * * * *"}]


def test_reconcile_plan_and_request_budget_follow_the_configuration() -> None:
    """The example keeps the Free plan's default bound; many-repositories is on a paid plan
    with request_budget = 400."""
    seen = {}
    for variant in ("example", "many-repositories"):
        bindings = {binding["name"]: binding for binding in version(variant)["bindings"]}
        assert bindings["RECONCILE_PLAN"]["type"] == "plain_text"
        seen[variant] = (
            bindings["RECONCILE_PLAN"]["text"],
            bindings["RECONCILE_REQUEST_BUDGET"]["text"],
        )
    assert seen == {"example": ("free", "10"), "many-repositories": ("paid", "400")}
