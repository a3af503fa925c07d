"""The values doctor needs that exist only in Terraform state, read with ``terraform output``.

The stacks declare each of them as a stable, sensitive, named output (the names below): the
Access service token (``edge``), the Worker's dispatch-only Nomad token (``nomad``) and the
``/status`` bearer token (``dispatch``). cdktf's
own cross-stack outputs carry hashed construct paths in their names, which change when a
construct moves, so doctor never relies on them.

:class:`TerraformOutputs` runs ``terraform output -json`` once per stack in
``cdktf.out/stacks/<stack>`` (where ``cdktf deploy`` ran ``terraform init``), so it reads state
from whichever backend the stack declares, with that backend's usual credentials. ``-json`` is
the one form that prints sensitive values; they stay in memory and are never printed. Tests
hand the checks any object with the same ``value`` method instead.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Final, Protocol

EDGE_STACK: Final = "edge"
NOMAD_STACK: Final = "nomad"
DISPATCH_STACK: Final = "dispatch"
# Output names: part of the stacks' contract with doctor (and with any operator script).
ACCESS_CLIENT_ID_OUTPUT: Final = "access_client_id"
ACCESS_CLIENT_SECRET_OUTPUT: Final = "access_client_secret"
DISPATCH_TOKEN_OUTPUT: Final = "dispatch_token_secret"
STATUS_TOKEN_OUTPUT: Final = "status_token"  # the dispatch stack's /status bearer token
TERRAFORM_TIMEOUT_SECONDS: Final = 120


class StateError(Exception):
    """A state value could not be read; the message says what to do about it."""


class StateOutputs(Protocol):
    def value(self, stack: str, name: str) -> str:
        """The string value of output ``name`` of ``stack``; :class:`StateError` if absent."""
        ...


class TerraformOutputs:
    """Outputs read with ``terraform output -json`` in ``{stacks_dir}/{stack}``, once each."""

    def __init__(self, stacks_dir: Path, *, terraform: str = "terraform") -> None:
        self._stacks_dir = stacks_dir
        self._terraform = terraform
        self._cache: dict[str, dict[str, object]] = {}

    def value(self, stack: str, name: str) -> str:
        outputs = self._cache.get(stack)
        if outputs is None:
            outputs = self._cache[stack] = self._read(stack)
        entry = outputs.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("value"), str):
            raise StateError(
                f"the state of stack '{stack}' has no output '{name}': deploy it again "
                f"(cdktf deploy {stack}) so that it records this output"
            )
        value: str = entry["value"]
        return value

    def _read(self, stack: str) -> dict[str, object]:
        directory = self._stacks_dir / stack
        if not (directory / "cdk.tf.json").is_file():
            raise StateError(
                f"no synthesized stack '{stack}' in {directory}: run doctor where you deploy, "
                "with --out naming the cdktf output directory"
            )
        if not (directory / ".terraform").is_dir():
            raise StateError(
                f"terraform init has not run in {directory}: deploy first (cdktf deploy), "
                "or run 'terraform init' there"
            )
        executable = shutil.which(self._terraform)
        if executable is None:
            raise StateError(f"'{self._terraform}' is not on PATH: install Terraform >= 1.5")
        try:
            completed = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
                [executable, "output", "-json", "-no-color"],
                cwd=directory,
                capture_output=True,
                timeout=TERRAFORM_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StateError(
                f"terraform output in {directory} took over {TERRAFORM_TIMEOUT_SECONDS} s "
                "(is the state backend reachable?)"
            ) from None
        if completed.returncode != 0:
            raise StateError(
                f"terraform output failed in {directory}: {_error_line(completed.stderr)}"
            )
        try:
            document = json.loads(completed.stdout or b"{}")
        except ValueError:
            raise StateError(f"terraform output in {directory} did not print JSON") from None
        if not isinstance(document, dict):
            raise StateError(f"terraform output in {directory} did not print a JSON object")
        return document


def _error_line(stderr: bytes) -> str:
    """The first ``Error:`` line Terraform printed (its warnings come first), or the last line."""
    lines = [line.strip(" │╷╵\t") for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("Error:"):
            return line
    return lines[-1] if lines else "no message"
