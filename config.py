"""The one configuration file of a deployment, read and validated once.

``load_config(path)`` reads a TOML file into frozen dataclasses (``AppConfig``); nothing else in
the app reads the file or the environment for settings. Every problem is a ``ConfigError`` whose
message names the file, the dotted field path and what is wrong, e.g.
``examples/config.toml: github.repositories[2].pools: unknown pool 'gpu'``. Unknown keys are
errors too, so a typo never silently falls back to a default.

No field holds a secret: credentials are sensitive Terraform variables or generated at deploy
time (see the README). Standard library only, no I/O besides reading the one file.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from handler.contract import (
    DEFAULT_WORKERS_PLAN,
    FORK_POLICIES,
    FORK_POLICY_REFUSE,
    MIN_RECONCILE_REQUEST_BUDGET,
    PLAN_DEFAULT_REQUEST_BUDGET,
    PLAN_MAX_REQUEST_BUDGET,
    POOL_NAME_PATTERN,
    WORKERS_PLANS,
    PoolRoute,
    Routing,
)

RUNNER_JOB_PREFIX: Final = "github-runner-"
# Outside RUNNER_JOB_PREFIX, so no pool's runner job id can ever equal a prewarm job id.
PREWARM_JOB_PREFIX: Final = "github-prewarm-"
DEFAULT_NAMESPACE: Final = "github-runners"
SELF_HOSTED: Final = "self-hosted"
# Task drivers whose config takes the docker-style image/command/args the runner jobspec uses.
TASK_DRIVERS: Final = ("docker", "podman")
# What a pool's jobs get for Docker: nothing, or a Docker daemon of the allocation's own (which
# needs privileged mode: the docker driver only).
DOCKER_MODES: Final = ("none", "dind")
DIND_DRIVERS: Final = ("docker",)
# How the runner tasks, the Worker's reads and the hooks' Terraform authenticate to GitHub: one
# fine-grained token per role, or one GitHub App installation for all three (its private key a
# sensitive Terraform variable, never a field here).
GITHUB_AUTH_KINDS: Final = ("token", "app")
# Where runners are registered: each repository's own runners, or the organization's (into the
# pools' runner groups).
RUNNER_SCOPES: Final = ("repository", "organization")
DEFAULT_RUNNER_GROUP_ID: Final = 1

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_OWNER = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,38})$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_NOMAD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_CONSTRAINT_OPERATORS: Final = frozenset(
    {
        "=",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "distinct_hosts",
        "distinct_property",
        "regexp",
        "set_contains",
        "set_contains_any",
        "version",
        "semver",
        "is_set",
        "is_not_set",
    }
)
# A tag that moves under you is not a pin.
_FLOATING_TAGS: Final = frozenset({"latest", "stable", "edge", "main", "master", "nightly"})
# The official runner image; its tags are actions/runner release versions ("2.330.0" for the
# release "v2.330.0"). A pin of it is checked against GitHub's version window at every plan.
OFFICIAL_RUNNER_IMAGE: Final = "ghcr.io/actions/actions-runner"
# github.com registers no runner older than this (enforced since 2026-09-25).
MIN_RUNNER_VERSION: Final = (2, 329, 0)
_RUNNER_VERSION_TAG = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


class ConfigError(ValueError):
    """The configuration is invalid; the message says where (file and field) and why."""


@dataclass(frozen=True)
class CloudflareConfig:
    account_id: str
    zone_id: str
    zone_name: str
    webhook_hostname: str
    nomad_api_hostname: str
    resource_prefix: str


@dataclass(frozen=True)
class NomadConfig:
    address: str
    namespace: str
    datacenters: tuple[str, ...]
    node_pool: str
    tunnel_origin: str


@dataclass(frozen=True)
class RepositoryConfig:
    name: str  # the repository name alone, without the owner
    full_name: str  # "owner/name" as written in the configuration
    pools: tuple[str, ...]
    # Jobs of runs whose head repository is another one (fork pull requests): "refuse" or
    # "allow" (handler.contract.FORK_POLICIES); the default comes from [github].
    fork_pull_requests: str = FORK_POLICY_REFUSE
    # The operator knows the repository is public and wants it served anyway: without this the
    # github stack's plan fails for a public repository.
    allow_public: bool = False
    # The most runners this repository may hold at once, all its pools together (its own
    # max_runners, else github.max_runners_per_repository); None: only the pools' caps apply.
    max_runners: int | None = None


@dataclass(frozen=True)
class GitHubConfig:
    owner: str
    owner_type: Literal["user", "organization"]
    repositories: tuple[RepositoryConfig, ...]
    api_url: str
    fork_pull_requests: str = FORK_POLICY_REFUSE  # the default of every repository
    # "token": a fine-grained token per role (TF_VAR_github_runner_token, TF_VAR_github_read_token,
    # GITHUB_TOKEN); "app": one GitHub App installation, its key in TF_VAR_github_app_private_key.
    auth: Literal["token", "app"] = "token"
    app_id: int | None = None  # the App's numeric id (auth = "app" only)
    installation_id: int | None = None  # its installation on the owner (auth = "app" only)
    # "repository": runners registered on each served repository; "organization": on the
    # organization, into each pool's runner group (owner_type "organization" only).
    runner_scope: Literal["repository", "organization"] = "repository"


@dataclass(frozen=True)
class Constraint:
    attribute: str
    operator: str
    value: str


@dataclass(frozen=True)
class PoolConfig:
    name: str
    labels: tuple[str, ...]
    image: str | None  # overrides images.runner for this pool
    driver: str  # Nomad task driver; the jobspec's task configs are docker-style
    cpu: int  # MHz
    memory: int  # MB
    idle_timeout_seconds: int
    max_duration_seconds: int
    max_runners: int
    constraints: tuple[Constraint, ...]
    # GitHub runner group the runners join: 1 is the default group; other groups exist only in
    # organizations (and must be open to the repositories using the pool).
    runner_group_id: int
    # Nomad node pool of this pool's runners; None: nomad.node_pool (where cloudflared runs too).
    node_pool: str | None = None
    pids_limit: int = 4096  # processes and threads the runner task may hold at once
    disk: int = 10240  # MB the allocation reserves on its node (Nomad ephemeral_disk)
    # True: the image's own sudo rules (passwordless in the official image); False: the runner
    # task runs without supplementary groups and with no-new-privileges, so sudo cannot work.
    sudo: bool = True
    # "none": no Docker daemon; "dind": a privileged Docker daemon sidecar in each allocation,
    # taking half of cpu and memory (the containers of a job run inside it).
    docker: Literal["none", "dind"] = "none"
    registry_mirror: str | None = None  # a pull-through cache for the dind daemon (Docker Hub)
    # Keep the pool's images on every eligible node (runner_job/prewarm.nomad.hcl), so the first
    # job on a node does not wait for the runner image to download.
    prewarm: bool = False

    @property
    def docker_share(self) -> tuple[int, int]:
        """(cpu MHz, memory MB) of the Docker daemon task of a dind pool; the runner gets the
        rest of ``cpu`` and ``memory``. Half each: a job's containers run inside the daemon."""
        if self.docker != "dind":
            return (0, 0)
        return (self.cpu // 2, self.memory // 2)

    @property
    def nomad_job(self) -> str:
        return f"{RUNNER_JOB_PREFIX}{self.name}"

    @property
    def prewarm_job(self) -> str:
        return f"{PREWARM_JOB_PREFIX}{self.name}"


@dataclass(frozen=True)
class ImagesConfig:
    # None: the newest actions/runner release, looked up at every plan (the default); otherwise
    # a pinned reference, which plans warn about once GitHub's version window leaves it behind.
    runner: str | None
    helper: str
    cloudflared: str
    dind: str | None = None  # the Docker daemon of dind pools; required once a pool uses dind


@dataclass(frozen=True)
class BackendConfig:
    """Where Terraform keeps each stack's state.

    ``local``: ``{path}/{stack}.tfstate`` with ``path`` relative to the stack's directory;
    ``s3``: ``s3://{bucket}/{key_prefix}/{stack}.tfstate``; ``remote``: HCP Terraform /
    Terraform Enterprise workspaces ``{workspace_prefix}{stack}``. Credentials for remote
    backends come from their usual environment variables, never from here.
    """

    type: Literal["local", "s3", "remote"]
    settings: Mapping[str, str]


@dataclass(frozen=True)
class ReconcileConfig:
    """How often the Worker's reconciler looks for queued jobs the webhooks did not serve, which
    Workers plan it is sized for (``plan``: ``free``, 10 ms of CPU per invocation, or ``paid``)
    and how many outbound requests one run may send (``request_budget``: by default 10 on the
    Free plan, 40 on a paid one; at most 40 on Free, 950 on paid)."""

    interval_minutes: int
    request_budget: int = PLAN_DEFAULT_REQUEST_BUDGET[DEFAULT_WORKERS_PLAN]
    plan: str = DEFAULT_WORKERS_PLAN

    @property
    def cron(self) -> str:
        """The Cron Trigger schedule: every ``interval_minutes`` (a divisor of 60), in UTC."""
        return "0 * * * *" if self.interval_minutes == 60 else f"*/{self.interval_minutes} * * * *"


DEFAULT_RECONCILE_MINUTES: Final = 5


@dataclass(frozen=True)
class AppConfig:
    source: str
    cloudflare: CloudflareConfig
    nomad: NomadConfig
    github: GitHubConfig
    pools: tuple[PoolConfig, ...]
    images: ImagesConfig
    backend: BackendConfig
    reconcile: ReconcileConfig = ReconcileConfig(DEFAULT_RECONCILE_MINUTES)

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def runner_image(self, pool: PoolConfig) -> str | None:
        """The pool's runner image; None means the newest actions/runner release at plan time."""
        return pool.image or self.images.runner

    def routing(self) -> Routing:
        """The routing document the Worker reads from its ROUTING binding."""
        return Routing(
            namespace=self.nomad.namespace,
            pools=tuple(
                PoolRoute(
                    name=pool.name,
                    labels=frozenset(label.lower() for label in pool.labels),
                    nomad_job=pool.nomad_job,
                    max_runners=pool.max_runners,
                )
                for pool in self.pools
            ),
            repositories={repo.full_name.lower(): repo.pools for repo in self.github.repositories},
            fork_pull_requests={
                repo.full_name.lower(): repo.fork_pull_requests for repo in self.github.repositories
            },
            repository_max_runners={
                repo.full_name.lower(): repo.max_runners
                for repo in self.github.repositories
                if repo.max_runners is not None
            },
        )


def load_config(path: str | Path) -> AppConfig:
    """Read and validate one configuration file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{source}: cannot read the configuration file ({error})") from None
    return loads_config(text, source=source)


def loads_config(text: str, *, source: str = "<config>") -> AppConfig:
    """Validate configuration given as TOML text; ``source`` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML ({error})") from None
    return parse_config(document, source=source)


def parse_config(document: Mapping[str, Any], *, source: str = "<config>") -> AppConfig:
    """Validate an already parsed document (what ``tomllib`` returns)."""
    root = _Table(document, source, "")
    with root:
        cloudflare = _cloudflare(root.table("cloudflare"))
        nomad = _nomad(root.table("nomad"))
        images = _images(root.table("images"))
        pools = _pools(root)
        for index, pool in enumerate(pools):
            if pool.docker == "dind" and images.dind is None:
                raise root.error(
                    "images.dind",
                    f"missing required field: pools[{index}] ('{pool.name}') has docker = "
                    '"dind" and needs a pinned Docker daemon image, e.g. docker:29.7.2-dind',
                )
        github = _github(root.table("github"), pools)
        backend = _backend(root.optional_table("backend"))
        reconcile = _reconcile(root.optional_table("reconcile"))
        for index, pool in enumerate(pools):
            if pool.runner_group_id == DEFAULT_RUNNER_GROUP_ID:
                continue
            if github.owner_type == "user":
                raise root.error(
                    f"pools[{index}].runner_group_id",
                    "runner groups exist only in organizations (github.owner_type is "
                    "'user'): leave it at 1",
                )
            if github.runner_scope != "organization":
                # A repository's own runners have no runner group: GitHub puts them in the
                # default one whatever the request says.
                raise root.error(
                    f"pools[{index}].runner_group_id",
                    f"runner group {pool.runner_group_id} holds organization runners: set "
                    'github.runner_scope = "organization", or leave it at 1',
                )
    return AppConfig(
        source=source,
        cloudflare=cloudflare,
        nomad=nomad,
        github=github,
        pools=pools,
        images=images,
        backend=backend,
        reconcile=reconcile,
    )


class _Table:
    """Typed access to one TOML table that remembers its path and which keys were read.

    Used as a context manager: leaving it reports any key nobody asked for (a typo, or a field
    this version does not know).
    """

    def __init__(self, data: Mapping[str, Any], source: str, path: str) -> None:
        self._data = data
        self._source = source
        self._path = path
        self._seen: set[str] = set()

    def where(self, key: str | None = None) -> str:
        if key is None:
            return self._path or "(top level)"
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self._source}: {self.where(key)}: {message}")

    def __enter__(self) -> _Table:
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None:
            return
        unknown = sorted(set(self._data) - self._seen)
        if unknown:
            raise self.error(unknown[0], "unknown field (check the spelling)")

    def _get(self, key: str, default: Any = None, *, required: bool = True) -> Any:
        self._seen.add(key)
        if key not in self._data:
            if required:
                raise self.error(key, "missing required field")
            return default
        return self._data[key]

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default, required=default is None)
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_kind(value)}")
        if not value.strip():
            raise self.error(key, "must not be empty")
        return value

    def optional_string(self, key: str) -> str | None:
        value = self._get(key, None, required=False)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def integer(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self._get(key, default, required=default is None)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"expected an integer, got {_kind(value)}")
        if value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, default, required=False)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_kind(value)}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in choices:
            known = ", ".join(f"'{choice}'" for choice in choices)
            raise self.error(key, f"expected one of {known}, got '{value}'")
        return value

    def strings(self, key: str, default: list[str] | None = None) -> tuple[str, ...]:
        value = self._get(key, default, required=default is None)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of strings, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise self.error(
                    f"{key}[{index}]", f"expected a non-empty string, got {_kind(item)}"
                )
        return tuple(value)

    def table(self, key: str) -> _Table:
        value = self._get(key)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_kind(value)}")
        return _Table(value, self._source, self.where(key))

    def optional_table(self, key: str) -> _Table:
        value = self._get(key, {}, required=False)
        if not isinstance(value, dict):
            raise self.error(key, f"expected a table, got {_kind(value)}")
        return _Table(value, self._source, self.where(key))

    def tables(self, key: str, *, required: bool = True) -> Iterator[_Table]:
        value = self._get(key, [], required=required)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list of tables ([[{key}]]), got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{key}[{index}]", f"expected a table, got {_kind(item)}")
            yield _Table(item, self._source, self.where(f"{key}[{index}]"))

    def raw_value(self, key: str) -> Any:
        """The field's value as written (None when absent); the key counts as read."""
        return self._get(key, None, required=False)

    def raw_list(self, key: str) -> list[Any]:
        value = self._get(key, [], required=False)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_kind(value)}")
        return value

    def child(self, data: Mapping[str, Any], key: str) -> _Table:
        return _Table(data, self._source, self.where(key))


def _kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    for python_type, name in kinds.items():
        if type(value) is python_type:
            return name
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _hostname(table: _Table, key: str) -> str:
    value = table.string(key)
    labels = value.split(".")
    if value != value.lower() or len(value) > 253 or len(labels) < 2:
        raise table.error(key, f"'{value}' is not a lower-case DNS name like 'a.example.com'")
    for label in labels:
        if not _DNS_LABEL.match(label):
            raise table.error(key, f"'{value}' is not a valid DNS name (bad label '{label}')")
    return value


def _url(table: _Table, key: str, default: str | None = None) -> str:
    value = table.string(key, default)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise table.error(key, f"'{value}' is not an http(s) URL")
    if parts.query or parts.fragment or parts.username:
        raise table.error(key, f"'{value}': no credentials, query or fragment allowed")
    return value.rstrip("/")


def _cloudflare(table: _Table) -> CloudflareConfig:
    with table:
        account_id = table.string("account_id")
        if not _HEX32.match(account_id):
            raise table.error("account_id", "expected 32 lower-case hex digits")
        zone_id = table.string("zone_id")
        if not _HEX32.match(zone_id):
            raise table.error("zone_id", "expected 32 lower-case hex digits")
        zone_name = _hostname(table, "zone_name")
        hostnames = {}
        for key in ("webhook_hostname", "nomad_api_hostname"):
            host = _hostname(table, key)
            if not host.endswith(f".{zone_name}"):
                raise table.error(key, f"'{host}' is not within the zone '{zone_name}'")
            hostnames[key] = host
        if hostnames["webhook_hostname"] == hostnames["nomad_api_hostname"]:
            raise table.error("nomad_api_hostname", "must differ from webhook_hostname")
        prefix = table.string("resource_prefix", "github-runners")
        if not _PREFIX.match(prefix):
            raise table.error("resource_prefix", "expected lower-case letters, digits and '-'")
    return CloudflareConfig(
        account_id=account_id,
        zone_id=zone_id,
        zone_name=zone_name,
        webhook_hostname=hostnames["webhook_hostname"],
        nomad_api_hostname=hostnames["nomad_api_hostname"],
        resource_prefix=prefix,
    )


def _nomad(table: _Table) -> NomadConfig:
    with table:
        address = _url(table, "address")
        namespace = table.string("namespace", DEFAULT_NAMESPACE)
        if not _NOMAD_NAME.match(namespace):
            raise table.error("namespace", "expected letters, digits, '-' and '_' only")
        if namespace == "default":
            # The Worker's token may dispatch any parameterized job in the namespace.
            raise table.error(
                "namespace",
                "runner jobs need a namespace of their own, not Nomad's 'default' (the Worker's "
                "token may dispatch any parameterized job in it)",
            )
        datacenters = table.strings("datacenters", ["*"])
        if not datacenters:
            raise table.error("datacenters", "must list at least one datacenter (or '*')")
        node_pool = table.string("node_pool", "default")
        if not _NOMAD_NAME.match(node_pool):
            raise table.error("node_pool", "expected letters, digits, '-' and '_' only")
        tunnel_origin = _url(table, "tunnel_origin", "http://127.0.0.1:4646")
        if urlsplit(tunnel_origin).path:
            # cloudflared refuses such an ingress rule: requests keep their own path.
            raise table.error(
                "tunnel_origin", f"'{tunnel_origin}': a scheme, host and port only, no path"
            )
    return NomadConfig(
        address=address,
        namespace=namespace,
        datacenters=datacenters,
        node_pool=node_pool,
        tunnel_origin=tunnel_origin,
    )


def _image(table: _Table, key: str, value: str) -> str:
    """An image reference pinned to a tag or digest: never untagged, never a floating tag."""
    if any(char.isspace() for char in value) or "${" in value or "%{" in value:
        raise table.error(key, f"'{value}' is not an image reference")
    if "@sha256:" in value:
        return value
    last = PurePosixPath(value.split("@", 1)[0]).name
    if ":" not in last:
        raise table.error(key, f"'{value}' is not pinned: add a version tag or a digest")
    tag = last.rsplit(":", 1)[1]
    if not tag or tag.lower() in _FLOATING_TAGS:
        raise table.error(key, f"'{value}' uses the floating tag '{tag}': pin a version")
    return value


def _split_reference(image: str) -> tuple[str, str]:
    """(repository, tag) of an image reference; the tag is "" when there is none."""
    name = image.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    repository, colon, tag = last.partition(":")
    return f"{head}{slash}{repository}", tag if colon else ""


def runner_version(image: str) -> tuple[int, int, int] | None:
    """The actions/runner version of an official runner image reference, None for other images.

    ``ghcr.io/actions/actions-runner:2.330.0`` (optionally ``@sha256:...`` after the tag) gives
    ``(2, 330, 0)``. Only references ``load_config`` accepted are expected here.
    """
    repository, tag = _split_reference(image)
    if repository != OFFICIAL_RUNNER_IMAGE:
        return None
    match = _RUNNER_VERSION_TAG.match(tag)
    if match is None:
        raise ValueError(f"'{image}' has no runner version tag")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def _runner_image(table: _Table, key: str, value: str) -> str:
    """A runner image pin; the official image only by a release version GitHub still registers."""
    image = _image(table, key, value)
    repository, tag = _split_reference(image)
    if repository != OFFICIAL_RUNNER_IMAGE:
        return image  # another image: keeping its runner current is up to whoever builds it
    if not tag:
        raise table.error(
            key,
            f"'{image}': pin the official runner by its release version (e.g. "
            f"'{OFFICIAL_RUNNER_IMAGE}:2.330.0', a digest may follow), so that every plan can "
            "check it against GitHub's runner version window",
        )
    if not _RUNNER_VERSION_TAG.match(tag):
        raise table.error(
            key,
            f"'{image}': the official runner's tags are release versions such as '2.330.0', "
            f"not '{tag}'",
        )
    version = runner_version(image)
    if version is not None and version < MIN_RUNNER_VERSION:
        floor = ".".join(str(part) for part in MIN_RUNNER_VERSION)
        raise table.error(
            key,
            f"'{image}': GitHub registers no runner older than {floor}; pin a current release, "
            "or remove the pin to follow the newest one",
        )
    return image


def _images(table: _Table) -> ImagesConfig:
    with table:
        pinned = table.optional_string("runner")
        runner = None if pinned is None else _runner_image(table, "runner", pinned)
        helper = _image(table, "helper", table.string("helper"))
        cloudflared = _image(table, "cloudflared", table.string("cloudflared"))
        dind = table.optional_string("dind")
        if dind is not None:
            dind = _image(table, "dind", dind)
            # The docker library image's variant tags (dind, 29-dind, dind-rootless) all move:
            # only a full version, or a digest, is a pin.
            tag = PurePosixPath(dind.split("@", 1)[0]).name.rsplit(":", 1)[-1]
            if "@sha256:" not in dind and not re.match(r"^\d+\.\d+\.\d+", tag):
                raise table.error(
                    "dind",
                    f"'{dind}' uses the floating tag '{tag}': pin a full version such as "
                    "docker:29.7.2-dind",
                )
    return ImagesConfig(runner=runner, helper=helper, cloudflared=cloudflared, dind=dind)


def _pools(root: _Table) -> tuple[PoolConfig, ...]:
    pools: list[PoolConfig] = []
    for table in root.tables("pools"):
        with table:
            name = table.string("name")
            if not POOL_NAME_PATTERN.match(name):
                raise table.error("name", f"'{name}': expected lower-case letters, digits and '-'")
            if any(pool.name == name for pool in pools):
                raise table.error("name", f"duplicate pool '{name}'")
            labels = table.strings("labels")
            lowered = [label.lower() for label in labels]
            if SELF_HOSTED not in lowered:
                raise table.error("labels", f"must include '{SELF_HOSTED}'")
            if len(set(lowered)) != len(lowered):
                raise table.error("labels", "duplicate label (labels are case-insensitive)")
            if len(labels) > 100:
                raise table.error("labels", "GitHub allows at most 100 labels")
            image = table.optional_string("image")
            if image is not None:
                image = _runner_image(table, "image", image)
            idle = table.integer("idle_timeout_seconds", 600, minimum=60)
            maximum = table.integer("max_duration_seconds", 21600, minimum=60)
            if maximum <= idle:
                raise table.error(
                    "max_duration_seconds", "must be longer than idle_timeout_seconds"
                )
            pool = PoolConfig(
                name=name,
                labels=labels,
                image=image,
                driver=_driver(table),
                cpu=table.integer("cpu", 2000, minimum=100),
                memory=table.integer("memory", 4096, minimum=128),
                idle_timeout_seconds=idle,
                max_duration_seconds=maximum,
                max_runners=table.integer("max_runners", 10),
                constraints=_constraints(table),
                runner_group_id=table.integer("runner_group_id", 1),
                node_pool=_pool_node_pool(table),
                pids_limit=table.integer("pids_limit", 4096, minimum=64),
                disk=table.integer("disk", 10240, minimum=1024),
                sudo=table.boolean("sudo", True),
                **_docker(table),
                prewarm=table.boolean("prewarm", False),
            )
        pools.append(pool)
    if not pools:
        raise root.error("pools", "define at least one [[pools]] table")
    return tuple(pools)


def _pool_node_pool(table: _Table) -> str | None:
    node_pool = table.optional_string("node_pool")
    if node_pool is not None and not _NOMAD_NAME.match(node_pool):
        raise table.error("node_pool", "expected letters, digits, '-' and '_' only")
    return node_pool


def _docker(table: _Table) -> dict[str, Any]:
    """The pool's docker mode and registry mirror, checked against its driver and resources."""
    mode = table.string("docker", "none")
    if mode not in DOCKER_MODES:
        known = ", ".join(f'"{name}"' for name in DOCKER_MODES)
        raise table.error("docker", f"'{mode}' is not a docker mode (known: {known})")
    mirror = table.optional_string("registry_mirror")
    if mode != "dind":
        if mirror is not None:
            raise table.error(
                "registry_mirror", 'only a pool with docker = "dind" has a daemon to use a mirror'
            )
        return {"docker": "none", "registry_mirror": None}
    driver = table.string("driver", "docker")
    if driver not in DIND_DRIVERS:
        raise table.error(
            "docker",
            f'"dind" needs the docker driver (its privileged mode, allowed by the client\'s '
            f"allow_privileged); driver '{driver}' cannot run the daemon",
        )
    cpu = table.integer("cpu", 2000, minimum=100)
    memory = table.integer("memory", 4096, minimum=128)
    if cpu < 1000 or memory < 2048:
        raise table.error(
            "docker",
            f'"dind" splits cpu and memory in half between the runner and its Docker daemon: '
            f"give the pool at least cpu = 1000 and memory = 2048 (it has {cpu} and {memory})",
        )
    if mirror is not None:
        mirror = _url(table, "registry_mirror")
        if urlsplit(mirror).path:
            raise table.error(
                "registry_mirror", f"'{mirror}': a scheme, host and port only, no path"
            )
    return {"docker": "dind", "registry_mirror": mirror}


def _driver(table: _Table) -> str:
    driver = table.string("driver", "docker")
    if driver not in TASK_DRIVERS:
        known = ", ".join(TASK_DRIVERS)
        raise table.error("driver", f"'{driver}' is not supported (supported: {known})")
    return driver


def _constraints(table: _Table) -> tuple[Constraint, ...]:
    constraints = []
    for index, raw in enumerate(table.raw_list("constraints")):
        key = f"constraints[{index}]"
        if not isinstance(raw, dict):
            raise table.error(key, f"expected a table, got {_kind(raw)}")
        with table.child(raw, key) as entry:
            attribute = entry.string("attribute")
            operator = entry.string("operator", "=")
            if operator not in _CONSTRAINT_OPERATORS:
                raise entry.error("operator", f"unknown Nomad constraint operator '{operator}'")
            # Operators such as is_set and distinct_hosts take no value.
            value = entry.optional_string("value") or ""
        constraints.append(Constraint(attribute=attribute, operator=operator, value=value))
    return tuple(constraints)


def _github(table: _Table, pools: tuple[PoolConfig, ...]) -> GitHubConfig:
    pool_names = tuple(pool.name for pool in pools)
    with table:
        owner = table.string("owner")
        if not _OWNER.match(owner):
            raise table.error("owner", f"'{owner}' is not a GitHub user or organization name")
        owner_type = table.string("owner_type", "organization")
        if owner_type not in ("user", "organization"):
            raise table.error(
                "owner_type", f"expected 'user' or 'organization', got '{owner_type}'"
            )
        api_url = _url(table, "api_url", "https://api.github.com")
        auth = _auth(table)
        runner_scope = table.choice("runner_scope", RUNNER_SCOPES, "repository")
        if runner_scope == "organization" and owner_type != "organization":
            raise table.error(
                "runner_scope",
                f"organization runners need an organization owner (github.owner_type is "
                f"'{owner_type}'): use \"repository\"",
            )
        fork_default = table.choice("fork_pull_requests", FORK_POLICIES, FORK_POLICY_REFUSE)
        default_cap = _optional_integer(table, "max_runners_per_repository")
        repositories: list[RepositoryConfig] = []
        seen: set[str] = set()
        raw_repositories = table.raw_list("repositories")
        if not raw_repositories:
            raise table.error("repositories", "list at least one repository")
        for index, raw in enumerate(raw_repositories):
            key = f"repositories[{index}]"
            repository = _repository(table, key, raw, owner, pool_names, fork_default)
            if repository.max_runners is None and default_cap is not None:
                repository = replace(repository, max_runners=default_cap)
            lowered = repository.full_name.lower()
            if lowered in seen:
                raise table.error(key, f"duplicate repository '{repository.full_name}'")
            seen.add(lowered)
            repositories.append(repository)
    return GitHubConfig(
        owner=owner,
        owner_type="user" if owner_type == "user" else "organization",
        repositories=tuple(repositories),
        api_url=api_url,
        fork_pull_requests=fork_default,
        auth="app" if auth[0] == "app" else "token",
        app_id=auth[1],
        installation_id=auth[2],
        runner_scope="organization" if runner_scope == "organization" else "repository",
    )


def _auth(table: _Table) -> tuple[str, int | None, int | None]:
    """``auth`` and, for an App, its id and installation id (the key is never in the file)."""
    auth = table.choice("auth", GITHUB_AUTH_KINDS, "token")
    if auth == "token":
        for key in ("app_id", "installation_id"):
            if table.raw_value(key) is not None:
                raise table.error(key, 'only with auth = "app" (auth is "token")')
        return auth, None, None
    # Both are shown on the App's settings and installation pages; the provider wants numbers.
    return auth, table.integer("app_id"), table.integer("installation_id")


def _repository(
    table: _Table,
    key: str,
    raw: Any,
    owner: str,
    pool_names: tuple[str, ...],
    fork_default: str,
) -> RepositoryConfig:
    """A repository is a name (``"app"``) or a table (``{ name = "app", pools = [...],
    fork_pull_requests = "refuse", allow_public = false, max_runners = 2 }``)."""
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise table.error(key, f"expected a repository name or a table, got {_kind(raw)}")
    with table.child(raw, key) as entry:
        name = entry.string("name")
        if "/" in name:
            given_owner, _, name = name.partition("/")
            if given_owner.lower() != owner.lower():
                raise entry.error(
                    "name", f"'{given_owner}/{name}' is not owned by github.owner '{owner}'"
                )
        if not _REPO_NAME.match(name) or name in (".", ".."):
            raise entry.error("name", f"'{name}' is not a GitHub repository name")
        chosen = entry.strings("pools", list(pool_names))
        if not chosen:
            raise entry.error("pools", "list at least one pool (or leave it out for all)")
        for pool in chosen:
            if pool not in pool_names:
                known = ", ".join(pool_names)
                raise entry.error("pools", f"unknown pool '{pool}' (known pools: {known})")
        if len(set(chosen)) != len(chosen):
            raise entry.error("pools", "duplicate pool")
        forks = entry.choice("fork_pull_requests", FORK_POLICIES, fork_default)
        allow_public = entry.boolean("allow_public", False)
        cap = _optional_integer(entry, "max_runners")
    return RepositoryConfig(
        name=name,
        full_name=f"{owner}/{name}",
        pools=chosen,
        fork_pull_requests=forks,
        allow_public=allow_public,
        max_runners=cap,
    )


def _optional_integer(table: _Table, key: str) -> int | None:
    """A positive integer, or None when the field is absent."""
    if table.raw_value(key) is None:
        return None
    return table.integer(key)


def _backend(table: _Table) -> BackendConfig:
    with table:
        kind = table.string("type", "local")
        settings: dict[str, str] = {}
        if kind == "local":
            # Relative to the directory that holds cdktf.out/ (the project root for `make synth`).
            path = table.string("path", "terraform-state").rstrip("/")
            if PurePosixPath(path).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", path):
                raise table.error("path", "must be relative (absolute paths differ per machine)")
            settings["path"] = path
        elif kind == "s3":
            settings["bucket"] = table.string("bucket")
            settings["region"] = table.string("region")
            settings["key_prefix"] = table.string("key_prefix", "nomad-github-runners").strip("/")
            for optional in ("endpoint", "dynamodb_table"):
                value = table.optional_string(optional)
                if value is not None:
                    settings[optional] = value
        elif kind == "remote":
            settings["organization"] = table.string("organization")
            settings["workspace_prefix"] = table.string("workspace_prefix", "github-runners-")
            settings["hostname"] = table.string("hostname", "app.terraform.io")
        else:
            raise table.error("type", f"expected 'local', 's3' or 'remote', got '{kind}'")
    backend_type: Literal["local", "s3", "remote"] = (
        "local" if kind == "local" else "s3" if kind == "s3" else "remote"
    )
    return BackendConfig(type=backend_type, settings=settings)


def _reconcile(table: _Table) -> ReconcileConfig:
    with table:
        minutes = table.integer("interval_minutes", DEFAULT_RECONCILE_MINUTES)
        # A cron step that does not divide the hour fires unevenly (*/7: minute 56, then 0).
        if minutes > 60 or 60 % minutes:
            raise table.error(
                "interval_minutes",
                f"must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60), got {minutes}",
            )
        plan = table.string("plan", DEFAULT_WORKERS_PLAN)
        if plan not in WORKERS_PLANS:
            known = " or ".join(f"'{name}'" for name in WORKERS_PLANS)
            raise table.error("plan", f"expected {known} (your Workers plan), got '{plan}'")
        budget = table.integer(
            "request_budget",
            PLAN_DEFAULT_REQUEST_BUDGET[plan],
            minimum=MIN_RECONCILE_REQUEST_BUDGET,
        )
        if budget > PLAN_MAX_REQUEST_BUDGET[plan]:
            allowance = (
                "the Free plan allows 50 subrequests and 10 ms of CPU per invocation; on a paid "
                "plan set plan = 'paid'"
                if plan == "free"
                else "Workers allow 1,000 subrequests per invocation on paid plans, KV included"
            )
            raise table.error(
                "request_budget",
                f"must be at most {PLAN_MAX_REQUEST_BUDGET[plan]} with plan = '{plan}' "
                f"({allowance}), got {budget}",
            )
    return ReconcileConfig(interval_minutes=minutes, request_budget=budget, plan=plan)
