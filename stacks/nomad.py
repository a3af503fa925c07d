"""Nomad: the runner namespace, the Worker's dispatch-only token, credentials and jobs.

Takes the tunnel token from the edge stack (a cdktf reference) and the GitHub credential from
the sensitive Terraform variable ``github_runner_token`` (``TF_VAR_github_runner_token``), or,
with ``[github] auth = "app"``, the App's private key from ``github_app_private_key``
(``TF_VAR_github_app_private_key``), and exposes ``dispatch_token_secret`` to the dispatch
stack (and, as a sensitive output with a stable name, to ``doctor``). The Nomad provider reads
its own token from ``NOMAD_TOKEN``.

The runner image of a pool without a pin is the newest actions/runner release, read from
github.com at plan time; pinned official images get a plan-time check against GitHub's version
window (``stacks.components.runner_release``). Both go through a GitHub provider aimed at
github.com, with the optional ``github_releases_token`` (``TF_VAR_github_releases_token``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from cdktf import (
    AssetType,
    Fn,
    TerraformAsset,
    TerraformOutput,
    TerraformStack,
    TerraformVariable,
)
from cdktf_cdktf_provider_github.provider import GithubProvider
from cdktf_cdktf_provider_nomad.provider import NomadProvider
from constructs import Construct

from config import AppConfig, runner_version
from doctor.state import DISPATCH_TOKEN_OUTPUT
from runner_job import SCRIPTS_DIR
from stacks.backend import declare_backend
from stacks.components.cloudflared_job import CloudflaredJob
from stacks.components.prewarm_job import PrewarmJob
from stacks.components.runner_namespace import RunnerNamespace
from stacks.components.runner_pool_job import RunnerPoolJob
from stacks.components.runner_release import NewestRunnerRelease, RunnerVersionWindowCheck

GITHUB_RUNNER_TOKEN_VARIABLE = "github_runner_token"
GITHUB_APP_PRIVATE_KEY_VARIABLE = "github_app_private_key"
GITHUB_RELEASES_TOKEN_VARIABLE = "github_releases_token"
# actions/runner is on github.com, whichever GitHub the runners serve.
GITHUB_DOT_COM_API = "https://api.github.com/"
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
        credential = self._runner_credential(config)
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
        runner_images = self._runner_images(config)
        for pool in config.pools:
            RunnerPoolJob(
                self,
                f"pool_{pool.name}",
                pool=pool,
                nomad=config.nomad,
                runner_image=runner_images[pool.name],
                images=config.images,
                namespace=namespace.name,
                scripts_dir=scripts.path,
                github=config.github,
                credential=credential,
            )
            if pool.prewarm:
                PrewarmJob(
                    self,
                    f"prewarm_{pool.name}",
                    pool=pool,
                    nomad=config.nomad,
                    runner_image=runner_images[pool.name],
                    images=config.images,
                    namespace=namespace.name,
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
        TerraformOutput(
            self,
            DISPATCH_TOKEN_OUTPUT,
            value=namespace.dispatch_token_secret,
            sensitive=True,
            description="Read by doctor (python -m doctor): what the Worker's token may do.",
        )

    def _runner_credential(self, config: AppConfig) -> str:
        """The sensitive variable the runner tasks' credential comes from: the runner token, or
        the GitHub App's private key (from which each task mints an installation token)."""
        if config.github.auth == "app":
            return app_private_key_variable(self, config).string_value
        scope = (
            'organization permission "Self-hosted runners: read and write"'
            if config.github.runner_scope == "organization"
            else "repository permission Administration read and write, on the configured "
            "repositories only"
        )
        return TerraformVariable(
            self,
            GITHUB_RUNNER_TOKEN_VARIABLE,
            type="string",
            sensitive=True,
            nullable=False,
            description=(
                "GitHub token that mints just-in-time runner configs and removes runners: "
                f"fine-grained, {scope}. Set TF_VAR_github_runner_token."
            ),
        ).string_value

    def _runner_images(self, config: AppConfig) -> dict[str, str]:
        """Each pool's runner image: its pin, or the newest release's image (an expression).

        Declares the github.com provider, the newest-release lookup and the version window
        check only where a pool needs them.
        """
        chosen = {pool.name: config.runner_image(pool) for pool in config.pools}
        pins: dict[tuple[int, int, int], list[str]] = {}
        for index, pool in enumerate(config.pools):
            image = chosen[pool.name]
            version = None if image is None else runner_version(image)
            if version is not None:
                field = f"pools[{index}].image" if pool.image else "images.runner"
                pins.setdefault(version, []).append(f"{field}, pool {pool.name}")
        follows = None in chosen.values()
        if not follows and not pins:
            return {name: image for name, image in chosen.items() if image is not None}
        releases_token = TerraformVariable(
            self,
            GITHUB_RELEASES_TOKEN_VARIABLE,
            type="string",
            sensitive=True,
            nullable=False,
            default="",
            description=(
                "Optional github.com token used only to read the public actions/runner "
                "releases (no permission needed: a fine-grained token with public repositories "
                "read-only will do). Empty: the GitHub provider falls back to the GitHub CLI's "
                "github.com token if gh is installed, else reads anonymously (60 requests per "
                "hour per IP address). Set TF_VAR_github_releases_token."
            ),
        )
        github = GithubProvider(
            self,
            "runner_releases",
            alias="runner_releases",
            base_url=GITHUB_DOT_COM_API,
            # Explicit, even when empty: left unset, the provider would take GITHUB_TOKEN, which
            # is the hooks token of the configured GitHub (a GHES token there).
            token=releases_token.string_value,
        )
        if pins:
            RunnerVersionWindowCheck(self, "runner_version_window", provider=github, pins=pins)
        newest = (
            NewestRunnerRelease(self, "newest_runner_release", provider=github).image
            if follows
            else ""
        )
        return {name: image or newest for name, image in chosen.items()}


def app_private_key_variable(stack: TerraformStack, config: AppConfig) -> TerraformVariable:
    """The GitHub App's PEM private key, a sensitive variable (each stack that needs it asks)."""
    return TerraformVariable(
        stack,
        GITHUB_APP_PRIVATE_KEY_VARIABLE,
        type="string",
        sensitive=True,
        nullable=False,
        description=(
            f"Private key (PEM, as GitHub downloads it) of the GitHub App {config.github.app_id}, "
            f"installation {config.github.installation_id}: the only secret of App "
            "authentication, kept in Terraform state and where the stack puts it, never in the "
            "configuration. Set TF_VAR_github_app_private_key, e.g. "
            '"$(cat my-app.private-key.pem)".'
        ),
    )
