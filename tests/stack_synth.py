"""Synthesized stacks for the stack tests: each configuration variant synthesized once per run.

A full ``app.synth()`` into a temporary directory (not ``Testing.synth``) so cross-stack
references are resolved into outputs and remote-state data sources as in ``cdktf.out/``.
Synthesis runs with recognizable fake credentials planted in every environment variable a
provider or backend could read, so the tests can prove none of them reaches a file.
"""

from __future__ import annotations

import atexit
import copy
import json
import os
import re
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from config import AppConfig, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
STACKS = ("edge", "nomad", "dispatch", "github")
VARIANTS = (
    "example",
    "two-pools",
    "user-owned",
    "many-repositories",
    "docker-in-docker",
    "pinned-runner",
)
MANY_REPOSITORIES = 60
PINNED_RUNNER_IMAGE = "ghcr.io/actions/actions-runner:2.335.1"
PINNED_POOL_RUNNER_IMAGE = "ghcr.io/actions/actions-runner:2.336.0"

# Values a careless stack could copy into its output; none may appear in any synthesized file.
PLANTED_SECRETS = {
    "CLOUDFLARE_API_TOKEN": "planted-cloudflare-api-token-7f3a9",
    "CLOUDFLARE_API_KEY": "planted-cloudflare-api-key-1c2d3",
    "GITHUB_TOKEN": "planted-github-token-ghp-5e6f7",
    "NOMAD_TOKEN": "planted-nomad-token-8a9b0",
    "TF_VAR_github_runner_token": "planted-runner-token-github-pat-4d5e6",
    "TF_VAR_github_read_token": "planted-read-token-github-pat-0a1b2",
    "TF_VAR_github_releases_token": "planted-releases-token-github-pat-3e4f5",
    # The GitHub App's private key (auth = "app"), and the provider's own variable for one.
    "TF_VAR_github_app_private_key": "planted-github-app-private-key-pem-5a6b7",
    "GITHUB_APP_PEM_FILE": "planted-provider-app-pem-file-8c9d0",
    "GH_TOKEN": "planted-gh-cli-token-6a7b8",
    "AWS_SECRET_ACCESS_KEY": "planted-aws-secret-2b3c4",
    "TF_TOKEN_app_terraform_io": "planted-hcp-terraform-token-9c8b7",
}


def variant_config(name: str) -> AppConfig:
    if name == "example-plus-one":
        with (EXAMPLES / "config.toml").open("rb") as handle:
            document = copy.deepcopy(tomllib.load(handle))
        document["github"]["repositories"].append("new-service")
        return parse_config(document, source="example-plus-one")
    if name == "many-repositories":
        with (EXAMPLES / "config.toml").open("rb") as handle:
            document = copy.deepcopy(tomllib.load(handle))
        document["github"]["repositories"] = [
            f"service-{index:03d}" for index in range(MANY_REPOSITORIES)
        ]
        # A paid Workers plan: enough reconciler budget to cover them in fewer runs.
        document["reconcile"] = {"plan": "paid", "request_budget": 400}
        return parse_config(document, source="many-repositories")
    if name == "public-opt-in":
        # The example with one repository served although public, whose fork PRs get runners.
        with (EXAMPLES / "config.toml").open("rb") as handle:
            document = copy.deepcopy(tomllib.load(handle))
        document["github"]["repositories"][1] |= {
            "allow_public": True,
            "fork_pull_requests": "allow",
        }
        return parse_config(document, source="public-opt-in")
    if name == "pinned-runner":
        # Every shipped example follows the newest release; this one pins the official image,
        # once for all pools and once per pool, so the stacks carry the version window check.
        with (EXAMPLES / "config.toml").open("rb") as handle:
            document = copy.deepcopy(tomllib.load(handle))
        document["images"]["runner"] = PINNED_RUNNER_IMAGE
        document["pools"].append(
            {
                "name": "arm64",
                "labels": ["self-hosted", "linux", "arm64"],
                "image": PINNED_POOL_RUNNER_IMAGE,
            }
        )
        return parse_config(document, source="pinned-runner")
    file = "config.toml" if name == "example" else f"{name}.toml"
    return load_config(EXAMPLES / file)


@dataclass(frozen=True)
class Synthesized:
    config: AppConfig
    outdir: Path
    stacks: dict[str, dict[str, Any]]

    def files(self) -> Iterator[Path]:
        return (path for path in sorted(self.outdir.rglob("*")) if path.is_file())


@cache
def synthesized(variant: str) -> Synthesized:
    from main import build_app

    config = variant_config(variant)
    outdir = Path(tempfile.mkdtemp(prefix=f"synth-{variant}-"))
    atexit.register(shutil.rmtree, outdir, True)
    saved = {name: os.environ.get(name) for name in PLANTED_SECRETS}
    os.environ.update(PLANTED_SECRETS)
    try:
        build_app(config, outdir).synth()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    stacks = {
        name: json.loads((outdir / "stacks" / name / "cdk.tf.json").read_text()) for name in STACKS
    }
    return Synthesized(config=config, outdir=outdir, stacks=stacks)


def resources(stack: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = stack.get("resource", {}).get(kind, {})
    return found


def only(stack: dict[str, Any], kind: str) -> dict[str, Any]:
    found = list(resources(stack, kind).values())
    assert len(found) == 1, f"expected exactly one {kind}, found {len(found)}"
    return found[0]


def jobs_by_name(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The stack's nomad_job resources by Nomad job id."""
    from stacks.terraform_text import unescape

    return {
        unescape(job["hcl2"]["vars"]["job_name"]): job
        for job in resources(stack, "nomad_job").values()
    }


def newest_runner_image(stack: dict[str, Any]) -> str:
    """The runner image a pool without a pin gets: the newest release's, resolved at plan."""
    (name,) = stack["data"]["github_release"]
    return (
        "ghcr.io/actions/actions-runner:"
        f'${{trimprefix(data.github_release.{name}.release_tag, "v")}}'
    )


_ASSET_HASH = re.compile(r"assets/runner_scripts/[0-9A-F]{32}")


def masked(stack: dict[str, Any]) -> dict[str, Any]:
    """The stack with values that change for reasons outside the stack masked.

    The Worker's modules, the jobspec text and the scripts asset hash change whenever the
    handler or the runner job changes; their own tests pin them down (decoded modules equal
    ``worker_modules()``, the jobspec text equals the escaped file). The snapshot keeps the
    shape and every value the stacks themselves decide.
    """

    def walk(value: Any, key: str = "") -> Any:
        if key == "modules":
            return "<worker_modules() of handler.bundle, base64>"
        if isinstance(value, dict):
            return {name: walk(item, name) for name, item in value.items()}
        if isinstance(value, list):
            return [walk(item, key) for item in value]
        if isinstance(value, str):
            if key == "jobspec":
                return "<escaped runner_job jobspec file>"
            return _ASSET_HASH.sub("assets/runner_scripts/<hash>", value)
        return value

    result: dict[str, Any] = walk(stack)
    return result


# Terraform references our stacks may contain: meta objects, functions we call, and resource or
# data-source addresses of the stack itself. Anything else after an unescaped "${" is text that
# Terraform would wrongly evaluate (a Nomad "${attr...}" or "${NOMAD_...}", say).
_META_REFERENCES = (
    "var.",
    "data.",
    "local.",
    "each.",
    "terraform.",
    "sha256(",
    "sensitive(data.terraform_remote_state.",
    # The github stack's visibility postcondition (self: the data source instance).
    'contains(["private", "internal"], self.visibility)',
    # The runner image of the newest release, and the version window check's expressions.
    "trimprefix(data.github_release.",
    "can(regex(",
    "length([for release in try(jsondecode(data.github_rest_api.",
    "try(join(",
)
# As HCL reads templates: "${" opens an interpolation unless another "$" precedes it (then one
# "$" is dropped and the rest is literal); the same holds for "%{" and "%".
_INTERPOLATION = re.compile(r"(?<!\$)\$\{([^}]*)")
_DIRECTIVE = re.compile(r"(?<!%)%\{")


def unescaped_interpolations(stack: dict[str, Any]) -> list[str]:
    """Every ``${...}`` Terraform would evaluate that is not one of the stack's own references."""
    own_types = tuple(f"{kind}." for kind in stack.get("resource", {}))
    offenders: list[str] = []

    def walk(value: Any, where: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{where}[{index}]")
        elif isinstance(value, str):
            for match in _INTERPOLATION.finditer(value):
                reference = match.group(1)
                if not reference.startswith(_META_REFERENCES + own_types):
                    offenders.append(f"{where}: ${{{reference}")
            if _DIRECTIVE.search(value):
                offenders.append(f"{where}: unescaped %{{ directive")

    walk(stack, "")
    return offenders
