"""doctor with ``[github] auth = "app"`` and with ``runner_scope = "organization"``.

The same healthy installation as tests/test_doctor.py, with the three GitHub tokens replaced by
one App installation on the GitHub stand-in: the App's key pair comes from ``openssl`` at test
time (tests/app_keys.py), doctor signs its JWT with the ``openssl`` CLI and the stand-in checks
it with the public half, as GitHub does. Each check passes on the healthy installation and
fails, with its fix, on the broken part; the key never reaches doctor's output.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import pytest

from config import AppConfig
from doctor import checks
from doctor.checks import Context, Outcome
from doctor.cli import run
from doctor.github_app import APP_KEY_ENV
from doctor.web import UrllibHttp
from tests.app_keys import app_key
from tests.standins.github import JWT_EXP_TOO_FAR
from tests.standins.github import Installation as AppInstallation
from tests.test_doctor import (  # noqa: F401 (installation: the fixture this file builds on)
    CONFIG,
    SECRETS,
    Installation,
    assert_no_secret,
    full_run,
    installation,
)

APP_ID = 123456
INSTALLATION_ID = 98765432
GROUP_ID = 4
ORG = CONFIG.github.owner
REPOS = [repo.full_name for repo in CONFIG.github.repositories]


def app_config(scope: str = "organization") -> AppConfig:
    github = CONFIG.github.model_copy(
        update={
            "auth": "app",
            "app_id": APP_ID,
            "installation_id": INSTALLATION_ID,
            "runner_scope": scope,
        }
    )
    group = GROUP_ID if scope == "organization" else 1
    pools = tuple(pool.model_copy(update={"runner_group_id": group}) for pool in CONFIG.pools)
    return CONFIG.model_copy(update={"github": github, "pools": pools})


def org_grants() -> dict[str, object]:
    repositories: dict[str, object] = {
        name.lower(): frozenset({"actions_read", "hooks"}) for name in REPOS
    }
    return repositories | {f"org:{ORG}": "org_runners"}


def repo_grants() -> dict[str, object]:
    return {name.lower(): frozenset({"admin", "actions_read", "hooks"}) for name in REPOS}


@pytest.fixture
def app(installation: Installation) -> Installation:  # noqa: F811 (the imported fixture)
    """The installation with an App, organization runners and a group of the served repos."""
    installation.config = app_config()
    installation.github.apps[APP_ID] = app_key().public_pem
    installation.github.installations[INSTALLATION_ID] = AppInstallation(APP_ID, org_grants())
    installation.github.add_runner_group(GROUP_ID, "nomad-runners", repositories=tuple(REPOS))
    for name in ("TF_VAR_github_runner_token", "TF_VAR_github_read_token", "GITHUB_TOKEN"):
        del installation.env[name]
    installation.env[APP_KEY_ENV] = app_key().private_pem.decode()
    return installation


@pytest.fixture
def repo_app(app: Installation) -> Installation:
    """The App with repository runners (Administration instead of Self-hosted runners)."""
    app.config = app_config("repository")
    app.github.installations[INSTALLATION_ID] = AppInstallation(APP_ID, repo_grants())
    return app


def the_installation(app: Installation) -> AppInstallation:
    return app.github.installations[INSTALLATION_ID]


def assert_no_key(text: str) -> None:
    key = app_key()
    assert key.private_pem.decode().strip() not in text
    for line in key.body_lines():
        assert line not in text
    assert_no_secret(text)


class TestWholeRun:
    def test_a_healthy_app_installation_passes_with_one_minted_token(self, app):
        status, text = full_run(app)
        assert status == 0, text
        assert "GitHub: App installation" in text and "GitHub: runner groups" in text
        # The tokens' checks have nothing to say without tokens.
        assert "GitHub: runner token" not in text and "GitHub: read token" not in text
        posts = app.github.calls("POST")
        assert [request.path for request in posts] == [
            f"/app/installations/{INSTALLATION_ID}/access_tokens"
        ]
        assert {request.method for request in app.github.requests} == {"GET", "POST"}
        assert_no_key(text)
        for token in app.github.issued:
            assert token not in text

    def test_the_jwt_is_the_workers_own_framing(self, app):
        full_run(app)
        (jwt,) = app.github.jwts
        assert jwt["header"] == {"alg": "RS256", "typ": "JWT"}
        claims = jwt["claims"]
        assert claims["iss"] == str(APP_ID)
        assert claims["exp"] - claims["iat"] == 600  # 60 s back, 9 minutes on

    def test_the_key_is_never_printed_when_everything_fails(self, app):
        """The App's key is another App's, Nomad refuses everything: no key line in the report."""
        app.github.apps[APP_ID] = app_key("another").public_pem
        app.nomad.acl_tokens.clear()
        app.nomad.token = "another-management-token"
        status, text = full_run(app)
        assert status == 1 and "GitHub refused the App's JWT" in text
        assert_no_key(text)

    def test_a_line_of_the_key_is_redacted_even_if_no_check_reads_the_key(self, app):
        """The report knows the key (and each of its lines) from the start."""
        line = app_key().body_lines()[3]

        def echo(ctx: Context) -> Iterator[Outcome]:
            yield checks.failed("echo", f"key line {line}", "none")

        out = io.StringIO()
        run(app.context(), out, [("echo", echo)])
        assert line not in out.getvalue() and "key line [redacted]" in out.getvalue()

    def test_the_minted_token_is_redacted(self, app):
        def echo(ctx: Context) -> Iterator[Outcome]:
            minted = checks._installation_token(ctx)
            yield checks.failed("echo", f"token {minted.token}", "none")  # type: ignore[union-attr]

        out = io.StringIO()
        run(app.context(), out, [("echo", echo)])
        assert out.getvalue().count("token [redacted]") == 1
        assert SECRETS  # the token fixture's secrets stay covered too


class TestMint:
    def outcome(self, app: Installation) -> Outcome:
        return app.the_outcome(checks.check_github_app, "mints a token")

    def test_passes(self, app):
        outcome = self.outcome(app)
        assert outcome.passed and "repository access: selected" in outcome.detail

    def test_no_key(self, app):
        del app.env[APP_KEY_ENV]
        outcome = self.outcome(app)
        assert not outcome.passed and outcome.detail == f"{APP_KEY_ENV} is not set"
        assert not app.github.requests
        # The hooks check points at this one instead of failing on its own.
        hooks = app.outcomes(checks.check_hooks)
        assert hooks and all("GitHub App check above" in o.fix for o in hooks)

    def test_not_a_pem_key(self, app):
        app.env[APP_KEY_ENV] = "ghp_a-token-where-the-key-should-be"
        outcome = self.outcome(app)
        assert not outcome.passed and "expected a PEM private key" in outcome.detail
        assert not app.github.requests

    def test_a_pem_block_that_is_no_rsa_key(self, app):
        junk = base64.b64encode(b"\x30\x03\x02\x01\x00" * 40).decode()
        app.env[APP_KEY_ENV] = (
            f"-----BEGIN RSA PRIVATE KEY-----\n{junk}\n-----END RSA PRIVATE KEY-----"
        )
        outcome = self.outcome(app)
        assert not outcome.passed and "openssl could not sign" in outcome.detail
        assert "as downloaded from its settings" in outcome.fix
        assert junk[:64] not in outcome.detail + outcome.fix

    def test_the_key_with_escaped_newlines_works_as_in_the_worker(self, app):
        app.env[APP_KEY_ENV] = app_key().private_pem.decode().replace("\n", "\\n")
        assert self.outcome(app).passed

    def test_a_key_of_another_app_is_refused(self, app):
        app.github.apps[APP_ID] = app_key("another").public_pem
        outcome = self.outcome(app)
        assert not outcome.passed and "401" in outcome.detail
        assert f"is not a key of App {APP_ID}" in outcome.fix
        assert "deploy nomad, dispatch and github" in outcome.fix

    def test_a_clock_ahead_is_named(self, app):
        ctx = app.context()
        ctx.clock = lambda: time.time() + 1200
        outcome = next(iter(checks.check_github_app(ctx)))
        assert not outcome.passed and JWT_EXP_TOO_FAR in outcome.detail
        assert "clock is off" in outcome.fix

    def test_a_wrong_installation_id(self, app):
        github = app.config.github.model_copy(update={"installation_id": INSTALLATION_ID + 1})
        app.config = app.config.model_copy(update={"github": github})
        outcome = self.outcome(app)
        assert not outcome.passed and "404" in outcome.detail
        assert f"has no installation {INSTALLATION_ID + 1}" in outcome.fix

    def test_a_revoked_installation(self, app):
        app.github.revoke_installation(INSTALLATION_ID)
        outcome = self.outcome(app)
        assert not outcome.passed and "uninstalled or suspended" in outcome.fix


class TestPermissions:
    def test_organization_scope_needs_self_hosted_runners_actions_and_webhooks(self, app):
        parts = {o.part: o for o in app.outcomes(checks.check_github_app) if "grants" in o.part}
        assert sorted(parts) == [
            "App grants Terraform's github stack Repository: Webhooks: Read and write",
            "App grants the Worker (reconciler, fork check) Repository: Actions: Read-only",
            "App grants the register/deregister tasks Organization: Self-hosted runners: Read and "
            "write",
        ]
        assert all(outcome.passed for outcome in parts.values())

    def test_organization_scope_without_self_hosted_runners(self, app):
        del the_installation(app).grants[f"org:{ORG}"]
        outcome = app.the_outcome(checks.check_github_app, "Self-hosted runners")
        assert not outcome.passed
        assert "no organization_self_hosted_runners permission" in outcome.detail
        assert "accept the new permissions on the installation" in outcome.fix

    def test_repository_scope_needs_administration_write(self, repo_app):
        assert repo_app.the_outcome(checks.check_github_app, "Administration").passed
        the_installation(repo_app).permissions = {
            "administration": "read",
            "actions": "read",
            "repository_hooks": "write",
            "metadata": "read",
        }
        outcome = repo_app.the_outcome(checks.check_github_app, "Administration")
        assert not outcome.passed
        assert "administration: read (repository scope needs write)" in outcome.detail

    def test_read_only_webhooks_are_not_enough_for_terraform(self, app):
        the_installation(app).permissions = {
            "organization_self_hosted_runners": "write",
            "actions": "write",  # more than read is fine
            "repository_hooks": "read",
        }
        outcomes = app.outcomes(checks.check_github_app)
        webhooks = next(o for o in outcomes if "Webhooks" in o.part)
        actions = next(o for o in outcomes if "Actions" in o.part)
        assert not webhooks.passed and "repository_hooks: read" in webhooks.detail
        assert actions.passed


class TestInstallationRepositories:
    def test_every_served_repository_is_included(self, app):
        outcomes = [o for o in app.outcomes(checks.check_github_app) if "includes" in o.part]
        assert [o.part for o in outcomes] == [f"App installation includes {name}" for name in REPOS]
        assert all(outcome.passed for outcome in outcomes)

    def test_a_served_repository_outside_the_installation(self, app):
        del the_installation(app).grants["example-org/api"]
        outcome = app.the_outcome(checks.check_github_app, "includes example-org/api")
        assert not outcome.passed and "no role can reach it" in outcome.detail
        assert "Repository access: Only select repositories" in outcome.fix

    def test_many_repositories_are_read_page_by_page(self, app):
        grants = the_installation(app).grants
        for index in range(150):
            grants[f"example-org/other-{index:03d}"] = "actions_read"
        assert all(o.passed for o in app.outcomes(checks.check_github_app))
        pages = [r.path for r in app.github.requests if r.path.startswith("/installation/")]
        assert len(pages) == 2 and pages[1].endswith("page=2")


class TestHooksWithTheApp:
    def test_hooks_are_read_with_the_installation_token(self, app):
        outcomes = app.outcomes(checks.check_hooks)
        assert len(outcomes) == 6 and all(outcome.passed for outcome in outcomes)
        assert outcomes[0].part == f"App installation token reads the hooks of {REPOS[0]}"
        hook_reads = [r for r in app.github.requests if "/hooks" in r.path]
        tokens = {r.headers["authorization"].partition(" ")[2] for r in hook_reads}
        assert tokens and tokens <= set(app.github.issued)

    def test_without_webhooks_the_hooks_check_points_at_the_app_check(self, app):
        for name in REPOS:
            the_installation(app).grants[name.lower()] = "actions_read"
        outcome = app.the_outcome(checks.check_hooks, f"hooks of {REPOS[0]}")
        assert not outcome.passed and "403" in outcome.detail
        assert f"Repository Webhooks, and {REPOS[0]} in its installation" in outcome.fix


class TestRunnerGroups:
    def outcome(self, app: Installation) -> Outcome:
        return app.the_outcome(checks.check_runner_groups, f"runner group {GROUP_ID}")

    def test_a_group_of_exactly_the_served_repositories(self, app):
        outcome = self.outcome(app)
        assert outcome.passed, outcome
        assert outcome.detail == (
            "runner group 4 (nomad-runners) admits the selected 2 private repositories"
        )

    def test_repository_scope_has_no_group_to_check(self, repo_app):
        assert repo_app.outcomes(checks.check_runner_groups) == []

    def test_the_default_group_admits_every_repository(self, app):
        pools = tuple(pool.model_copy(update={"runner_group_id": 1}) for pool in app.config.pools)
        app.config = app.config.model_copy(update={"pools": pools})
        outcome = app.the_outcome(checks.check_runner_groups, "runner group 1")
        assert not outcome.passed
        assert "admits every repository of example-org (Repository access: all)" in outcome.detail
        assert "Selected repositories" in outcome.fix and "Default group" in outcome.fix

    def test_a_group_of_every_private_repository(self, app):
        app.github.group_settings[GROUP_ID].visibility = "private"
        outcome = self.outcome(app)
        assert not outcome.passed and "every private repository" in outcome.detail

    def test_a_group_that_allows_public_repositories(self, app):
        app.github.group_settings[GROUP_ID].allows_public_repositories = True
        outcome = self.outcome(app)
        assert not outcome.passed and "allows public repositories" in outcome.detail
        assert "'Allow public repositories' unticked" in outcome.fix

    def test_a_served_repository_the_group_does_not_admit(self, app):
        app.github.group_settings[GROUP_ID].repositories = [REPOS[0]]
        outcome = self.outcome(app)
        assert not outcome.passed
        assert f"does not admit {REPOS[1]}: their jobs never get these runners" in outcome.detail

    def test_other_repositories_the_group_admits_are_named(self, app):
        group = app.github.group_settings[GROUP_ID]
        group.repositories += ["example-org/internal-tools", "example-org/docs-site"]
        app.github.public_repositories.add("example-org/docs-site")
        outcome = self.outcome(app)
        assert outcome.passed
        assert "also admits example-org/internal-tools, whose jobs" in outcome.detail
        assert "lists public example-org/docs-site, which it does not admit" in outcome.detail

    def test_an_unknown_group(self, app):
        app.github.runner_groups = frozenset({1})
        outcome = self.outcome(app)
        assert not outcome.passed and "has no runner group 4" in outcome.detail
        assert "runner_group_id of pool linux-x64" in outcome.fix

    def test_a_credential_without_self_hosted_runners(self, app):
        del the_installation(app).grants[f"org:{ORG}"]
        outcome = self.outcome(app)
        assert not outcome.passed and "403" in outcome.detail
        assert 'give the App the organization permission "Self-hosted runners"' in outcome.fix


class TestOrganizationScopeWithTokens:
    """``auth = "token"`` with organization runners: the runner token is an organization one."""

    @pytest.fixture
    def org_tokens(self, installation: Installation) -> Installation:  # noqa: F811
        github = CONFIG.github.model_copy(update={"runner_scope": "organization"})
        pools = tuple(
            pool.model_copy(update={"runner_group_id": GROUP_ID}) for pool in CONFIG.pools
        )
        installation.config = CONFIG.model_copy(update={"github": github, "pools": pools})
        token = installation.env["TF_VAR_github_runner_token"]
        installation.github.tokens[token] = {f"org:{ORG}": "org_runners"}
        installation.github.add_runner_group(GROUP_ID, "nomad-runners", repositories=tuple(REPOS))
        return installation

    def test_the_runner_token_lists_the_organizations_runners(self, org_tokens):
        (outcome,) = org_tokens.outcomes(checks.check_runner_token)
        assert outcome.passed and outcome.part.endswith("organization example-org")
        assert [r.path for r in org_tokens.github.requests] == [
            "/orgs/example-org/actions/runners?per_page=1"
        ]

    def test_a_runner_token_without_self_hosted_runners(self, org_tokens):
        token = org_tokens.env["TF_VAR_github_runner_token"]
        org_tokens.github.tokens[token] = {"example-org/api": "admin"}
        (outcome,) = org_tokens.outcomes(checks.check_runner_token)
        assert not outcome.passed and "403" in outcome.detail
        assert '"Self-hosted runners: read and write" on example-org' in outcome.fix

    def test_the_group_is_read_with_the_runner_token(self, org_tokens):
        assert org_tokens.the_outcome(checks.check_runner_groups, "runner group 4").passed
        status, text = full_run(org_tokens)
        assert status == 0, text


class TestMintOnlyPosts:
    def test_the_http_client_posts_to_the_access_tokens_path_only(self):
        http = UrllibHttp(timeout=1)
        with pytest.raises(ValueError, match="only POSTs"):
            http.mint_installation_token("https://api.github.com/repos/o/r/hooks", {})
        with pytest.raises(ValueError, match="only POSTs"):
            http.mint_installation_token(
                "https://api.github.com/app/installations/1/access_tokens/../../x", {}
            )
