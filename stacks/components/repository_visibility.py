"""A plan that fails for a served repository that is public, unless the operator opted in.

Self-hosted runners on a public repository run code of people the operator does not know (fork
pull requests once approved; GitHub advises self-hosted runners for private repositories only).
Visibility is not known at synth time, so every served repository without ``allow_public = true``
is read at plan time with the GitHub provider's ``github_repository`` data source (one
``for_each`` data source keyed by repository name, like the webhooks) and a lifecycle
postcondition fails the plan unless its ``visibility`` is ``private`` or ``internal``.

An empty ``visibility`` fails too: provider 6.9.0 leaves every attribute empty when the
repository is not found or the token cannot see it, so a repository whose visibility cannot be
read is never taken for a private one.
"""

from __future__ import annotations

from collections.abc import Sequence

from cdktf import Postcondition, TerraformIterator, TerraformResourceLifecycle, Token
from cdktf_cdktf_provider_github.data_github_repository import DataGithubRepository
from constructs import Construct

from config import RepositoryConfig
from stacks.terraform_text import escape

# Visibilities that admit no outsider: an internal repository is visible to the members of
# its enterprise only.
NOT_PUBLIC = ("private", "internal")
CONDITION = '${contains(["private", "internal"], self.visibility)}'
ERROR_MESSAGE = (
    "This repository is public (or its visibility cannot be read with the GITHUB_TOKEN): "
    "self-hosted runners on a public repository run code of anyone whose workflow run is "
    "approved, fork pull requests included. Make it private, remove it from "
    "github.repositories, or set allow_public = true on it in the configuration "
    "(see the README's threat model)."
)


class RepositoryVisibilityGuard(Construct):
    def __init__(
        self, scope: Construct, id: str, *, repositories: Sequence[RepositoryConfig]
    ) -> None:
        super().__init__(scope, id)
        checked = {repo.name: repo.full_name for repo in repositories if not repo.allow_public}
        self.checked = tuple(checked)
        self.repositories: DataGithubRepository | None = None
        if not checked:
            return
        each = TerraformIterator.from_map(
            {name: {"full_name": escape(full_name)} for name, full_name in checked.items()}
        )
        self.repositories = DataGithubRepository(
            self,
            "repository",
            for_each=each,
            full_name=Token.as_string(each.get_string("full_name")),
            lifecycle=TerraformResourceLifecycle(
                postcondition=[Postcondition(condition=CONDITION, error_message=ERROR_MESSAGE)]
            ),
        )
        # A readable plan address: data.github_repository.not_public["<repository>"].
        self.repositories.override_logical_id("not_public")
