"""The dispatch Worker on Cloudflare, with everything it is bound to.

Takes the Nomad API URL and the Access service token from the edge stack and the dispatch-only
Nomad token from the nomad stack (all as cdktf references), generates the webhook secret key
(``random_password``, never in any file), and exposes ``webhook_hostname`` and
``webhook_secret_key`` to the github stack. It also generates the bearer token ``GET /status``
requires, handed to the Worker as ``STATUS_TOKEN`` and to the operator as the sensitive output
``status_token``. The GitHub read token (reconciler and fork check) is the sensitive Terraform
variable ``github_read_token`` (``TF_VAR_github_read_token``); with ``[github] auth = "app"``
the Worker gets the App's id, installation id and private key instead (the sensitive variable
``github_app_private_key``, ``TF_VAR_github_app_private_key``) and mints its own installation
token.
"""

from __future__ import annotations

from cdktf import Fn, TerraformOutput, TerraformStack, TerraformVariable
from cdktf_cdktf_provider_cloudflare.provider import CloudflareProvider
from cdktf_cdktf_provider_random.password import Password
from cdktf_cdktf_provider_random.provider import RandomProvider
from constructs import Construct

from config import AppConfig
from handler.contract import (
    ACCESS_CLIENT_ID_BINDING,
    ACCESS_CLIENT_SECRET_BINDING,
    GITHUB_API_URL_BINDING,
    GITHUB_APP_ID_BINDING,
    GITHUB_APP_INSTALLATION_ID_BINDING,
    GITHUB_APP_PRIVATE_KEY_BINDING,
    GITHUB_READ_TOKEN_BINDING,
    NOMAD_ADDR_BINDING,
    NOMAD_TOKEN_BINDING,
    RECONCILE_PLAN_BINDING,
    RECONCILE_REQUEST_BUDGET_BINDING,
    ROUTING_BINDING,
    STATUS_TOKEN_BINDING,
    WEBHOOK_SECRET_KEY_BINDING,
    worker_bindings,
)
from stacks.backend import declare_backend
from stacks.components.dispatch_worker import DispatchWorker
from stacks.nomad import app_private_key_variable
from stacks.terraform_text import escape

GITHUB_READ_TOKEN_VARIABLE = "github_read_token"


class DispatchStack(TerraformStack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: AppConfig,
        nomad_api_url: str,
        nomad_token: str,
        access_client_id: str,
        access_client_secret: str,
    ) -> None:
        super().__init__(scope, id)
        declare_backend(self, config.backend, id)
        CloudflareProvider(self, "cloudflare")
        RandomProvider(self, "random")
        # One key for all repositories: each hook's secret is sha256("{key}:{owner/repo}"), so
        # adding a repository adds no binding and one leaked hook secret forges nothing else.
        webhook_key = Password(self, "webhook_secret_key", length=64, special=False)
        # GET /status answers only "Authorization: Bearer <this>": the operator reads it with
        # `terraform output -raw status_token` in this stack's directory (sensitive).
        status_token = Password(self, "status_token", length=48, special=False)
        status_output = TerraformOutput(
            self,
            "status_token_output",  # construct ids are unique per stack; the output's own name:
            value=status_token.result,
            sensitive=True,
            description="Bearer token for GET /status on the webhook hostname.",
        )
        status_output.override_logical_id("status_token")
        github_bindings = self._github_read(config)
        cloudflare = config.cloudflare
        worker = DispatchWorker(
            self,
            "dispatch_worker",
            account_id=cloudflare.account_id,
            zone_id=cloudflare.zone_id,
            name=f"{cloudflare.resource_prefix}-dispatch",
            hostname=cloudflare.webhook_hostname,
            text_bindings={
                ROUTING_BINDING: escape(config.routing().to_json()),
                NOMAD_ADDR_BINDING: nomad_api_url,
                # Cross-stack secrets: Terraform drops their sensitive mark through
                # terraform_remote_state, so mark them again for plans and PR diffs.
                NOMAD_TOKEN_BINDING: Fn.sensitive(nomad_token),
                ACCESS_CLIENT_ID_BINDING: Fn.sensitive(access_client_id),
                ACCESS_CLIENT_SECRET_BINDING: Fn.sensitive(access_client_secret),
                WEBHOOK_SECRET_KEY_BINDING: webhook_key.result,
                GITHUB_API_URL_BINDING: escape(config.github.api_url),
                **github_bindings,
                RECONCILE_REQUEST_BUDGET_BINDING: str(config.reconcile.request_budget),
                STATUS_TOKEN_BINDING: status_token.result,
                RECONCILE_PLAN_BINDING: config.reconcile.plan,
            },
            # How often the reconciler looks for queued jobs a webhook did not serve.
            cron_schedules=[config.reconcile.cron],
            binding_specs=worker_bindings(config.github.auth),
        )
        self.webhook_hostname = worker.hostname
        self.webhook_secret_key = webhook_key.result

    def _github_read(self, config: AppConfig) -> dict[str, str]:
        """The bindings the Worker reads GitHub with: the read token, or the App's."""
        github = config.github
        if github.auth == "app":
            return {
                GITHUB_APP_ID_BINDING: str(github.app_id),
                GITHUB_APP_INSTALLATION_ID_BINDING: str(github.installation_id),
                GITHUB_APP_PRIVATE_KEY_BINDING: app_private_key_variable(self, config).string_value,
            }
        token = TerraformVariable(
            self,
            GITHUB_READ_TOKEN_VARIABLE,
            type="string",
            sensitive=True,
            nullable=False,
            description=(
                "GitHub token the Worker lists queued runs and jobs with (reconciler) and "
                "looks a job's run up with before dispatching it (fork check): fine-grained, "
                "repository permission Actions read, on the configured repositories only. "
                "Set TF_VAR_github_read_token."
            ),
        )
        return {GITHUB_READ_TOKEN_BINDING: token.string_value}
