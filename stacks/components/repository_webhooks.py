"""One ``workflow_job`` webhook per repository, as a single ``for_each`` resource.

Each hook lives at ``github_repository_webhook.<id>["<repository>"]``: keyed by repository name,
so adding or removing one repository plans exactly one change and never touches another. One
``for_each`` resource rather than one resource per repository because synth time stays flat as
repositories grow (see bench/synth_scaling.py) and the plan shows the repository name as the key.

Each hook posts to ``https://{host}/webhook/{owner}/{repo}`` (``handler.contract.webhook_path``)
with the secret ``sha256("{key}:{owner/repo lower-cased}")`` computed by Terraform, the same
derivation as ``handler.contract.webhook_secret_for``, so the key never leaves Terraform state.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import Fn, TerraformIterator, Token
from cdktf_cdktf_provider_github.repository_webhook import (
    RepositoryWebhook,
    RepositoryWebhookConfiguration,
)
from constructs import Construct

from config import RepositoryConfig
from handler.contract import webhook_path
from stacks.terraform_text import escape

EVENTS = ("workflow_job",)


class RepositoryWebhooks(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repositories: Sequence[RepositoryConfig],
        webhook_hostname: str,
        secret_key: str,
    ) -> None:
        super().__init__(scope, id)
        hooks = {
            repo.name: {
                "repository": repo.name,
                "url_path": webhook_path(repo.full_name),
                "secret_subject": repo.full_name.lower(),
            }
            for repo in repositories
        }
        each = TerraformIterator.from_map(
            {
                name: {key: escape(value) for key, value in hook.items()}
                for name, hook in hooks.items()
            }
        )
        secret_subject = Token.as_string(each.get_string("secret_subject"))
        self.webhooks = RepositoryWebhook(
            self,
            "webhook",
            for_each=each,
            repository=Token.as_string(each.get_string("repository")),
            events=list(EVENTS),
            active=True,
            configuration=RepositoryWebhookConfiguration(
                url=f"https://{webhook_hostname}{Token.as_string(each.get_string('url_path'))}",
                content_type="json",
                insecure_ssl=False,  # TLS verification on
                secret=Fn.sha256(f"{secret_key}:{secret_subject}"),
            ),
        )
        # A readable plan address: github_repository_webhook.workflow_job["<repository>"].
        self.webhooks.override_logical_id("workflow_job")
