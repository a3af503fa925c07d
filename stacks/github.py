"""GitHub: the ``workflow_job`` webhook of every configured repository.

Takes the Worker's hostname and the webhook secret key from the dispatch stack (cdktf
references, so hooks are created only once the Worker answers). The GitHub provider reads its
credential from ``GITHUB_TOKEN``; ``owner`` comes from the configuration.
"""

from __future__ import annotations

from cdktf import TerraformStack
from cdktf_cdktf_provider_github.provider import GithubProvider
from constructs import Construct

from config import AppConfig
from stacks.backend import declare_backend
from stacks.components.repository_webhooks import RepositoryWebhooks

_PUBLIC_API = "https://api.github.com"


class GitHubStack(TerraformStack):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: AppConfig,
        webhook_hostname: str,
        webhook_secret_key: str,
    ) -> None:
        super().__init__(scope, id)
        declare_backend(self, config.backend, id)
        github = config.github
        GithubProvider(
            self,
            "github",
            owner=github.owner,
            # GitHub Enterprise Server: the provider wants the API base URL with a trailing slash.
            base_url=None if github.api_url == _PUBLIC_API else f"{github.api_url}/",
        )
        self.webhooks = RepositoryWebhooks(
            self,
            "repository_webhooks",
            repositories=github.repositories,
            webhook_hostname=webhook_hostname,
            secret_key=webhook_secret_key,
        )
