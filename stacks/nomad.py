"""Nomad: the runner namespace, the Worker's dispatch-only token, credentials and jobs.

Takes the tunnel token from the edge stack (a cdktf reference) and the GitHub credential from
the sensitive Terraform variable ``github_runner_token`` (``TF_VAR_github_runner_token``), and
exposes ``dispatch_token_secret`` to the dispatch stack. The Nomad provider reads its own token
from ``NOMAD_TOKEN``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from cdktf import AssetType, Fn, TerraformAsset, TerraformStack, TerraformVariable
from cdktf_cdktf_provider_nomad.provider import NomadProvider
from constructs import Construct

from config import AppConfig
from runner_job import SCRIPTS_DIR
from stacks.backend import declare_backend
from stacks.components.cloudflared_job import CloudflaredJob
from stacks.components.runner_namespace import RunnerNamespace
from stacks.components.runner_pool_job import RunnerPoolJob

GITHUB_RUNNER_TOKEN_VARIABLE = "github_runner_token"
# What the jobspec reads from the scripts directory; caches and editor files stay behind (a
# compiled .pyc embeds this machine's paths and would change the asset hash on every checkout).
_SHIPPED_SUFFIXES = (".py", ".sh")


def _staged_scripts() -> Path:
    """A clean copy of runner_job/scripts holding only the task scripts, removed at exit."""
    staging = Path(tempfile.mkdtemp(prefix="runner-scripts-"))
    atexit.register(shutil.rmtree, staging, True)
    for source in sorted(SCRIPTS_DIR.iterdir()):
        if source.is_file() and source.suffix in _SHIPPED_SUFFIXES:
            shutil.copy2(source, staging / source.name)
    return staging


class NomadStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, config: AppConfig, tunnel_token: str) -> None:
        super().__init__(scope, id)
        declare_backend(self, config.backend, id)
        NomadProvider(self, "nomad", address=config.nomad.address)
        github_token = TerraformVariable(
            self,
            GITHUB_RUNNER_TOKEN_VARIABLE,
            type="string",
            sensitive=True,
            nullable=False,
            description=(
                "GitHub token that mints just-in-time runner configs and removes runners: "
                "fine-grained, repository permission Administration read and write, on the "
                "configured repositories only. Set TF_VAR_github_runner_token."
            ),
        )
        namespace = RunnerNamespace(
            self,
            "runner_namespace",
            namespace=config.nomad.namespace,
            name_prefix=config.cloudflare.resource_prefix,
        )
        # Copied next to the stack's Terraform files; the path is relative to that directory,
        # which is where the provider's file() resolves it.
        scripts = TerraformAsset(
            self, "runner_scripts", path=str(_staged_scripts()), type=AssetType.DIRECTORY
        )
        for pool in config.pools:
            RunnerPoolJob(
                self,
                f"pool_{pool.name}",
                pool=pool,
                nomad=config.nomad,
                images=config.images,
                github_api_url=config.github.api_url,
                namespace=namespace.name,
                scripts_dir=scripts.path,
                github_token=github_token.string_value,
            )
        # Terraform drops the sensitive mark from values read through terraform_remote_state; mark
        # them again so plans (and the cdktf diff posted on pull requests) never print them.
        CloudflaredJob(
            self,
            "cloudflared",
            nomad=config.nomad,
            images=config.images,
            namespace=namespace.name,
            tunnel_token=Fn.sensitive(tunnel_token),
        )
        self.dispatch_token_secret = namespace.dispatch_token_secret
