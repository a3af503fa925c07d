"""main.py and the whole app: cross-stack wiring, no secrets or machine paths in any file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import main
from tests.stack_synth import (
    PLANTED_SECRETS,
    REPO_ROOT,
    STACKS,
    VARIANTS,
    synthesized,
    unescaped_interpolations,
)

_REMOTE_REFERENCE = re.compile(
    r"\$\{(?:sensitive\()?data\.terraform_remote_state\.cross-stack-reference-input-([a-z]+)"
    r"\.outputs\.([^})]+)\)?\}"
)


def remote_references(value: Any) -> list[tuple[str, str]]:
    return _REMOTE_REFERENCE.findall(json.dumps(value))


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_stack_references_resolve_to_sensitive_outputs(variant: str) -> None:
    """Every remote-state read names a real output of the producing stack, read from its backend."""
    stacks = synthesized(variant).stacks
    for consumer in STACKS:
        stack = stacks[consumer]
        for producer, output in remote_references(stack.get("resource", {})):
            produced = stacks[producer]["output"][output]
            assert produced["sensitive"] is True
            remote = stack["data"]["terraform_remote_state"][
                f"cross-stack-reference-input-{producer}"
            ]
            ((backend_type, backend_config),) = stacks[producer]["terraform"]["backend"].items()
            assert remote["backend"] == backend_type
            assert remote["config"] == backend_config


def test_wiring_between_the_four_stacks() -> None:
    """The values the issue names flow where they must, and only through cdktf references."""
    stacks = synthesized("example").stacks

    def producer_value(consumer_value: str) -> str:
        ((producer, output),) = _REMOTE_REFERENCE.findall(consumer_value)
        value: str = stacks[producer]["output"][output]["value"]
        return value

    tunnel_variable = next(
        variable
        for variable in stacks["nomad"]["resource"]["nomad_variable"].values()
        if "tunnel_token" in variable["items"]
    )
    assert re.fullmatch(
        r"\$\{data\.cloudflare_zero_trust_tunnel_cloudflared_token\.[^.]+\.token\}",
        producer_value(tunnel_variable["items"]["tunnel_token"]),
    )
    (version,) = stacks["dispatch"]["resource"]["cloudflare_worker_version"].values()
    bindings = {binding["name"]: binding.get("text") for binding in version["bindings"]}
    assert re.fullmatch(
        r"\$\{nomad_acl_token\.[^.]+\.secret_id\}", producer_value(bindings["NOMAD_TOKEN"])
    )
    assert producer_value(bindings["CF_ACCESS_CLIENT_SECRET"]).endswith(".client_secret}")
    (hook,) = stacks["github"]["resource"]["github_repository_webhook"].values()
    assert re.fullmatch(
        r"\$\{cloudflare_workers_custom_domain\.[^.]+\.hostname\}",
        producer_value(hook["configuration"]["url"]),
    )
    assert producer_value(hook["configuration"]["secret"]) == (
        "${random_password.webhook_secret_key.result}"
    )
    # Remote state drops the sensitive mark: every secret read from another stack is marked
    # again, so plans (and the diff posted on pull requests) print none of them.
    secrets_read = [
        tunnel_variable["items"]["tunnel_token"],
        bindings["NOMAD_TOKEN"],
        bindings["CF_ACCESS_CLIENT_ID"],
        bindings["CF_ACCESS_CLIENT_SECRET"],
        hook["configuration"]["secret"],
    ]
    for value in secrets_read:
        assert "${sensitive(data.terraform_remote_state." in value, value
    assert "sensitive(" not in hook["configuration"]["url"]


def test_manifest_orders_the_stacks() -> None:
    manifest = json.loads((synthesized("example").outdir / "manifest.json").read_text())
    dependencies = {
        name: sorted(stack["dependencies"]) for name, stack in manifest["stacks"].items()
    }
    assert dependencies == {
        "edge": [],
        "nomad": ["edge"],
        "dispatch": ["edge", "nomad"],
        "github": ["dispatch"],
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_secret_and_no_machine_path_in_any_file(variant: str) -> None:
    """Credentials planted in the environment during synth appear in no synthesized file."""
    synth = synthesized(variant)
    files = list(synth.files())
    assert len(files) > len(STACKS)
    for path in files:
        text = path.read_text(errors="replace")
        for name, secret in PLANTED_SECRETS.items():
            assert secret not in text, f"{name} leaked into {path.relative_to(synth.outdir)}"
        assert str(REPO_ROOT) not in text, path
        assert str(synth.outdir) not in text, path


@pytest.mark.parametrize("variant", VARIANTS)
def test_no_unescaped_interpolation_reaches_terraform(variant: str) -> None:
    for name, stack in synthesized(variant).stacks.items():
        assert unescaped_interpolations(stack) == [], name


@pytest.mark.parametrize(
    ("variant", "backend"),
    [
        ("example", {"local": {"path": "../../../terraform-state/nomad.tfstate"}}),
        (
            "two-pools",
            {
                "s3": {
                    "bucket": "example-terraform-state",
                    "encrypt": True,
                    "key": "ci-runners/nomad.tfstate",
                    "region": "eu-west-1",
                }
            },
        ),
        (
            "user-owned",
            {
                "remote": {
                    "hostname": "app.terraform.io",
                    "organization": "octocat",
                    "workspaces": {"name": "runners-nomad"},
                }
            },
        ),
    ],
)
def test_backend_of_each_kind(variant: str, backend: dict[str, Any]) -> None:
    assert synthesized(variant).stacks["nomad"]["terraform"]["backend"] == backend


def test_config_error_exits_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    text = (
        (REPO_ROOT / "examples" / "config.toml")
        .read_text()
        .replace('zone_name = "example.com"', 'zone_name = "example.org"')
    )
    bad.write_text(text)
    assert main.main(["--config", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        f"error: {bad}: cloudflare.webhook_hostname: 'gh-runners.example.com' is not within" in err
    )
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_node_is_a_clear_error(tmp_path: Path) -> None:
    """jsii's own failure without node is an AttributeError; main says what is missing."""
    result = subprocess.run(
        [sys.executable, "main.py", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT,
        env={**os.environ, "PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: Node.js not found on PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_import_does_not_synthesize(tmp_path: Path) -> None:
    """Importing main builds nothing and writes nothing."""
    result = subprocess.run(
        [sys.executable, "-c", "import main; print(main.DEFAULT_CONFIG)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "examples/config.toml"
    assert list(tmp_path.iterdir()) == []


def test_cli_synthesizes_the_example_with_no_credentials(tmp_path: Path) -> None:
    """What `make synth` runs, in a clean environment without any credential variable."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if not re.search(r"TOKEN|SECRET|KEY|PASSWORD|TF_VAR", name)
    }
    result = subprocess.run(
        [sys.executable, "main.py", "--config", "examples/config.toml", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "==> synthesizing into" in result.stderr
    assert "cdktf deploy edge nomad dispatch github" in result.stderr
    for stack in STACKS:
        assert (tmp_path / "stacks" / stack / "cdk.tf.json").is_file()
