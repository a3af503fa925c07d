"""doctor: each check passes on a healthy installation and fails, with its fix, on a broken one.

The installation is the stand-ins (GitHub, Nomad behind its Access gate and at its origin
address) plus the real Worker core answering over HTTP (``handler.local_server``), set up as the
stacks deploy it: the dispatch policy is the nomad stack's own rules text, parsed with the real
HCL parser; the hooks post where the github stack points them.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pygohcl
import pytest

from config import AppConfig, load_config
from doctor import checks
from doctor.checks import Context, Outcome
from doctor.cli import REDACTED, main, redact, run
from doctor.state import (
    ACCESS_CLIENT_ID_OUTPUT,
    ACCESS_CLIENT_SECRET_OUTPUT,
    DISPATCH_TOKEN_OUTPUT,
    STATUS_TOKEN_OUTPUT,
    StateError,
)
from doctor.web import UrllibHttp
from handler.contract import DISPATCH_META_KEYS, webhook_path
from handler.local_server import MemoryLedger, UrllibTransport, make_server
from handler.service import Ports, settings_from_bindings
from runner_job import CLOUDFLARED_JOB, credential_variable_paths, tunnel_token_variable_path
from tests.standins.github import GitHubStandIn
from tests.standins.nomad import AclPolicy, NomadStandIn

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG = load_config(REPO_ROOT / "examples" / "config.toml")  # follows the newest runner
# What the nomad stack deployed for it: the newest release at the time of the deploy.
DEPLOYED_RUNNER = "ghcr.io/actions/actions-runner:2.329.0"
PINNED = CONFIG.model_copy(
    update={"images": CONFIG.images.model_copy(update={"runner": DEPLOYED_RUNNER})}
)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
# Planted credentials: none of them may ever appear in doctor's output.
RUNNER_TOKEN = "planted-runner-token-4d5e6f"
READ_TOKEN = "planted-read-token-0a1b2c"
HOOKS_TOKEN = "planted-hooks-token-9f8e7d"
MANAGEMENT_TOKEN = "planted-management-token-8a9b0c"
DISPATCH_TOKEN = "planted-dispatch-token-3c4d5e"
ACCESS_ID = "planted-access-id.access"
ACCESS_SECRET = "planted-access-secret-7f3a9b"
RELEASES_TOKEN = "planted-releases-token-2e3f4a"
STATUS_TOKEN = "planted-status-token-6d7e8f"
SECRETS = (
    STATUS_TOKEN,
    RELEASES_TOKEN,
    RUNNER_TOKEN,
    READ_TOKEN,
    HOOKS_TOKEN,
    MANAGEMENT_TOKEN,
    DISPATCH_TOKEN,
    ACCESS_ID,
    ACCESS_SECRET,
)
DISPATCH_POLICY = "github-runners-dispatch"


class FixedState:
    """Terraform outputs as the stacks record them, without Terraform."""

    def __init__(self, values: dict[tuple[str, str], str]) -> None:
        self.values = values

    def value(self, stack: str, name: str) -> str:
        try:
            return self.values[(stack, name)]
        except KeyError:
            raise StateError(f"the state of stack '{stack}' has no output '{name}'") from None


def policy_from_rules(name: str, rules: str) -> AclPolicy:
    """An ACL policy for the stand-in from real policy text (parsed by the real HCL library)."""
    document = pygohcl.loads(rules)
    namespaces: dict[str, tuple[str, ...]] = {}
    variables: dict[str, dict[str, tuple[str, ...]]] = {}
    for namespace, body in document.get("namespace", {}).items():
        namespaces[namespace] = tuple(body.get("capabilities", ()))
        for path, rule in (body.get("variables") or {}).get("path", {}).items():
            variables.setdefault(namespace, {})[path] = tuple(rule["capabilities"])
    return AclPolicy(name, namespaces, variables)


def stack_dispatch_policy(namespace: str) -> str:
    from stacks.components.runner_namespace import dispatch_policy_rules

    return dispatch_policy_rules(namespace)


def hook_url(repository: str) -> str:
    return f"https://{CONFIG.cloudflare.webhook_hostname}{webhook_path(repository)}"


@dataclass
class Installation:
    """A healthy deployment of ``CONFIG``; tests break one part and run doctor."""

    config: AppConfig
    github: GitHubStandIn
    nomad: NomadStandIn
    webhook_url: str
    env: dict[str, str] = field(default_factory=dict)
    state: dict[tuple[str, str], str] = field(default_factory=dict)
    hooks: dict[str, int] = field(default_factory=dict)
    now: datetime = NOW

    def context(self) -> Context:
        return Context(
            config=self.config,
            http=UrllibHttp(timeout=5),
            state=FixedState(self.state),
            env=self.env,
            now=self.now,
            github_api_url=self.github.url,
            webhook_url=self.webhook_url,
            nomad_api_url=self.nomad.url,
            nomad_address=self.nomad.origin_url,
            releases_url=f"{self.github.url}/repos/actions/runner/releases?per_page=30",
        )

    def outcomes(self, check: checks.Check) -> list[Outcome]:
        return list(check(self.context()))

    def the_outcome(self, check: checks.Check, part: str) -> Outcome:
        found = [outcome for outcome in self.outcomes(check) if part in outcome.part]
        assert len(found) == 1, [outcome.part for outcome in self.outcomes(check)]
        return found[0]


def _serve_worker(config: AppConfig, nomad_url: str) -> Iterator[str]:
    settings = settings_from_bindings(
        {
            "ROUTING": config.routing().to_json(),
            "NOMAD_ADDR": nomad_url,
            "NOMAD_TOKEN": DISPATCH_TOKEN,
            "CF_ACCESS_CLIENT_ID": ACCESS_ID,
            "CF_ACCESS_CLIENT_SECRET": ACCESS_SECRET,
            "WEBHOOK_SECRET_KEY": "webhook-key-for-doctor-tests",
            "STATUS_TOKEN": STATUS_TOKEN,
        }.get
    )
    server = make_server(
        settings,
        Ports(UrllibTransport(), MemoryLedger(), time.monotonic),
        port=0,
        log=io.StringIO(),
    )
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def installation() -> Iterator[Installation]:
    config = CONFIG
    repos = [repo.full_name.lower() for repo in config.github.repositories]
    tokens = {
        RUNNER_TOKEN: dict.fromkeys(repos, "admin"),
        READ_TOKEN: dict.fromkeys(repos, "actions_read"),
        HOOKS_TOKEN: dict.fromkeys(repos, "hooks"),
    }
    namespace = config.nomad.namespace
    with (
        GitHubStandIn(tokens=tokens) as github,
        NomadStandIn(
            token=MANAGEMENT_TOKEN, access_client_id=ACCESS_ID, access_client_secret=ACCESS_SECRET
        ) as nomad,
    ):
        nomad.add_policy(policy_from_rules(DISPATCH_POLICY, stack_dispatch_policy(namespace)))
        nomad.add_acl_token(DISPATCH_TOKEN, policies=(DISPATCH_POLICY,), name="dispatch Worker")
        for pool in config.pools:
            nomad.register_job(
                pool.nomad_job,
                namespace=namespace,
                meta_required=DISPATCH_META_KEYS,
                task_groups=[
                    {
                        "Name": "runner",
                        "Count": 1,
                        "Tasks": [
                            {"Name": name, "Driver": pool.driver, "Config": {"image": image}}
                            for name, image in (
                                ("register", config.images.helper),
                                ("runner", config.runner_image(pool) or DEPLOYED_RUNNER),
                                ("deregister", config.images.helper),
                            )
                        ],
                    }
                ],
            )
            for path in credential_variable_paths(pool.nomad_job):
                nomad.put_variable(path, {"github_token": RUNNER_TOKEN}, namespace)
        nomad.put_variable(
            tunnel_token_variable_path(CLOUDFLARED_JOB), {"tunnel_token": "t"}, namespace
        )
        nomad.register_job(
            CLOUDFLARED_JOB,
            namespace=namespace,
            parameterized=False,
            job_type="service",
            task_groups=[{"Name": "cloudflared", "Count": 2, "Tasks": []}],
        )
        nomad.add_allocation(CLOUDFLARED_JOB, "running", namespace)
        nomad.add_allocation(CLOUDFLARED_JOB, "running", namespace)
        nomad.servers = [("nomad-1.global", "2.0.5")]
        nomad.nodes = [{"Name": "client-1", "Version": "2.0.5", "Status": "ready"}]
        github.add_release("v2.328.0", "2026-09-01T10:00:00Z")
        github.add_release("v2.329.0", "2026-10-01T10:00:00Z")
        github.add_release("v2.330.0", "2026-11-20T10:00:00Z")
        github.add_release("v2.331.0-beta.1", "2026-11-28T10:00:00Z", prerelease=True)
        hooks = {}
        for repo in config.github.repositories:
            hook = github.add_hook(repo.full_name, hook_url(repo.full_name))
            github.add_delivery(hook, 200, delivered_at="2026-11-30T09:00:00Z", action=None)
            github.add_delivery(hook, 202, delivered_at="2026-11-30T10:00:00Z")
            hooks[repo.full_name] = hook
        for webhook_url in _serve_worker(config, nomad.url):
            yield Installation(
                config=config,
                github=github,
                nomad=nomad,
                webhook_url=webhook_url,
                env={
                    "TF_VAR_github_runner_token": RUNNER_TOKEN,
                    "TF_VAR_github_read_token": READ_TOKEN,
                    "GITHUB_TOKEN": HOOKS_TOKEN,
                    "NOMAD_TOKEN": MANAGEMENT_TOKEN,
                },
                state={
                    ("edge", ACCESS_CLIENT_ID_OUTPUT): ACCESS_ID,
                    ("edge", ACCESS_CLIENT_SECRET_OUTPUT): ACCESS_SECRET,
                    ("nomad", DISPATCH_TOKEN_OUTPUT): DISPATCH_TOKEN,
                    ("dispatch", STATUS_TOKEN_OUTPUT): STATUS_TOKEN,
                },
                hooks=hooks,
            )


def full_run(installation: Installation) -> tuple[int, str]:
    out = io.StringIO()
    status = run(installation.context(), out)
    return status, out.getvalue()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# -- the whole run -------------------------------------------------------------------------------


class TestWholeRun:
    def test_a_healthy_installation_passes_every_check_and_exits_0(self, installation):
        status, text = full_run(installation)
        assert status == 0, text
        assert "FAIL" not in text
        # Checks for what the example does not use (a dind pool, a GitHub App, organization
        # runners) have nothing to say.
        unused = {checks.check_dind_privileged, checks.check_github_app, checks.check_runner_groups}
        for title, check in checks.CHECKS:
            assert (title in text) is (check not in unused)
        assert "0 failed: the installation looks healthy" in text
        assert_no_secret(text)

    def test_one_failure_makes_the_exit_status_1(self, installation):
        installation.nomad.nodes.append({"Name": "old", "Version": "1.11.2", "Status": "ready"})
        status, text = full_run(installation)
        assert status == 1
        assert text.count("FAIL") == 1 and "1 failed" in text

    def test_doctor_only_reads(self, installation):
        """Every request doctor sends, to GitHub and to Nomad (both addresses), is a GET."""
        full_run(installation)
        assert installation.github.requests and installation.nomad.requests
        assert {request.method for request in installation.github.requests} == {"GET"}
        assert {request.method for request in installation.nomad.requests} == {"GET"}

    def test_no_secret_is_printed_when_everything_fails(self, installation):
        """Wrong credentials everywhere: each failure is printed, no credential with it."""
        installation.env["TF_VAR_github_releases_token"] = RELEASES_TOKEN
        installation.github.tokens = {}
        installation.nomad.acl_tokens.clear()
        installation.nomad.token = "another-management-token"
        installation.nomad.access_client_secret = "another-access-secret"
        status, text = full_run(installation)
        assert status == 1 and text.count("FAIL") >= 15 and text.count("fix:") >= 15
        assert_no_secret(text)

    def test_an_environment_credential_is_redacted_even_if_no_check_reads_it(self, installation):
        installation.env["CLOUDFLARE_API_TOKEN"] = "planted-cloudflare-token-1a2b"

        def echo(ctx: Context) -> Iterator[Outcome]:
            yield checks.failed("echo", "planted-cloudflare-token-1a2b", "none")

        out = io.StringIO()
        run(installation.context(), out, [("echo", echo)])
        assert "planted-cloudflare-token-1a2b" not in out.getvalue()

    def test_a_check_that_crashes_fails_alone_and_its_message_is_redacted(self, installation):
        def broken(ctx: Context) -> Iterator[Outcome]:
            ctx.credential("NOMAD_TOKEN")
            raise RuntimeError(f"boom with {MANAGEMENT_TOKEN} inside")

        out = io.StringIO()
        checks_run = [("broken", broken), ("GitHub: runner token", checks.check_runner_token)]
        status = run(installation.context(), out, checks_run)
        text = out.getvalue()
        assert status == 1
        assert "doctor could not finish this check (RuntimeError: boom with [redacted]" in text
        assert "PASS  runner token reaches" in text
        assert_no_secret(text)

    def test_the_real_context_probes_the_configured_hostnames(self, installation):
        ctx = Context.for_config(CONFIG, http=UrllibHttp(), state=FixedState({}), env={}, now=NOW)
        assert ctx.webhook_url == "https://gh-runners.example.com"
        assert ctx.nomad_api_url == "https://nomad-api.example.com"
        assert ctx.nomad_address == CONFIG.nomad.address
        assert ctx.github_api_url == "https://api.github.com"
        assert ctx.releases_url.startswith("https://api.github.com/repos/actions/runner/releases")

    def test_redact_replaces_the_longest_secret_first(self):
        assert redact("a-b-c and a-b", ["a-b", "a-b-c"]) == f"{REDACTED} and {REDACTED}"

    def test_a_configuration_error_exits_2(self, tmp_path, capsys):
        bad = tmp_path / "bad.toml"
        bad.write_text("[cloudflare]\n")
        assert main(["--config", str(bad)], env={}, out=io.StringIO()) == 2
        assert "bad.toml" in capsys.readouterr().err

    def test_doctor_is_not_uploaded_with_the_worker(self):
        from handler.bundle import worker_modules

        assert not [name for name, _ in worker_modules() if "doctor" in name]

    def test_doctor_starts_without_cdktf(self):
        """Kept out of the cdktf imports: the command loads no provider binding."""
        code = (
            "import sys, doctor.cli, doctor.checks; "
            "assert not [m for m in sys.modules if m.startswith(('cdktf', 'jsii', 'stacks'))]"
        )
        subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


# -- GitHub tokens -------------------------------------------------------------------------------


class TestRunnerToken:
    def test_passes_when_it_lists_each_repositorys_runners(self, installation):
        outcomes = installation.outcomes(checks.check_runner_token)
        assert [outcome.passed for outcome in outcomes] == [True, True]
        assert "write is not provable without writing" in outcomes[0].detail

    def test_unset_names_the_variable(self, installation):
        del installation.env["TF_VAR_github_runner_token"]
        outcome = installation.the_outcome(checks.check_runner_token, "example-org/api")
        assert not outcome.passed and outcome.detail == "TF_VAR_github_runner_token is not set"

    def test_a_revoked_token_is_a_401(self, installation):
        del installation.github.tokens[RUNNER_TOKEN]
        outcome = installation.the_outcome(checks.check_runner_token, "example-org/api")
        assert not outcome.passed and "401 'Bad credentials'" in outcome.detail
        assert "expired, revoked or mistyped" in outcome.fix
        assert outcome.fix.endswith(
            "then deploy nomad (it puts the token in the credential Variables)"
        )

    def test_a_repository_outside_the_token_is_a_404(self, installation):
        del installation.github.tokens[RUNNER_TOKEN]["example-org/api"]
        outcome = installation.the_outcome(checks.check_runner_token, "example-org/api")
        assert not outcome.passed and "404" in outcome.detail
        assert "add example-org/api to the repositories the token" in outcome.fix
        website = installation.the_outcome(checks.check_runner_token, "example-org/website")
        assert website.passed

    def test_a_token_without_administration_is_a_403(self, installation):
        installation.github.tokens[RUNNER_TOKEN]["example-org/api"] = "actions_read"
        outcome = installation.the_outcome(checks.check_runner_token, "example-org/api")
        assert not outcome.passed and "Resource not accessible" in outcome.detail
        assert '"Administration: read and write" on example-org/api' in outcome.fix

    def test_an_exhausted_rate_limit_says_to_wait(self, installation):
        installation.github.rate_limited = True
        outcome = installation.the_outcome(checks.check_runner_token, "example-org/api")
        assert not outcome.passed and "rate limit is used up" in outcome.fix

    def test_many_repositories_are_reported_in_configuration_order(self, installation):
        """Repositories are checked several at a time; the report keeps the configured order."""
        names = [f"service-{index:02d}" for index in range(12)]
        repositories = tuple(
            CONFIG.github.repositories[0].model_copy(update={"name": name}) for name in names
        )
        installation.config = CONFIG.model_copy(
            update={"github": CONFIG.github.model_copy(update={"repositories": repositories})}
        )
        installation.github.tokens[RUNNER_TOKEN] = {
            f"example-org/{name}": "admin" for name in names[::2]
        }
        outcomes = installation.outcomes(checks.check_runner_token)
        assert [outcome.part for outcome in outcomes] == [
            f"runner token reaches example-org/{name}" for name in names
        ]
        assert [outcome.passed for outcome in outcomes] == [True, False] * 6


class TestReadToken:
    def test_passes_when_it_lists_workflow_runs(self, installation):
        assert all(outcome.passed for outcome in installation.outcomes(checks.check_read_token))

    def test_the_runner_token_in_its_place_lacks_actions_read(self, installation):
        installation.env["TF_VAR_github_read_token"] = RUNNER_TOKEN
        outcome = installation.the_outcome(checks.check_read_token, "example-org/website")
        assert not outcome.passed and "403" in outcome.detail
        assert '"Actions: read"' in outcome.fix and "then deploy dispatch" in outcome.fix


# -- hooks and deliveries ------------------------------------------------------------------------


class TestHooks:
    def test_passes_for_the_hook_the_github_stack_declares(self, installation):
        outcomes = installation.outcomes(checks.check_hooks)
        assert len(outcomes) == 6 and all(outcome.passed for outcome in outcomes)

    def test_a_hooks_token_without_webhooks_permission(self, installation):
        installation.github.tokens[HOOKS_TOKEN]["example-org/api"] = "actions_read"
        outcomes = [o for o in installation.outcomes(checks.check_hooks) if "api" in o.part]
        assert len(outcomes) == 1 and not outcomes[0].passed
        assert '"Webhooks: read and write"' in outcomes[0].fix

    def test_a_repository_outside_the_hooks_token(self, installation):
        del installation.github.tokens[HOOKS_TOKEN]["example-org/api"]
        outcome = installation.the_outcome(
            checks.check_hooks, "hooks token reaches example-org/api"
        )
        assert not outcome.passed and "404" in outcome.detail
        assert "its owner must be an admin of the repository" in outcome.fix

    def test_a_missing_hook(self, installation):
        installation.github.hooks["example-org/api"].clear()
        outcome = installation.the_outcome(checks.check_hooks, "hook of example-org/api")
        assert not outcome.passed
        assert outcome.detail == f"no hook posts to {hook_url('example-org/api')}"
        assert "cdktf deploy" in outcome.fix and "github" in outcome.fix

    def test_a_hook_pointing_elsewhere_is_missing(self, installation):
        hook = installation.github.hooks["example-org/api"][0]
        hook["config"]["url"] = "https://old-hooks.example.com/webhook/example-org/api"
        outcome = installation.the_outcome(checks.check_hooks, "hook of example-org/api")
        assert not outcome.passed and "no hook posts to" in outcome.detail

    def test_an_inactive_hook_with_extra_events_and_no_tls_check(self, installation):
        hook = installation.github.hooks["example-org/api"][0]
        hook["active"] = False
        hook["events"] = ["workflow_job", "push"]
        hook["config"]["insecure_ssl"] = "1"
        outcome = installation.the_outcome(checks.check_hooks, "hook of example-org/api")
        assert not outcome.passed
        assert "inactive" in outcome.detail and "'push'" in outcome.detail
        assert "TLS verification is off" in outcome.detail
        assert "deploy the github stack again" in outcome.fix

    def test_two_hooks_to_the_worker(self, installation):
        installation.github.add_hook("example-org/api", hook_url("example-org/api"))
        outcome = installation.the_outcome(checks.check_hooks, "hook of example-org/api")
        assert not outcome.passed and "every job arrives twice" in outcome.detail

    def test_failed_deliveries_are_listed_with_their_status_codes(self, installation):
        hook = installation.hooks["example-org/api"]
        installation.github.add_delivery(hook, 503, delivered_at="2026-11-30T11:00:00Z")
        installation.github.add_delivery(hook, 502, delivered_at="2026-11-30T12:00:00Z")
        outcome = installation.the_outcome(checks.check_hooks, "deliveries of example-org/api")
        assert not outcome.passed
        assert "the last 2 of 4 deliveries failed" in outcome.detail
        assert "2026-11-30T12:00:00Z workflow_job.queued 502" in outcome.detail
        assert "2026-11-30T11:00:00Z workflow_job.queued 503" in outcome.detail
        assert outcome.fix.startswith("Nomad or Access refused the Worker's dispatch")

    def test_a_signature_mismatch_points_at_the_stacks_to_redeploy(self, installation):
        hook = installation.hooks["example-org/website"]
        installation.github.add_delivery(hook, 401, delivered_at="2026-11-30T11:00:00Z")
        outcome = installation.the_outcome(checks.check_hooks, "deliveries of example-org/website")
        assert not outcome.passed and "401" in outcome.detail
        assert "secret does not match" in outcome.fix

    def test_an_unreachable_worker_is_status_code_0(self, installation):
        hook = installation.hooks["example-org/website"]
        installation.github.add_delivery(
            hook, 0, delivered_at="2026-11-30T11:00:00Z", status="failed to connect"
        )
        outcome = installation.the_outcome(checks.check_hooks, "deliveries of example-org/website")
        assert not outcome.passed and " 0 failed to connect" in outcome.detail
        assert "/healthz" in outcome.fix

    def test_failures_followed_by_a_success_pass_with_a_note(self, installation):
        hook = installation.hooks["example-org/api"]
        installation.github.add_delivery(hook, 503, delivered_at="2026-11-30T11:00:00Z")
        installation.github.add_delivery(hook, 202, delivered_at="2026-11-30T12:00:00Z")
        outcome = installation.the_outcome(checks.check_hooks, "deliveries of example-org/api")
        assert outcome.passed and "1 earlier failure(s)" in outcome.detail


# -- the Worker and the Access gate --------------------------------------------------------------


class TestWebhookHealth:
    def test_passes_when_the_worker_answers(self, installation):
        assert installation.the_outcome(checks.check_webhook_health, "/healthz").passed

    def test_fails_when_nothing_answers(self, installation):
        installation.webhook_url = "http://127.0.0.1:9"  # discard port: nothing listens
        outcome = installation.the_outcome(checks.check_webhook_health, "/healthz")
        assert not outcome.passed and "no answer from http://127.0.0.1:9" in outcome.detail
        assert "deploy the dispatch stack" in outcome.fix

    def test_fails_when_something_else_answers(self, installation):
        installation.webhook_url = installation.nomad.origin_url  # Nomad: 404 Invalid URL
        outcome = installation.the_outcome(checks.check_webhook_health, "/healthz")
        assert not outcome.passed and "answered 403" in outcome.detail
        assert "must route to the dispatch Worker" in outcome.fix


class TestWorkerStatus:
    def test_refuses_without_and_answers_with_the_status_token(self, installation):
        outcomes = installation.outcomes(checks.check_worker_status)
        assert [outcome.passed for outcome in outcomes] == [True, True]
        assert "read from the KV ledger" in outcomes[1].detail

    def test_a_token_that_differs_from_state(self, installation):
        installation.state[("dispatch", STATUS_TOKEN_OUTPUT)] = "a-rotated-status-token"
        outcome = installation.the_outcome(checks.check_worker_status, "answers the status")
        assert not outcome.passed and "STATUS_TOKEN differs" in outcome.detail
        assert "deploy the dispatch stack" in outcome.fix

    def test_a_public_status(self, installation):
        installation.webhook_url = installation.github.url  # any server that answers without 401
        outcome = installation.the_outcome(checks.check_worker_status, "refuses requests")
        assert not outcome.passed and "per-pool activity is public" in outcome.detail

    def test_state_without_the_status_token(self, installation):
        del installation.state[("dispatch", STATUS_TOKEN_OUTPUT)]
        outcome = installation.the_outcome(checks.check_worker_status, "answers the status")
        assert not outcome.passed and "no output 'status_token'" in outcome.fix


class TestAccessGate:
    def test_refuses_without_and_admits_with_the_service_token(self, installation):
        outcomes = installation.outcomes(checks.check_access_gate)
        assert [outcome.passed for outcome in outcomes] == [True, True]
        assert "refused with 403 before reaching Nomad" in outcomes[0].detail

    def test_a_hostname_without_access_answers_anyone(self, installation):
        installation.nomad.access_client_id = None  # no Access application on the hostname
        outcome = installation.the_outcome(checks.check_access_gate, "refuses requests")
        assert not outcome.passed and "answered 200" in outcome.detail
        assert "Access application must cover this hostname" in outcome.fix

    def test_a_replaced_service_token_is_refused(self, installation):
        installation.state[("edge", ACCESS_CLIENT_SECRET_OUTPUT)] = "an-older-secret"
        outcome = installation.the_outcome(checks.check_access_gate, "admits")
        assert not outcome.passed and "Access refused the service token (403)" in outcome.detail
        assert "deploy edge, then dispatch" in outcome.fix

    def test_a_tunnel_without_connector(self, installation):
        installation.nomad.one_shot_faults.extend(["403", "530"])
        outcomes = installation.outcomes(checks.check_access_gate)
        assert outcomes[0].passed and not outcomes[1].passed
        assert "answered 530" in outcomes[1].detail and "cloudflared" in outcomes[1].fix

    def test_nomads_own_no_leader_error_is_named(self, installation):
        installation.nomad.one_shot_faults.extend(["403", "500"])  # "rpc error: No cluster leader"
        outcomes = installation.outcomes(checks.check_access_gate)
        assert outcomes[0].passed and not outcomes[1].passed
        assert "no cluster leader" in outcomes[1].detail and "quorum" in outcomes[1].fix

    def test_a_cluster_without_leader(self, installation):
        installation.nomad.leader = ""
        outcome = installation.the_outcome(checks.check_access_gate, "admits")
        assert not outcome.passed and "no cluster leader" in outcome.detail

    def test_state_without_the_output_says_which_stack_to_deploy(self, installation):
        del installation.state[("edge", ACCESS_CLIENT_ID_OUTPUT)]
        outcome = installation.the_outcome(checks.check_access_gate, "admits")
        assert not outcome.passed and "no output 'access_client_id'" in outcome.fix


# -- the Worker's Nomad token --------------------------------------------------------------------


class TestDispatchToken:
    def test_the_stacks_policy_passes(self, installation):
        outcomes = installation.outcomes(checks.check_dispatch_token)
        assert outcomes and all(outcome.passed for outcome in outcomes), outcomes
        parts = [outcome.part for outcome in outcomes]
        assert "dispatch token reads github-runner-linux-x64's summary" in parts
        for path in credential_variable_paths("github-runner-linux-x64"):
            assert f"dispatch token cannot read Variable {path}" in parts
        assert "dispatch token cannot submit jobs" in parts

    def test_without_read_job_it_cannot_read_the_summary(self, installation):
        policy = installation.nomad.acl_policies[DISPATCH_POLICY]
        policy.namespaces = {"github-runners": ("dispatch-job",)}
        outcome = installation.the_outcome(checks.check_dispatch_token, "summary")
        assert not outcome.passed and "403 'Permission denied'" in outcome.detail
        assert "grant read-job in github-runners" in outcome.fix

    def test_a_policy_that_reads_variables_fails(self, installation):
        policy = installation.nomad.acl_policies[DISPATCH_POLICY]
        policy.variables = {"github-runners": {"nomad/jobs/*": ("read", "list")}}
        outcomes = installation.outcomes(checks.check_dispatch_token)
        variables = [o for o in outcomes if "Variable" in o.part]
        assert variables and not any(outcome.passed for outcome in variables)
        assert "Nomad answered 200" in variables[0].detail
        assert "remove every variables rule" in variables[0].fix

    def test_a_policy_with_submit_job_fails(self, installation):
        policy = installation.nomad.acl_policies[DISPATCH_POLICY]
        policy.namespaces = {"github-*": ("dispatch-job", "read-job", "submit-job")}
        outcome = installation.the_outcome(checks.check_dispatch_token, "cannot submit")
        assert not outcome.passed and "grant submit-job in github-runners" in outcome.detail

    def test_a_management_token_in_the_worker_fails(self, installation):
        installation.state[("nomad", DISPATCH_TOKEN_OUTPUT)] = MANAGEMENT_TOKEN
        outcome = installation.the_outcome(checks.check_dispatch_token, "cannot submit")
        assert not outcome.passed and "management token" in outcome.detail

    def test_state_without_the_token(self, installation):
        del installation.state[("nomad", DISPATCH_TOKEN_OUTPUT)]
        outcomes = installation.outcomes(checks.check_dispatch_token)
        assert len(outcomes) == 1 and not outcomes[0].passed
        assert "no output 'dispatch_token_secret'" in outcomes[0].fix

    def test_an_unknown_token_is_refused(self, installation):
        installation.nomad.acl_tokens.clear()
        outcome = installation.the_outcome(checks.check_dispatch_token, "summary")
        assert not outcome.passed and "Permission denied" in outcome.detail
        assert "must exist in this cluster" in outcome.fix
        submit = installation.the_outcome(checks.check_dispatch_token, "cannot submit")
        assert not submit.passed and "does not know the Worker's token" in submit.detail


# -- Nomad with the management token -------------------------------------------------------------


class TestPoolJobs:
    def test_passes_for_the_parameterized_job(self, installation):
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert outcome.passed and "github_repository" in outcome.detail

    def test_a_missing_job(self, installation):
        del installation.nomad.jobs[("github-runners", "github-runner-linux-x64")]
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert not outcome.passed and "404" in outcome.detail
        assert "cdktf deploy nomad" in outcome.fix

    def test_meta_that_does_not_match_the_worker(self, installation):
        job = installation.nomad.jobs[("github-runners", "github-runner-linux-x64")]
        job.meta_required = ("github_repository", "github_job_id", "github_run_id", "extra")
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert not outcome.passed
        assert "requires meta the Worker never sends: ['extra']" in outcome.detail
        assert "does not accept the meta ['runner_pool']" in outcome.detail

    def test_a_stopped_or_unparameterized_job(self, installation):
        job = installation.nomad.jobs[("github-runners", "github-runner-linux-x64")]
        job.stopped = True
        job.parameterized = False
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert "stopped" in outcome.detail and "not parameterized" in outcome.detail

    def test_a_refused_management_token(self, installation):
        installation.env["NOMAD_TOKEN"] = "not-the-management-token"
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert not outcome.passed and "403" in outcome.detail
        assert "NOMAD_TOKEN is refused at nomad.address" in outcome.fix

    def test_without_nomad_token(self, installation):
        del installation.env["NOMAD_TOKEN"]
        outcome = installation.the_outcome(checks.check_pool_jobs, "github-runner-linux-x64")
        assert not outcome.passed and outcome.detail == "NOMAD_TOKEN is not set"


class TestCredentialVariables:
    def test_every_credential_variable_is_present(self, installation):
        outcomes = installation.outcomes(checks.check_credential_variables)
        assert len(outcomes) == 3 and all(outcome.passed for outcome in outcomes)

    def test_a_missing_variable(self, installation):
        path = credential_variable_paths("github-runner-linux-x64")[1]
        del installation.nomad.variables[("github-runners", path)]
        outcome = installation.the_outcome(checks.check_credential_variables, path)
        assert not outcome.passed and "waits forever" in outcome.detail
        assert "deploy the nomad stack" in outcome.fix

    def test_values_are_never_requested(self, installation):
        installation.outcomes(checks.check_credential_variables)
        paths = {request.path for request in installation.nomad.requests}
        assert paths == {"/v1/vars"}


class TestCloudflared:
    def test_running_connectors(self, installation):
        outcome = installation.the_outcome(checks.check_cloudflared, CLOUDFLARED_JOB)
        assert outcome.passed and outcome.detail == "2 of 2 connectors running"

    def test_no_connector_running(self, installation):
        for stub in installation.nomad.allocations:
            stub["ClientStatus"] = "failed"
        outcome = installation.the_outcome(checks.check_cloudflared, CLOUDFLARED_JOB)
        assert not outcome.passed and "0 of 2 connectors running" in outcome.detail
        assert "failed" in outcome.detail and "nomad job status" in outcome.fix


class TestNomadVersion:
    def test_current_agents_pass(self, installation):
        outcome = installation.the_outcome(checks.check_nomad_version, "2.0.1 or later")
        assert outcome.passed and "2 agents" in outcome.detail

    def test_an_agent_below_the_floor_is_named(self, installation):
        installation.nomad.servers.append(("nomad-2.global", "2.0.0"))
        installation.nomad.nodes.append({"Name": "gpu-7", "Version": "1.11.2", "Status": "ready"})
        outcome = installation.the_outcome(checks.check_nomad_version, "2.0.1 or later")
        assert not outcome.passed and "CVE-2026-6959" in outcome.detail
        assert "server nomad-2.global 2.0.0" in outcome.detail
        assert "client gpu-7 1.11.2" in outcome.detail

    def test_down_nodes_and_patched_enterprise_lines_pass(self, installation):
        installation.nomad.nodes.append({"Name": "gone", "Version": "1.9.0", "Status": "down"})
        installation.nomad.servers.append(("nomad-old.global", "1.9.0"))
        installation.nomad.server_status["nomad-old.global"] = "left"
        installation.nomad.servers.append(("nomad-ent.global", "1.11.5+ent"))
        assert installation.the_outcome(checks.check_nomad_version, "2.0.1").passed


class TestDindPrivileged:
    """A dind pool's Docker daemon is privileged: its nodes' docker plugin must allow that."""

    @staticmethod
    def node(name: str, *, privileged: bool, node_pool: str = "dind-runners", **fields: str):
        attributes = {"driver.docker": "true", "driver.docker.version": "29.1.0"}
        if privileged:
            attributes["driver.docker.privileged.enabled"] = "true"
        return {
            "ID": name,
            "Name": name,
            "Datacenter": "dc1",
            "NodePool": node_pool,
            "Version": "2.0.5",
            "Status": "ready",
            "SchedulingEligibility": "eligible",
            "Drivers": {"docker": {"Detected": True, "Healthy": True, "Attributes": attributes}},
            **fields,
        }

    @pytest.fixture
    def dind(self, installation):
        pool = CONFIG.pools[0].model_copy(update={"docker": "dind", "node_pool": "dind-runners"})
        installation.config = CONFIG.model_copy(update={"pools": (pool,)})
        installation.nomad.nodes = [
            self.node("dind-1", privileged=True),
            self.node("dind-2", privileged=True),
            self.node("plain-1", privileged=False, node_pool="default"),
            self.node("drained", privileged=False, SchedulingEligibility="ineligible"),
            self.node("gone", privileged=False, Status="down"),
        ]
        return installation

    def test_a_pool_without_dind_is_not_checked(self, installation):
        assert installation.outcomes(checks.check_dind_privileged) == []

    def test_nodes_that_allow_privileged(self, dind):
        outcome = dind.the_outcome(checks.check_dind_privileged, "dind pool linux-x64")
        assert outcome.passed
        assert (
            outcome.detail
            == "2 docker node(s) in node pool dind-runners allow them (dind-1, dind-2)"
        )

    def test_a_node_without_allow_privileged_only_takes_no_dind_runner(self, dind):
        """The dind jobspec's constraint keeps runners off it: noted, not a failure."""
        dind.nomad.nodes.append(self.node("dind-3", privileged=False))
        outcome = dind.the_outcome(checks.check_dind_privileged, "dind pool linux-x64")
        assert (
            outcome.passed and "1 other docker node(s) there take no dind runner" in outcome.detail
        )

    def test_no_node_allowing_privileged_leaves_every_dispatch_pending(self, dind):
        for node in dind.nomad.nodes:
            node["Drivers"]["docker"]["Attributes"].pop("driver.docker.privileged.enabled", None)
        outcome = dind.the_outcome(checks.check_dind_privileged, "dind pool linux-x64")
        assert not outcome.passed
        assert outcome.detail.startswith("2 docker node(s), none allowing it in node pool")
        assert "stays pending" in outcome.detail and "allow_privileged = true" in outcome.fix

    def test_no_docker_node_in_the_pools_node_pool(self, dind):
        dind.nomad.nodes = [self.node("plain-1", privileged=True, node_pool="default")]
        outcome = dind.the_outcome(checks.check_dind_privileged, "dind pool linux-x64")
        assert not outcome.passed and "no ready, eligible docker node" in outcome.detail

    def test_it_runs_in_the_whole_report(self, dind):
        status, text = full_run(dind)
        assert status == 0, text
        assert "Nomad: privileged containers for dind pools" in text


# -- the runner image ----------------------------------------------------------------------------


class TestRunnerVersion:
    def test_inside_the_window(self, installation):
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert outcome.passed
        assert "inside GitHub's window until 2026-12-20" in outcome.detail
        assert "from the deployed job" in outcome.detail

    def test_a_stale_pin_names_the_pin_to_set(self, installation):
        installation.config = PINNED
        installation.now = datetime(2026, 12, 25, tzinfo=UTC)
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert not outcome.passed
        assert "2.330.0 was published 2026-11-20, over 30 days ago" in outcome.detail
        assert "ghcr.io/actions/actions-runner:2.330.0" in outcome.fix
        assert "or leave it out to follow the newest release" in outcome.fix

    def test_the_deployed_image_is_checked_not_the_configured_one(self, installation):
        job = installation.nomad.jobs[("github-runners", "github-runner-linux-x64")]
        job.task_groups[0]["Tasks"][1]["Config"]["image"] = "ghcr.io/actions/actions-runner:2.328.0"
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert not outcome.passed and "below 2.329.0" in outcome.detail

    def test_without_nomad_a_pinned_image_is_checked_as_configured(self, installation):
        installation.config = PINNED
        del installation.env["NOMAD_TOKEN"]
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert outcome.passed and "from the configuration" in outcome.detail

    def test_following_the_newest_release_a_stale_deploy_needs_a_deploy(self, installation):
        """A configuration without a runner pin (images.runner left out) follows the newest
        release at plan time: the deployed image goes stale when nobody deploys."""
        installation.now = datetime(2026, 12, 25, tzinfo=UTC)
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert not outcome.passed and outcome.fix.startswith("deploy the nomad stack again")

    def test_following_the_newest_release_needs_the_deployed_job(self, installation):
        del installation.env["NOMAD_TOKEN"]
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert not outcome.passed and "deployed job is not readable" in outcome.detail

    def test_a_github_enterprise_server_does_not_enforce_the_window(self, installation):
        github = CONFIG.github.model_copy(update={"api_url": "https://ghes.example.com/api/v3"})
        installation.config = CONFIG.model_copy(update={"github": github})
        installation.now = datetime(2026, 12, 25, tzinfo=UTC)
        installation.github.fail_next(503)  # github.com unreachable from an air-gapped site
        outcome = installation.the_outcome(checks.check_runner_version, "linux-x64")
        assert outcome.passed and "GitHub Enterprise Server does not apply" in outcome.detail
        assert not [r for r in installation.github.requests if "releases" in r.path]

    def test_the_releases_token_is_used_when_set(self, installation):
        installation.env["TF_VAR_github_releases_token"] = RELEASES_TOKEN
        installation.github.tokens[RELEASES_TOKEN] = {}
        assert installation.the_outcome(checks.check_runner_version, "linux-x64").passed
        asked = [r for r in installation.github.requests if "releases" in r.path]
        assert asked and asked[0].headers["authorization"] == f"Bearer {RELEASES_TOKEN}"

    def test_releases_unreadable(self, installation):
        installation.github.fail_next(503)
        outcome = installation.the_outcome(checks.check_runner_version, "releases")
        assert not outcome.passed and "503" in outcome.detail


class TestRunnerImageVerdict:
    """The version-window rule on an image string, pinned or following the newest release."""

    RELEASES = (
        checks.versions.Release((2, 330, 0), datetime(2026, 11, 20, tzinfo=UTC)),
        checks.versions.Release((2, 329, 0), datetime(2026, 10, 1, tzinfo=UTC)),
    )

    def verdict(self, image: str, *, pinned: bool = True, now: datetime = NOW):
        return checks.runner_image_verdict(image, list(self.RELEASES), now, pinned_in_config=pinned)

    def test_the_newest_release(self):
        ok, detail, _ = self.verdict("ghcr.io/actions/actions-runner:2.330.0")
        assert ok and detail == "runner 2.330.0 is the newest release"

    def test_a_suffixed_tag_and_a_digest_keep_their_version(self):
        assert self.verdict("ghcr.io/x/runner:2.330.0-ubuntu@sha256:" + "a" * 64)[0]

    def test_an_image_without_a_version(self):
        ok, detail, fix = self.verdict("ghcr.io/x/runner@sha256:" + "a" * 64)
        assert not ok and "no 2.x.y version in its tag" in detail
        assert "tag the image with the runner version" in fix

    def test_another_images_own_version_is_not_a_runner_version(self):
        ok, detail, _ = self.verdict("ghcr.io/x/runner:1.4.0")
        assert not ok and "cannot tell the runner version" in detail

    def test_another_image_tagged_with_a_stale_runner_version_needs_a_rebuild(self):
        late = datetime(2026, 12, 25, tzinfo=UTC)
        ok, _, fix = self.verdict("ghcr.io/x/gpu-runner:2.329.0-cuda12", now=late)
        assert not ok and fix.startswith("rebuild the image on runner 2.330.0")

    def test_a_stale_image_that_follows_the_newest_release_needs_a_deploy(self):
        late = datetime(2026, 12, 25, tzinfo=UTC)
        ok, _, fix = self.verdict("ghcr.io/actions/actions-runner:2.329.0", pinned=False, now=late)
        assert not ok and fix.startswith("deploy the nomad stack again")


class TestVersions:
    @pytest.mark.parametrize(
        ("version", "fixed"),
        [
            ("2.0.1", True),
            ("2.0.5", True),
            ("2.1.0-beta.1", True),
            ("2.0.1-rc.1", False),
            ("2.0.0", False),
            ("1.11.2", False),
            ("1.11.5+ent", True),
            ("1.11.4+ent", False),
            ("1.10.11+ent", True),
            ("1.9.9+ent", False),
            ("2.0.0+ent", False),
            ("unknown", False),
        ],
    )
    def test_nomad_floor(self, version, fixed):
        assert checks.versions.nomad_version_ok(version) is fixed

    def test_releases_skip_drafts_prereleases_and_odd_tags(self):
        document = [
            {"tag_name": "v2.331.0", "draft": True, "published_at": "2026-11-29T00:00:00Z"},
            {"tag_name": "v2.331.0-rc1", "published_at": "2026-11-28T00:00:00Z"},
            {"tag_name": "nightly", "published_at": "2026-11-27T00:00:00Z"},
            {"tag_name": "v2.330.0", "published_at": "2026-11-20T00:00:00Z"},
        ]
        releases = checks.versions.releases_from_github(document)
        assert [release.version for release in releases] == [(2, 330, 0)]
