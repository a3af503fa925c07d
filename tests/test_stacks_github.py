"""stacks/github.py: one workflow_job hook per repository, its secret derived as the Worker does."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from handler.contract import webhook_path, webhook_secret_for
from stacks.github import exposure_warnings, provider_base_url
from stacks.terraform_text import unescape
from tests.stack_synth import VARIANTS, masked, only, resources, synthesized


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("variant", VARIANTS)
def test_snapshot(variant: str, snapshot_json: SnapshotAssertion) -> None:
    assert masked(synthesized(variant).stacks["github"]) == snapshot_json


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_repository_has_exactly_one_hook(variant: str) -> None:
    """One for_each resource keyed by repository name: one instance per configured repository."""
    synth = synthesized(variant)
    hooks = resources(synth.stacks["github"], "github_repository_webhook")
    assert list(hooks) == ["workflow_job"]
    hook = hooks["workflow_job"]
    names = [repo.name for repo in synth.config.github.repositories]
    assert sorted(hook["for_each"]) == sorted(names)
    assert len(set(names)) == len(names)
    for name in names:
        assert unescape(hook["for_each"][name]["repository"]) == name
    assert hook["repository"] == "${each.value.repository}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_hook_settings(variant: str) -> None:
    hook = only(synthesized(variant).stacks["github"], "github_repository_webhook")
    assert hook["events"] == ["workflow_job"]
    assert hook["active"] is True
    assert hook["configuration"]["content_type"] == "json"
    assert hook["configuration"]["insecure_ssl"] is False


def test_hook_url_is_the_worker_path_of_each_repository() -> None:
    synth = synthesized("user-owned")
    hook = only(synth.stacks["github"], "github_repository_webhook")
    url = hook["configuration"]["url"]
    match = re.fullmatch(
        r"https://(\$\{data\.terraform_remote_state\.[^}]+\})\$\{each\.value\.url_path\}", url
    )
    assert match, url
    for repo in synth.config.github.repositories:
        assert hook["for_each"][repo.name]["url_path"] == webhook_path(repo.full_name)
    assert hook["for_each"]["Hello-World"]["url_path"] == "/webhook/octocat/hello-world"


@pytest.mark.parametrize("variant", ["example", "user-owned"])
def test_secret_equals_the_handlers_derivation(variant: str) -> None:
    """Evaluating Terraform's expression with a known key gives webhook_secret_for(key, repo)."""
    synth = synthesized(variant)
    hook = only(synth.stacks["github"], "github_repository_webhook")
    expression = hook["configuration"]["secret"]
    match = re.fullmatch(
        r'\$\{sha256\("\$\{sensitive\((data\.terraform_remote_state\.[^)]+)\)\}'
        r':\$\{each\.value\.secret_subject\}"\)\}',
        expression,
    )
    assert match, expression
    assert "webhook_secret_key" in match.group(1)
    key = "known-test-key"
    for repo in synth.config.github.repositories:
        subject = unescape(hook["for_each"][repo.name]["secret_subject"])
        terraform_value = hashlib.sha256(f"{key}:{subject}".encode()).hexdigest()
        assert terraform_value == webhook_secret_for(key, repo.full_name)


def test_adding_a_repository_touches_no_other_hook() -> None:
    """Same resource, same keys and values for the existing repositories, one new key."""
    before = only(synthesized("example").stacks["github"], "github_repository_webhook")
    after = only(synthesized("example-plus-one").stacks["github"], "github_repository_webhook")
    added = set(after["for_each"]) - set(before["for_each"])
    assert added == {"new-service"}
    assert {name: after["for_each"][name] for name in before["for_each"]} == before["for_each"]
    assert {k: v for k, v in after.items() if k != "for_each"} == {
        k: v for k, v in before.items() if k != "for_each"
    }


def test_provider_owner_is_the_configured_owner() -> None:
    for variant, owner in (("example", "example-org"), ("user-owned", "octocat")):
        providers = synthesized(variant).stacks["github"]["provider"]["github"]
        assert providers == [{"owner": owner}]  # and its token from GITHUB_TOKEN


def test_an_app_authenticates_the_provider_with_its_own_app_auth_block() -> None:
    synth = synthesized("two-pools")
    github = synth.config.github
    stack = synth.stacks["github"]
    [provider] = stack["provider"]["github"]
    assert provider["app_auth"] == {
        "id": str(github.app_id),
        "installation_id": str(github.installation_id),
        "pem_file": "${var.github_app_private_key}",
    }
    assert "token" not in provider
    variable = stack["variable"]["github_app_private_key"]
    assert variable["sensitive"] is True and "default" not in variable


@pytest.mark.parametrize(
    ("api_url", "base_url"),
    [
        ("https://api.github.com", None),
        # The provider appends "api/v3/" itself: a GHES API URL must not reach it as is.
        ("https://ghe.example.com/api/v3", "https://ghe.example.com/"),
        ("https://api.octocorp.ghe.com", "https://api.octocorp.ghe.com/"),
    ],
)
def test_provider_base_url(api_url: str, base_url: str | None) -> None:
    assert provider_base_url(api_url) == base_url


def visibility_guard(variant: str) -> dict[str, Any] | None:
    found = synthesized(variant).stacks["github"].get("data", {}).get("github_repository", {})
    return found.get("not_public")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_served_repository_is_checked_not_public_at_plan(variant: str) -> None:
    """The plan reads each repository (provider data source, for_each by name) and a
    postcondition fails it unless visibility is private or internal."""
    synth = synthesized(variant)
    guard = visibility_guard(variant)
    assert guard is not None
    names = {repo.name: repo.full_name for repo in synth.config.github.repositories}
    assert {name: item["full_name"] for name, item in guard["for_each"].items()} == names
    assert guard["full_name"] == "${each.value.full_name}"
    (condition,) = guard["lifecycle"]["postcondition"]
    assert condition["condition"] == '${contains(["private", "internal"], self.visibility)}'
    # Terraform wants a sentence: a capital first, a full stop last.
    assert condition["error_message"][0].isupper() and condition["error_message"].endswith(".")
    assert "allow_public = true" in condition["error_message"]
    assert "precondition" not in guard["lifecycle"]


def test_a_repository_with_allow_public_is_not_checked_and_is_warned_about() -> None:
    synth = synthesized("public-opt-in")
    guard = visibility_guard("public-opt-in")
    assert guard is not None and sorted(guard["for_each"]) == ["website"]
    hook = only(synth.stacks["github"], "github_repository_webhook")
    assert sorted(hook["for_each"]) == ["api", "website"]  # still served
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    warnings = [
        note["message"]
        for note in manifest["stacks"]["github"]["annotations"]
        if note["level"] == "@cdktf/warn"
    ]
    assert warnings == exposure_warnings(synth.config)
    assert len(warnings) == 2 and all(w.startswith("example-org/api: ") for w in warnings)
    assert "allow_public = true" in warnings[0] and "fork_pull_requests" in warnings[1]


def test_the_default_configuration_warns_about_nothing() -> None:
    synth = synthesized("example")
    assert exposure_warnings(synth.config) == []
    manifest = json.loads((synth.outdir / "manifest.json").read_text())
    assert manifest["stacks"]["github"]["annotations"] == []
