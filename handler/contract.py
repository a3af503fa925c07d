"""What the dispatch Worker shares with the rest of the toolkit, defined once.

Three agreements live here and nowhere else:

* the Worker's bindings (name, type, what each holds), which the Cloudflare stack must declare
  exactly;
* the Nomad dispatch meta keys, which the handler sends and the runner jobspec requires;
* the routing document (pools, served repositories, each repository's fork policy and cap) that the
  stacks render from the typed configuration and the Worker reads from its ``ROUTING`` binding,
  plus the per-repository webhook path and secret derivation that the GitHub stack and the Worker
  must compute identically.

Standard library only, no I/O: this module runs under CPython, in the Workers runtime and inside
the cdktf app.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal

BindingType = Literal["plain_text", "secret_text", "kv_namespace"]


@dataclass(frozen=True)
class BindingSpec:
    """One Worker binding: the name the code reads on ``env`` and what the stack must give it."""

    name: str
    type: BindingType
    description: str


ROUTING_BINDING: Final = "ROUTING"
NOMAD_ADDR_BINDING: Final = "NOMAD_ADDR"
NOMAD_TOKEN_BINDING: Final = "NOMAD_TOKEN"
ACCESS_CLIENT_ID_BINDING: Final = "CF_ACCESS_CLIENT_ID"
ACCESS_CLIENT_SECRET_BINDING: Final = "CF_ACCESS_CLIENT_SECRET"
WEBHOOK_SECRET_KEY_BINDING: Final = "WEBHOOK_SECRET_KEY"
LEDGER_BINDING: Final = "LEDGER"
GITHUB_API_URL_BINDING: Final = "GITHUB_API_URL"
GITHUB_READ_TOKEN_BINDING: Final = "GITHUB_READ_TOKEN"
RECONCILE_REQUEST_BUDGET_BINDING: Final = "RECONCILE_REQUEST_BUDGET"
STATUS_TOKEN_BINDING: Final = "STATUS_TOKEN"
# With [github] auth = "app", in place of GITHUB_READ_TOKEN: the Worker mints its own
# installation token from the App's key (handler.github_auth).
GITHUB_APP_ID_BINDING: Final = "GITHUB_APP_ID"
GITHUB_APP_INSTALLATION_ID_BINDING: Final = "GITHUB_APP_INSTALLATION_ID"
GITHUB_APP_PRIVATE_KEY_BINDING: Final = "GITHUB_APP_PRIVATE_KEY"

# Outbound requests per reconciler run. This default is the paid plan's (PLAN_DEFAULT_REQUEST_BUDGET
# below gives each plan its own: 10 on the Free plan, whose 10 ms of CPU bound a run before its 50
# subrequests do); the maximum leaves room for KV and the rest under the 1,000 subrequests paid
# plans long allowed (Cloudflare's limits page now says 10,000 for them).
DEFAULT_RECONCILE_REQUEST_BUDGET: Final = 40
MIN_RECONCILE_REQUEST_BUDGET: Final = 10
MAX_RECONCILE_REQUEST_BUDGET: Final = 950

# The Workers plan the reconciler is sized for ([reconcile] plan). On the Free plan an invocation
# may use 10 ms of CPU (beyond it Cloudflare ends it, error 1102), and in Pyodide every outbound
# request costs CPU, as does parsing a runs list of 100 runs (about 1.2 MB of JSON): a run there
# sends fewer requests and asks for shorter lists (bench/cpu_budget.py has the figures).
RECONCILE_PLAN_BINDING: Final = "RECONCILE_PLAN"
WORKERS_PLANS: Final[tuple[str, ...]] = ("free", "paid")
DEFAULT_WORKERS_PLAN: Final = "free"
# Runs per runs list (GitHub's per_page; 100 is GitHub's maximum).
RUNS_PER_PAGE: Final[Mapping[str, int]] = MappingProxyType({"free": 20, "paid": 100})
# The request budget when none is configured, and the most the plan allows (the Free plan has 50
# subrequests per invocation; KV reads count too).
PLAN_DEFAULT_REQUEST_BUDGET: Final[Mapping[str, int]] = MappingProxyType({"free": 10, "paid": 40})
PLAN_MAX_REQUEST_BUDGET: Final[Mapping[str, int]] = MappingProxyType(
    {"free": 40, "paid": MAX_RECONCILE_REQUEST_BUDGET}
)

WORKER_BINDINGS: Final[tuple[BindingSpec, ...]] = (
    BindingSpec(
        ROUTING_BINDING,
        "plain_text",
        "Routing document (JSON): runner pools, their Nomad jobs and the served repositories.",
    ),
    BindingSpec(
        NOMAD_ADDR_BINDING,
        "plain_text",
        "Base URL of the Nomad API behind the Cloudflare tunnel, e.g. https://nomad-api.example.com.",
    ),
    BindingSpec(
        NOMAD_TOKEN_BINDING,
        "secret_text",
        "Secret ID of the dispatch-only Nomad ACL token.",
    ),
    BindingSpec(
        ACCESS_CLIENT_ID_BINDING,
        "secret_text",
        "Client ID of the Cloudflare Access service token admitted to the Nomad API hostname.",
    ),
    BindingSpec(
        ACCESS_CLIENT_SECRET_BINDING,
        "secret_text",
        "Client secret of that Access service token.",
    ),
    BindingSpec(
        WEBHOOK_SECRET_KEY_BINDING,
        "secret_text",
        "Key from which each repository's webhook secret is derived (see webhook_secret_for).",
    ),
    BindingSpec(
        LEDGER_BINDING,
        "kv_namespace",
        "KV namespace holding the per-job ledger (what happened to each GitHub job).",
    ),
    BindingSpec(
        GITHUB_API_URL_BINDING,
        "plain_text",
        "GitHub REST API base URL the reconciler lists queued runs and jobs from.",
    ),
    BindingSpec(
        GITHUB_READ_TOKEN_BINDING,
        "secret_text",
        "GitHub token with only 'Actions: read' on the served repositories, for the reconciler "
        "and for the fork check of webhooks (the runner-minting credential stays in Nomad).",
    ),
    BindingSpec(
        RECONCILE_REQUEST_BUDGET_BINDING,
        "plain_text",
        "Outbound requests one reconciler run may send (a decimal integer; absent means the "
        "plan's default: 10 on the Free plan, 40 on a paid one).",
    ),
    BindingSpec(
        RECONCILE_PLAN_BINDING,
        "plain_text",
        "Workers plan the reconciler is sized for: 'free' (10 ms CPU per invocation: short runs "
        "lists, few requests) or 'paid'; absent means 'free'.",
    ),
    BindingSpec(
        STATUS_TOKEN_BINDING,
        "secret_text",
        "Bearer token GET /status requires (Authorization: Bearer <token>); generated at deploy.",
    ),
)

# The bindings of a Worker whose GitHub reads use a GitHub App: GITHUB_READ_TOKEN gives way to
# the App's id, installation id and private key.
GITHUB_APP_BINDINGS: Final[tuple[BindingSpec, ...]] = (
    BindingSpec(
        GITHUB_APP_ID_BINDING,
        "plain_text",
        "The GitHub App's id: the issuer of the JWTs the Worker signs (not a secret).",
    ),
    BindingSpec(
        GITHUB_APP_INSTALLATION_ID_BINDING,
        "plain_text",
        "The App's installation id on the owner, whose installation token the Worker reads with.",
    ),
    BindingSpec(
        GITHUB_APP_PRIVATE_KEY_BINDING,
        "secret_text",
        "The App's PEM private key (PKCS#1 as GitHub gives it, or PKCS#8): signs the JWT that "
        "buys an installation token, kept in isolate memory until shortly before it expires.",
    ),
)


def worker_bindings(github_auth: str) -> tuple[BindingSpec, ...]:
    """The Worker's bindings for ``[github] auth`` ("token": :data:`WORKER_BINDINGS`)."""
    if github_auth != "app":
        return WORKER_BINDINGS
    kept = tuple(spec for spec in WORKER_BINDINGS if spec.name != GITHUB_READ_TOKEN_BINDING)
    return kept + GITHUB_APP_BINDINGS


# Meta keys of every dispatch. The runner jobspec lists exactly these as ``meta_required``; a test
# holds the two sides together. Values are never secret: anyone with read-job can see them.
META_REPOSITORY: Final = "github_repository"
META_JOB_ID: Final = "github_job_id"
META_RUN_ID: Final = "github_run_id"
META_POOL: Final = "runner_pool"
DISPATCH_META_KEYS: Final[tuple[str, ...]] = (META_REPOSITORY, META_JOB_ID, META_RUN_ID, META_POOL)

# The Nomad ACL capabilities the Worker's token holds in the runner namespace, and why each
# (checked in Nomad's nomad/job_endpoint.go): dispatch-job for POST /v1/job/{id}/dispatch
# (Job.Dispatch); read-job for GET /v1/job/{id}/summary (Job.Summary) and the reconciler's
# GET /v1/job/{child id} (Job.GetJob), for a repository's cap GET /v1/jobs/statuses
# (Job.Statuses, nomad/job_endpoint_statuses.go, checks read-job only), and for a freed slot's
# finished runner GET /v1/allocation/{id} (Alloc.GetAlloc checks read-job). No list-jobs: only
# GET /v1/jobs (Job.List) needs it, which the Worker never calls. The nomad stack writes the
# policy from this tuple.
WORKER_NOMAD_CAPABILITIES: Final[tuple[str, ...]] = ("dispatch-job", "read-job")

WEBHOOK_PATH_PREFIX: Final = "/webhook/"

# GitHub owner and repository names: letters, digits, '-', '_' and '.', nothing else, and never
# "." or ".." (a path segment that would climb out of /repos/). \Z, not $: "$" would also match
# before a trailing newline. runner_job/scripts/github_api.py holds a copy (the task scripts run
# on Nomad without this package); a test keeps the two equal.
_NAME_PART = r"(?!\.\.?(?:/|\Z))[A-Za-z0-9_.-]{1,100}"
REPOSITORY_PATTERN: Final = re.compile(rf"\A{_NAME_PART}/{_NAME_PART}\Z")
# Nomad job ids and pool names we generate: lower-case DNS-label-like words.
POOL_NAME_PATTERN: Final = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
ROUTING_VERSION: Final = 1
# Optional routing key: per-repository runner caps (``{"owner/repo": n}``).
REPOSITORY_CAPS_KEY: Final = "repository_max_runners"

# What the Worker does with a job whose run's head repository is not the repository itself (a
# pull request from a fork): refuse it (the default), or dispatch it like any other job.
FORK_POLICY_REFUSE: Final = "refuse"
FORK_POLICY_ALLOW: Final = "allow"
FORK_POLICIES: Final[tuple[str, ...]] = (FORK_POLICY_REFUSE, FORK_POLICY_ALLOW)


class RoutingError(ValueError):
    """The routing document is malformed; the message names the field."""


def webhook_path(repository: str) -> str:
    """URL path GitHub posts a repository's deliveries to: ``/webhook/{owner}/{repo}``."""
    return f"{WEBHOOK_PATH_PREFIX}{repository.lower()}"


def webhook_secret_for(key: str, repository: str) -> str:
    """The webhook secret of one repository.

    ``sha256("{key}:{owner/repo lower-cased}")`` in hex, which Terraform computes with
    ``sha256()`` for the hook and the Worker recomputes from ``WEBHOOK_SECRET_KEY``: one secret
    binding serves any number of repositories, and one leaked hook secret forges nothing for
    another repository.
    """
    return hashlib.sha256(f"{key}:{repository.lower()}".encode()).hexdigest()


@dataclass(frozen=True)
class PoolRoute:
    """A runner pool as the Worker sees it."""

    name: str
    labels: frozenset[str]  # lower-cased; always contains "self-hosted"
    nomad_job: str
    max_runners: int


@dataclass(frozen=True)
class Routing:
    """Which repositories we serve and which pools each may use."""

    namespace: str
    pools: tuple[PoolRoute, ...]
    # lower-cased "owner/repo" -> names of the pools that repository may use
    repositories: Mapping[str, tuple[str, ...]]
    # lower-cased "owner/repo" -> FORK_POLICY_*; a repository not listed refuses fork runs
    fork_pull_requests: Mapping[str, str] = field(default_factory=dict)
    # lower-cased "owner/repo" -> the most runners (pending + running, all pools together) that
    # repository may hold; a repository not named here is bounded by its pools' caps only.
    repository_max_runners: Mapping[str, int] = field(default_factory=dict)

    def fork_policy(self, repository: str) -> str:
        """The fork policy of ``repository`` (any case): refuse unless the routing says allow."""
        return self.fork_pull_requests.get(repository.lower(), FORK_POLICY_REFUSE)

    def pool(self, name: str) -> PoolRoute:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def repository_cap(self, repository: str) -> int | None:
        """The repository's own runner cap, or None when only its pools' caps apply."""
        return self.repository_max_runners.get(repository.lower())

    def to_json(self) -> str:
        document = {
            "version": ROUTING_VERSION,
            "namespace": self.namespace,
            "pools": [
                {
                    "name": pool.name,
                    "labels": sorted(pool.labels),
                    "nomad_job": pool.nomad_job,
                    "max_runners": pool.max_runners,
                }
                for pool in self.pools
            ],
            "repositories": {
                repo: list(pools) for repo, pools in sorted(self.repositories.items())
            },
            # Every served repository, spelled out: the binding shows each one's policy.
            "fork_pull_requests": {repo: self.fork_policy(repo) for repo in self.repositories},
        }
        if self.repository_max_runners:  # optional key: documents without caps are unchanged
            document[REPOSITORY_CAPS_KEY] = dict(sorted(self.repository_max_runners.items()))
        return json.dumps(document, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Routing:
        try:
            document = json.loads(text)
        except ValueError as error:
            raise RoutingError(f"routing: not JSON ({error})") from None
        return cls.from_document(document)

    @classmethod
    def from_document(cls, document: Any) -> Routing:
        if not isinstance(document, dict):
            raise RoutingError("routing: expected a JSON object")
        if document.get("version") != ROUTING_VERSION:
            raise RoutingError(f"routing.version: expected {ROUTING_VERSION}")
        namespace = document.get("namespace")
        if not isinstance(namespace, str) or not namespace:
            raise RoutingError("routing.namespace: expected a non-empty string")
        raw_pools = document.get("pools")
        if not isinstance(raw_pools, list) or not raw_pools:
            raise RoutingError("routing.pools: expected a non-empty list")
        pools = tuple(_parse_pool(index, raw) for index, raw in enumerate(raw_pools))
        names = [pool.name for pool in pools]
        if len(set(names)) != len(names):
            raise RoutingError("routing.pools: pool names must be unique")
        raw_repos = document.get("repositories")
        if not isinstance(raw_repos, dict):
            raise RoutingError("routing.repositories: expected an object")
        repositories: dict[str, tuple[str, ...]] = {}
        for repo, allowed in raw_repos.items():
            where = f"routing.repositories[{repo!r}]"
            if not REPOSITORY_PATTERN.match(repo):
                raise RoutingError(f"{where}: not an owner/repo name")
            if (
                not isinstance(allowed, list)
                or not allowed
                or not all(isinstance(name, str) and name in names for name in allowed)
            ):
                raise RoutingError(f"{where}: expected a non-empty list of known pool names")
            repositories[repo.lower()] = tuple(allowed)
        fork_pull_requests = _parse_fork_policies(document.get("fork_pull_requests"), repositories)
        caps = _parse_repository_caps(document.get(REPOSITORY_CAPS_KEY, {}), repositories)
        return cls(
            namespace=namespace,
            pools=pools,
            repositories=repositories,
            fork_pull_requests=fork_pull_requests,
            repository_max_runners=caps,
        )


def _parse_fork_policies(raw: Any, repositories: Mapping[str, Any]) -> dict[str, str]:
    """``fork_pull_requests``: repository -> policy; absent (or a repository left out) means
    refuse. An entry for a repository that is not served is never consulted, so it is dropped."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RoutingError("routing.fork_pull_requests: expected an object")
    policies: dict[str, str] = {}
    for repo, policy in raw.items():
        where = f"routing.fork_pull_requests[{repo!r}]"
        if policy not in FORK_POLICIES:
            raise RoutingError(f"{where}: expected one of {', '.join(FORK_POLICIES)}")
        if repo.lower() in repositories:
            policies[repo.lower()] = policy
    return policies


def _parse_repository_caps(raw: Any, repositories: Mapping[str, Any]) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise RoutingError(f"routing.{REPOSITORY_CAPS_KEY}: expected an object")
    caps: dict[str, int] = {}
    for repo, cap in raw.items():
        where = f"routing.{REPOSITORY_CAPS_KEY}[{repo!r}]"
        if not isinstance(repo, str) or repo.lower() not in repositories:
            raise RoutingError(f"{where}: not a served repository")
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise RoutingError(f"{where}: expected a positive integer")
        caps[repo.lower()] = cap
    return caps


def _parse_pool(index: int, raw: Any) -> PoolRoute:
    where = f"routing.pools[{index}]"
    if not isinstance(raw, dict):
        raise RoutingError(f"{where}: expected an object")
    name = raw.get("name")
    if not isinstance(name, str) or not POOL_NAME_PATTERN.match(name):
        raise RoutingError(f"{where}.name: expected a lower-case pool name")
    labels = raw.get("labels")
    if (
        not isinstance(labels, list)
        or not labels
        or not all(isinstance(label, str) and label for label in labels)
    ):
        raise RoutingError(f"{where}.labels: expected a non-empty list of strings")
    label_set = frozenset(label.lower() for label in labels)
    if "self-hosted" not in label_set:
        raise RoutingError(f"{where}.labels: must include 'self-hosted'")
    nomad_job = raw.get("nomad_job")
    if not isinstance(nomad_job, str) or not nomad_job:
        raise RoutingError(f"{where}.nomad_job: expected a non-empty string")
    max_runners = raw.get("max_runners")
    if not isinstance(max_runners, int) or isinstance(max_runners, bool) or max_runners < 1:
        raise RoutingError(f"{where}.max_runners: expected a positive integer")
    return PoolRoute(name=name, labels=label_set, nomad_job=nomad_job, max_runners=max_runners)
