"""stacks/components/nomad_jobspec.py: -var strings Nomad parses back to the intended values."""

from __future__ import annotations

import pygohcl
import pytest

from stacks.components.nomad_jobspec import hcl2_vars, hcl_value
from stacks.terraform_text import unescape


def parsed(text: str) -> object:
    return pygohcl.loads(f"v = {text}")["v"]


def test_scalars_are_literal() -> None:
    """string and number variables are taken literally by Nomad: no quoting, no parsing."""
    assert hcl_value("ghcr.io/actions/actions-runner:2.329.0") == (
        "ghcr.io/actions/actions-runner:2.329.0"
    )
    assert hcl_value(2000) == "2000"


def test_lists_and_objects_parse_as_hcl() -> None:
    value = [{"attribute": "${attr.cpu.arch}", "operator": "=", "value": "amd64"}]
    assert parsed(hcl_value(value)) == value
    assert parsed(hcl_value(["self-hosted", "linux"])) == ["self-hosted", "linux"]
    assert parsed(hcl_value([])) == []


def test_booleans_are_refused() -> None:
    with pytest.raises(TypeError):
        hcl_value(True)


def test_vars_are_escaped_for_terraform_and_tokens_pass_through() -> None:
    result = hcl2_vars(
        {"constraints": [{"attribute": "${meta.gpu}", "operator": "=", "value": "1"}], "cpu": 1},
        literal_tokens={"scripts_dir": "${TfToken[TOKEN.1]}"},
    )
    assert result["scripts_dir"] == "${TfToken[TOKEN.1]}"
    assert result["cpu"] == "1"
    assert "$${" in result["constraints"]
    assert parsed(unescape(result["constraints"])) == [
        {"attribute": "${meta.gpu}", "operator": "=", "value": "1"}
    ]
