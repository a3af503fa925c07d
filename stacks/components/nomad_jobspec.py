"""Helpers to hand a jobspec file and its HCL2 variables to the ``nomad_job`` resource.

The provider parses the jobspec itself (Nomad's HCL2 parser, at plan time) and takes variable
values as strings, the way ``nomad job run -var`` does: ``string`` and ``number`` variables are
taken literally, ``list``/``object`` ones are parsed as an HCL expression. Values therefore go
through two layers: ``hcl_value`` makes the HCL expression (JSON syntax, with ``${``/``%{``
escaped for HCL so Nomad attributes such as ``${attr.cpu.arch}`` stay literal), then
``stacks.terraform_text.escape`` keeps Terraform from interpolating any of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stacks.terraform_text import escape


def _hcl_escape(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)  # HCL templates use the same escapes as Terraform
    if isinstance(value, list | tuple):
        return [_hcl_escape(item) for item in value]
    if isinstance(value, dict):
        return {key: _hcl_escape(item) for key, item in value.items()}
    return value


def hcl_value(value: str | int | list[Any] | tuple[Any, ...] | dict[str, Any]) -> str:
    """The ``-var`` string for one value, before Terraform escaping."""
    if isinstance(value, bool):
        raise TypeError("no boolean variables in the jobspecs")
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return json.dumps(_hcl_escape(value), separators=(",", ":"))


def hcl2_vars(values: Mapping[str, Any], *, literal_tokens: Mapping[str, str]) -> dict[str, str]:
    """Terraform-safe ``hcl2.vars``; ``literal_tokens`` are cdktf tokens passed through as is."""
    result = {name: escape(hcl_value(value)) for name, value in values.items()}
    result.update(literal_tokens)
    return result


def jobspec_text(path: Path) -> str:
    """The jobspec file, escaped so Nomad's own ``${...}`` reach Nomad untouched."""
    return escape(path.read_text(encoding="utf-8"))
