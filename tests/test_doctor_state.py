"""doctor.state: outputs read with ``terraform output -json`` where cdktf deploy ran, and the
stacks record exactly the outputs doctor reads, sensitive."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from doctor.state import (
    ACCESS_CLIENT_ID_OUTPUT,
    ACCESS_CLIENT_SECRET_OUTPUT,
    DISPATCH_TOKEN_OUTPUT,
    STATUS_TOKEN_OUTPUT,
    StateError,
    TerraformOutputs,
)
from tests.stack_synth import synthesized

SECRET = "planted-state-secret-5b6c7d"


def stack_dir(root: Path, stack: str, *, initialized: bool = True) -> Path:
    directory = root / "stacks" / stack
    directory.mkdir(parents=True)
    backend = {"terraform": {"backend": {"local": {"path": f"../../state/{stack}.tfstate"}}}}
    (directory / "cdk.tf.json").write_text(json.dumps(backend))
    if initialized:
        (directory / ".terraform").mkdir()
    return directory


def fake_terraform(tmp_path: Path, stdout: str, *, code: int = 0, stderr: str = "") -> str:
    """A ``terraform`` that prints what a real one would, and records its arguments."""
    script = tmp_path / "bin" / "terraform"
    script.parent.mkdir(exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$PWD $*" >> {tmp_path}/calls\n'
        f"cat <<'EOF'\n{stdout}\nEOF\n"
        f"printf '%s' '{stderr}' >&2\n"
        f"exit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


class TestTerraformOutputs:
    def test_reads_a_sensitive_output_once_per_stack(self, tmp_path):
        directory = stack_dir(tmp_path, "edge")
        printed = json.dumps(
            {
                ACCESS_CLIENT_ID_OUTPUT: {"sensitive": True, "type": "string", "value": "id"},
                ACCESS_CLIENT_SECRET_OUTPUT: {"sensitive": True, "type": "string", "value": SECRET},
            }
        )
        outputs = TerraformOutputs(tmp_path / "stacks", terraform=fake_terraform(tmp_path, printed))
        assert outputs.value("edge", ACCESS_CLIENT_SECRET_OUTPUT) == SECRET
        assert outputs.value("edge", ACCESS_CLIENT_ID_OUTPUT) == "id"
        calls = (tmp_path / "calls").read_text().splitlines()
        assert calls == [f"{directory} output -json -no-color"]

    def test_a_missing_output_names_the_stack_to_deploy(self, tmp_path):
        stack_dir(tmp_path, "nomad")
        outputs = TerraformOutputs(tmp_path / "stacks", terraform=fake_terraform(tmp_path, "{}"))
        with pytest.raises(StateError, match=r"no output 'dispatch_token_secret'.*deploy nomad"):
            outputs.value("nomad", DISPATCH_TOKEN_OUTPUT)

    def test_no_synthesized_stack(self, tmp_path):
        outputs = TerraformOutputs(tmp_path / "stacks", terraform=fake_terraform(tmp_path, "{}"))
        with pytest.raises(StateError, match=r"no synthesized stack 'edge'.*--out"):
            outputs.value("edge", ACCESS_CLIENT_ID_OUTPUT)

    def test_not_initialized(self, tmp_path):
        stack_dir(tmp_path, "edge", initialized=False)
        outputs = TerraformOutputs(tmp_path / "stacks", terraform=fake_terraform(tmp_path, "{}"))
        with pytest.raises(StateError, match="terraform init has not run"):
            outputs.value("edge", ACCESS_CLIENT_ID_OUTPUT)

    def test_terraform_not_installed(self, tmp_path):
        stack_dir(tmp_path, "edge")
        outputs = TerraformOutputs(tmp_path / "stacks", terraform="no-such-terraform-here")
        with pytest.raises(StateError, match="not on PATH"):
            outputs.value("edge", ACCESS_CLIENT_ID_OUTPUT)

    def test_a_failing_terraform_shows_its_error_line(self, tmp_path):
        stack_dir(tmp_path, "edge")
        stderr = "Warning: Unable to open CLI configuration file\nError: Failed to load state"
        terraform = fake_terraform(tmp_path, "", code=1, stderr=stderr)
        outputs = TerraformOutputs(tmp_path / "stacks", terraform=terraform)
        with pytest.raises(StateError, match=r"terraform output failed in .*: Error: Failed to"):
            outputs.value("edge", ACCESS_CLIENT_ID_OUTPUT)

    def test_real_terraform_prints_sensitive_values_with_json(self, tmp_path):
        """The contract with Terraform itself: after init, ``output -json`` shows a sensitive
        value in plain text (the one form that does, besides ``-raw``)."""
        if shutil.which("terraform") is None:
            pytest.fail("terraform is not on PATH: install Terraform >= 1.5 (see the README)")
        directory = stack_dir(tmp_path, "edge", initialized=False)
        env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
        subprocess.run(
            ["terraform", "init", "-input=false", "-no-color"],
            cwd=directory,
            env=env,
            check=True,
            capture_output=True,
        )
        (tmp_path / "state").mkdir()
        state = {
            "version": 4,
            "terraform_version": "1.5.0",
            "serial": 1,
            "lineage": "00000000-0000-0000-0000-000000000001",
            "outputs": {
                ACCESS_CLIENT_SECRET_OUTPUT: {"value": SECRET, "type": "string", "sensitive": True}
            },
            "resources": [],
            "check_results": None,
        }
        (tmp_path / "state" / "edge.tfstate").write_text(json.dumps(state))
        outputs = TerraformOutputs(tmp_path / "stacks")
        assert outputs.value("edge", ACCESS_CLIENT_SECRET_OUTPUT) == SECRET


class TestStackOutputs:
    """The synthesized stacks declare the outputs doctor reads, each sensitive."""

    @pytest.mark.parametrize(
        ("stack", "name", "reference"),
        [
            ("edge", ACCESS_CLIENT_ID_OUTPUT, ".client_id}"),
            ("edge", ACCESS_CLIENT_SECRET_OUTPUT, ".client_secret}"),
            ("nomad", DISPATCH_TOKEN_OUTPUT, "nomad_acl_token."),
            ("dispatch", STATUS_TOKEN_OUTPUT, "random_password.status_token"),
        ],
    )
    def test_output_is_declared_sensitive(self, stack, name, reference):
        output = synthesized("example").stacks[stack]["output"][name]
        assert output["sensitive"] is True
        assert reference in output["value"]
