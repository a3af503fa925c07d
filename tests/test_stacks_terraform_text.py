"""stacks/terraform_text.py: escaped literals evaluate, as HCL templates, to the original text."""

from __future__ import annotations

import json

import pygohcl
from hypothesis import given
from hypothesis import strategies as st

from stacks.terraform_text import escape, unescape

# Heavy on the characters that matter, plus ordinary text.
_TEXT = st.text(alphabet=st.sampled_from(list('${}%ab \n"\\')), max_size=40)


def evaluate(template: str) -> str:
    """What HCL (Terraform's and Nomad's parser) makes of a quoted string literal."""
    value: str = pygohcl.loads(f"v = {json.dumps(template)}")["v"]
    return value


@given(_TEXT)
def test_escaped_text_evaluates_to_itself(text: str) -> None:
    assert evaluate(escape(text)) == text


@given(_TEXT)
def test_unescape_models_the_parser(text: str) -> None:
    assert unescape(escape(text)) == text


def test_nomad_interpolations_survive() -> None:
    text = 'env { ID = "${NOMAD_ALLOC_ID}" }\n%{ if x }y%{ endif }\n$${already}'
    escaped = escape(text)
    assert escaped == 'env { ID = "$${NOMAD_ALLOC_ID}" }\n%%{ if x }y%%{ endif }\n$$${already}'
    assert evaluate(escaped) == text
