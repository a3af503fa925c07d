"""Literal text handed to Terraform, made safe from Terraform's own template syntax.

Terraform reads ``${...}`` and ``%{...}`` inside any string as interpolation and directives, and
cdktf emits literal strings as they are. Nomad jobspecs are full of ``${NOMAD_...}`` and
``${attr...}`` that must reach Nomad untouched, so every literal we pass (file text, variable
values) goes through ``escape``, which Terraform undoes when it evaluates the string.
"""

from __future__ import annotations


def escape(text: str) -> str:
    """``${`` -> ``$${`` and ``%{`` -> ``%%{``: Terraform then yields the original text."""
    return text.replace("${", "$${").replace("%{", "%%{")


def unescape(text: str) -> str:
    """What Terraform makes of an escaped literal (for tests and review tooling)."""
    return text.replace("$${", "${").replace("%%{", "%{")
