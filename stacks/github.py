"""GitHub: the ``workflow_job`` webhook of every configured repository, and a guard on visibility.

Takes the Worker's hostname and the webhook secret key from the dispatch stack (cdktf
references, so hooks are created only once the Worker answers). The GitHub provider reads its
credential from ``GITHUB_TOKEN``, or with ``[github] auth = "app"`` authenticates as the App's
installation (its own ``app_auth`` block: id, installation id, and the PEM key from the
sensitive variable ``github_app_private_key``); ``owner`` comes from the configuration.

Public repositories: the plan fails for a served repository that is public unless it has
``allow_public = true`` (:mod:`stacks.components.repository_visibility`), and synth warns
(:func:`exposure_warnings`, as cdktf annotations, which the cdktf CLI prints, and on stderr from
``main.py``) about every repository served although public, or whose fork pull requests get
runners.
"""

from __future__ import annotations

from cdktf import Annotations, Fn, TerraformStack
from cdktf_cdktf_provider_github.provider import GithubProvider, GithubProviderAppAuth
from constructs import Construct

from config import AppConfig
from handler.contract import FORK_POLICY_ALLOW
from stacks.backend import declare_backend
from stacks.components.repository_visibility import RepositoryVisibilityGuard
from stacks.components.repository_webhooks import RepositoryWebhooks
from stacks.nomad import app_private_key_variable

_PUBLIC_API = "https://api.github.com"
_SERVER_API_PATH = "/api/v3"


def provider_base_url(api_url: str) -> str | None:
    """The GitHub provider's ``base_url`` for the REST API root ``api_url`` (no trailing slash).

    The provider appends ``api/v3/`` to any base URL but github.com's (and GHE.com's
    ``api.<name>.ghe.com``), so a GitHub Enterprise Server is given its host root, not the API
    URL the Worker and the runner tasks call.
    """
    if api_url == _PUBLIC_API:
        return None
    if api_url.endswith(_SERVER_API_PATH):
        api_url = api_url[: -len(_SERVER_API_PATH)]
    return f"{api_url}/"


def exposure_warnings(config: AppConfig) -> list[str]:
    """What synth can tell about who may run code on the runners (visibility it cannot tell)."""
    warnings = []
    for repo in config.github.repositories:
        if repo.allow_public:
            warnings.append(
                f"{repo.full_name}: allow_public = true: served although it may be public; "
                "anyone whose workflow run is approved runs code on your runners"
            )
        if repo.fork_pull_requests == FORK_POLICY_ALLOW:
            warnings.append(
                f"{repo.full_name}: fork_pull_requests = 'allow': jobs of pull requests from "
                "forks get runners (their authors' code runs on your Nomad nodes)"
            )
    return warnings


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
        app_auth = None
        if github.auth == "app":
            app_auth = GithubProviderAppAuth(
                id=str(github.app_id),
                installation_id=str(github.installation_id),
                pem_file=app_private_key_variable(self, config).string_value,
            )
        GithubProvider(
            self,
            "github",
            owner=github.owner,
            base_url=provider_base_url(github.api_url),
            app_auth=app_auth,
        )
        self.visibility = RepositoryVisibilityGuard(
            self, "repository_visibility", repositories=github.repositories
        )
        for warning in exposure_warnings(config):
            Annotations.of(self).add_warning(warning)
        self.webhooks = RepositoryWebhooks(
            self,
            "repository_webhooks",
            repositories=github.repositories,
            webhook_hostname=webhook_hostname,
            # Read through terraform_remote_state, which drops the sensitive mark: restore it.
            secret_key=Fn.sensitive(webhook_secret_key),
        )
