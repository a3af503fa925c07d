"""The one configuration file of a deployment, read and validated once.

``load_config(path)`` reads a TOML file into frozen pydantic models (``AppConfig``); nothing else
in the app reads the file or the environment for settings. Every problem is a ``ConfigError``
whose message names the file, the dotted field path and what is wrong, e.g.
``examples/config.toml: github.repositories[2].pools: unknown pool 'gpu'``. Unknown keys are
errors too, so a typo never silently falls back to a default.

The models declare the file's shape (types, defaults, unknown keys refused) and are the source
of ``config.schema.json`` (``python -m config --schema``), which editors reading TOML schemas
use to complete and check the file. The wording of every problem is ours, not pydantic's:
validators raise ``_problem(...)`` with the message, and ``_message`` turns the first error
pydantic reports into ``<file>: <path>: <problem>``. Checks that need another section (a
repository's pools, the owner of a repository, the defaults ``[github]`` gives its
repositories) read what earlier sections left in the validation context: pydantic validates
fields in the order they are declared, so ``pools`` comes before ``github``.

No field holds a secret: credentials are sensitive Terraform variables or generated at deploy
time (see the README). The app side only: ``handler/`` stays standard library.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Strict,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from handler.contract import (
    DEFAULT_WORKERS_PLAN,
    FORK_POLICIES,
    FORK_POLICY_REFUSE,
    MAX_RECONCILE_REQUEST_BUDGET,
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
BACKEND_TYPES: Final = ("local", "s3", "remote")
# How the runner tasks, the Worker's reads and the hooks' Terraform authenticate to GitHub: one
# fine-grained token per role, or one GitHub App installation for all three (its private key a
# sensitive Terraform variable, never a field here).
GITHUB_AUTH_KINDS: Final = ("token", "app")
# Where runners are registered: each repository's own runners, or the organization's (into the
# pools' runner groups).
RUNNER_SCOPES: Final = ("repository", "organization")
DEFAULT_RUNNER_GROUP_ID: Final = 1
SCHEMA_FILE: Final = Path(__file__).resolve().parent / "config.schema.json"

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_OWNER = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,38})$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_NOMAD_NAME = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_CONSTRAINT_OPERATORS: Final = (
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
)
# A tag that moves under you is not a pin.
_FLOATING_TAGS: Final = frozenset({"latest", "stable", "edge", "main", "master", "nightly"})
# The official runner image; its tags are actions/runner release versions ("2.330.0" for the
# release "v2.330.0"). A pin of it is checked against GitHub's version window at every plan.
OFFICIAL_RUNNER_IMAGE: Final = "ghcr.io/actions/actions-runner"
# github.com registers no runner older than this (enforced since 2026-09-25).
MIN_RUNNER_VERSION: Final = (2, 329, 0)
_RUNNER_VERSION_TAG = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
DEFAULT_RECONCILE_MINUTES: Final = 5


class ConfigError(ValueError):
    """The configuration is invalid; the message says where (file and field) and why."""


# --- Problems and their wording -------------------------------------------------------------


def _problem(message: str, *field: str | int) -> PydanticCustomError:
    """A validation problem in our words; ``field`` continues the path of where it was raised
    (a model validator names the field it is about)."""
    return PydanticCustomError("config", "{problem}", {"problem": message, "field": field})


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


def _path(loc: tuple[str | int, ...]) -> str:
    """``('github', 'repositories', 2, 'pools')`` as ``github.repositories[2].pools``."""
    text = ""
    for step in loc:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else step
    return text or "(top level)"


def _backend_problem(backend: object) -> tuple[tuple[str, ...], str]:
    """The field and problem of a [backend] table whose ``type`` picks no backend."""
    if not isinstance(backend, dict):
        return (), f"expected a table, got {_kind(backend)}"
    kind = backend.get("type")
    if not isinstance(kind, str):
        return ("type",), f"expected a string, got {_kind(kind)}"
    return ("type",), f"expected 'local', 's3' or 'remote', got '{kind}'"


def _message(source: str, error: ErrorDetails) -> str:
    """One pydantic error as ``<file>: <dotted path>: <problem>``."""
    loc = tuple(error["loc"])
    # The backend union's errors carry the chosen member's tag ('s3') after 'backend'.
    if len(loc) > 1 and loc[0] == "backend" and loc[1] in BACKEND_TYPES:
        loc = loc[:1] + loc[2:]
    kind = error["type"]
    value = error["input"]
    context = error.get("ctx") or {}
    if kind == "config":
        loc += tuple(context["field"])
        problem = str(context["problem"])
    elif kind == "missing":
        problem = "missing required field"
    elif kind == "extra_forbidden":
        problem = "unknown field (check the spelling)"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        problem = f"expected an integer, got {_kind(value)}"
    elif kind in ("bool_type", "bool_parsing"):
        problem = f"expected true or false, got {_kind(value)}"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        problem = f"expected a table, got {_kind(value)}"
    elif kind == "greater_than_equal":
        problem = f"must be at least {context['ge']}, got {value}"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        field, problem = _backend_problem(value)
        loc += field
    else:  # a shape no validator of ours words: pydantic's own sentence
        problem = error["msg"]
    return f"{source}: {_path(loc)}: {problem}"


# --- Field types: what a value must be, in our words -------------------------------------------


def _text(value: object) -> str:
    """A string with something in it (the required and defaulted string fields)."""
    if not isinstance(value, str):
        raise _problem(f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise _problem("must not be empty")
    return value


def _nonempty(value: object) -> str:
    """An optional string, or a list's item: present means non-empty."""
    if not isinstance(value, str) or not value.strip():
        raise _problem(f"expected a non-empty string, got {_kind(value)}")
    return value


def _list_of(what: str) -> Callable[[object], object]:
    def check(value: object) -> object:
        if not isinstance(value, list):
            raise _problem(f"expected {what}, got {_kind(value)}")
        return value

    return check


def _pattern(regex: re.Pattern[str], problem: Callable[[str], str]) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.match(value):
            raise _problem(problem(value))
        return value

    return AfterValidator(check)


def _choice(choices: tuple[str, ...], problem: Callable[[str], str]) -> BeforeValidator:
    def check(value: object) -> str:
        text = _text(value)
        if text not in choices:
            raise _problem(problem(text))
        return text

    return BeforeValidator(check)


def _schema(**keywords: Any) -> Any:
    """JSON Schema keywords for editors; the validators above enforce the same rules."""
    return Field(json_schema_extra=keywords)


# min_length never fails after these validators: it puts minLength in the schema.
Text = Annotated[str, BeforeValidator(_text), Field(min_length=1)]
NonEmpty = Annotated[str, BeforeValidator(_nonempty), Field(min_length=1)]
Strings = Annotated[tuple[NonEmpty, ...], BeforeValidator(_list_of("a list of strings"))]
Flag = Annotated[bool, Strict()]


Integer = Annotated[int, Strict()]
Positive = Annotated[Integer, Field(ge=1)]


def _hostname(value: str) -> str:
    labels = value.split(".")
    if value != value.lower() or len(value) > 253 or len(labels) < 2:
        raise _problem(f"'{value}' is not a lower-case DNS name like 'a.example.com'")
    for label in labels:
        if not _DNS_LABEL.match(label):
            raise _problem(f"'{value}' is not a valid DNS name (bad label '{label}')")
    return value


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _problem(f"'{value}' is not an http(s) URL")
    if parts.query or parts.fragment or parts.username:
        raise _problem(f"'{value}': no credentials, query or fragment allowed")
    return value.rstrip("/")


def _origin(value: str) -> str:
    """An http(s) URL of a scheme, host and port only."""
    value = _url(value)
    if urlsplit(value).path:
        raise _problem(f"'{value}': a scheme, host and port only, no path")
    return value


Hostname = Annotated[Text, AfterValidator(_hostname), _schema(format="hostname")]
Url = Annotated[Text, AfterValidator(_url), _schema(pattern="^https?://")]
Origin = Annotated[Text, AfterValidator(_origin), _schema(pattern="^https?://")]
_NOMAD_NAME_RULES = (
    _pattern(_NOMAD_NAME, lambda _: "expected letters, digits, '-' and '_' only"),
    _schema(pattern=_NOMAD_NAME.pattern),
)
NomadName = Annotated[Text, *_NOMAD_NAME_RULES]
OptionalNomadName = Annotated[NonEmpty, *_NOMAD_NAME_RULES]  # present means non-empty
Hex32 = Annotated[
    Text,
    _pattern(_HEX32, lambda _: "expected 32 lower-case hex digits"),
    _schema(pattern=_HEX32.pattern),
]


def _image(value: str) -> str:
    """An image reference pinned to a tag or digest: never untagged, never a floating tag."""
    if any(char.isspace() for char in value) or "${" in value or "%{" in value:
        raise _problem(f"'{value}' is not an image reference")
    if "@sha256:" in value:
        return value
    last = PurePosixPath(value.split("@", 1)[0]).name
    if ":" not in last:
        raise _problem(f"'{value}' is not pinned: add a version tag or a digest")
    tag = last.rsplit(":", 1)[1]
    if not tag or tag.lower() in _FLOATING_TAGS:
        raise _problem(f"'{value}' uses the floating tag '{tag}': pin a version")
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


def _runner_image(image: str) -> str:
    """A runner image pin; the official image only by a release version GitHub still registers."""
    image = _image(image)
    repository, tag = _split_reference(image)
    if repository != OFFICIAL_RUNNER_IMAGE:
        return image  # another image: keeping its runner current is up to whoever builds it
    if not tag:
        raise _problem(
            f"'{image}': pin the official runner by its release version (e.g. "
            f"'{OFFICIAL_RUNNER_IMAGE}:2.330.0', a digest may follow), so that every plan can "
            "check it against GitHub's runner version window"
        )
    if not _RUNNER_VERSION_TAG.match(tag):
        raise _problem(
            f"'{image}': the official runner's tags are release versions such as '2.330.0', "
            f"not '{tag}'"
        )
    version = runner_version(image)
    if version is not None and version < MIN_RUNNER_VERSION:
        floor = ".".join(str(part) for part in MIN_RUNNER_VERSION)
        raise _problem(
            f"'{image}': GitHub registers no runner older than {floor}; pin a current release, "
            "or remove the pin to follow the newest one"
        )
    return image


def _dind_image(image: str) -> str:
    image = _image(image)
    # The docker library image's variant tags (dind, 29-dind, dind-rootless) all move: only a
    # full version, or a digest, is a pin.
    tag = PurePosixPath(image.split("@", 1)[0]).name.rsplit(":", 1)[-1]
    if "@sha256:" not in image and not re.match(r"^\d+\.\d+\.\d+", tag):
        raise _problem(
            f"'{image}' uses the floating tag '{tag}': pin a full version such as "
            "docker:29.7.2-dind"
        )
    return image


Image = Annotated[Text, AfterValidator(_image)]
RunnerImage = Annotated[NonEmpty, AfterValidator(_runner_image)]


def _scope(info: ValidationInfo) -> dict[str, Any]:
    """What earlier sections told later ones (see the module docstring); empty when a model is
    validated on its own, outside ``parse_config``."""
    context = info.context
    return context if isinstance(context, dict) else {}


class _Section(BaseModel):
    """A table of the file: unknown keys refused, frozen once read."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


# --- The sections -------------------------------------------------------------------------------


class CloudflareConfig(_Section):
    """[cloudflare]: the account and zone the Worker and the Nomad API hostname live in."""

    account_id: Hex32
    """The Cloudflare account id (32 lower-case hex digits)."""
    zone_id: Hex32
    """The id of the zone both hostnames are in."""
    zone_name: Hostname
    """The zone's name, e.g. example.com."""
    webhook_hostname: Hostname
    """Where GitHub delivers webhooks (the Worker's route), within the zone."""
    nomad_api_hostname: Hostname
    """The Nomad API behind Cloudflare Access and the tunnel, within the zone."""
    resource_prefix: Annotated[
        Text,
        _pattern(_PREFIX, lambda _: "expected lower-case letters, digits and '-'"),
        _schema(pattern=_PREFIX.pattern),
    ] = "github-runners"
    """Prefix of the names of the Cloudflare resources created."""

    @model_validator(mode="after")
    def _hostnames_in_zone(self) -> CloudflareConfig:
        for key in ("webhook_hostname", "nomad_api_hostname"):
            host = getattr(self, key)
            if not host.endswith(f".{self.zone_name}"):
                raise _problem(f"'{host}' is not within the zone '{self.zone_name}'", key)
        if self.webhook_hostname == self.nomad_api_hostname:
            raise _problem("must differ from webhook_hostname", "nomad_api_hostname")
        return self


def _runner_namespace(namespace: str) -> str:
    if namespace == "default":
        # The Worker's token may dispatch any parameterized job in the namespace.
        raise _problem(
            "runner jobs need a namespace of their own, not Nomad's 'default' (the Worker's "
            "token may dispatch any parameterized job in it)"
        )
    return namespace


class NomadConfig(_Section):
    """[nomad]: the cluster the runner jobs and cloudflared run on."""

    address: Url
    """The Nomad API address Terraform uses, e.g. https://nomad.example.com:4646."""
    namespace: Annotated[NomadName, AfterValidator(_runner_namespace)] = DEFAULT_NAMESPACE
    """The runner jobs' own namespace (not 'default')."""
    datacenters: Annotated[Strings, _schema(minItems=1)] = ("*",)
    """Datacenters the jobs may run in; '*' for all."""
    node_pool: NomadName = "default"
    """Nomad node pool of cloudflared and, unless a pool says otherwise, of the runners."""
    tunnel_origin: Origin = "http://127.0.0.1:4646"
    """Where cloudflared reaches the Nomad API from its node: a scheme, host and port only."""

    @field_validator("datacenters")
    @classmethod
    def _some_datacenter(cls, datacenters: tuple[str, ...]) -> tuple[str, ...]:
        if not datacenters:
            raise _problem("must list at least one datacenter (or '*')")
        return datacenters


class ImagesConfig(_Section):
    """[images]: the container images of the jobs, each pinned by a tag or digest."""

    runner: RunnerImage | None = None
    """The runner image; left out: the newest actions/runner release, looked up at every plan.
    A pin of the official image is a release version and plans warn once GitHub's version window
    leaves it behind."""
    helper: Image
    """The image of the tasks that mint and remove runner registrations (Python)."""
    cloudflared: Image
    """The cloudflared image of the tunnel job."""
    dind: Annotated[NonEmpty, AfterValidator(_dind_image)] | None = None
    """The Docker daemon of dind pools, a full version such as docker:29.7.2-dind; required
    once a pool uses docker = "dind"."""


class Constraint(_Section):
    """A Nomad constraint on the nodes a pool's runners may use."""

    attribute: Text
    """e.g. ${attr.kernel.name}"""
    operator: Annotated[
        str,
        _choice(_CONSTRAINT_OPERATORS, lambda op: f"unknown Nomad constraint operator '{op}'"),
        _schema(enum=list(_CONSTRAINT_OPERATORS)),
    ] = "="
    value: NonEmpty = ""
    """Operators such as is_set and distinct_hosts take no value."""


class PoolConfig(_Section):
    """One [[pools]] table: a kind of runner, its labels, image, resources and walls."""

    name: Annotated[
        Text,
        _pattern(
            POOL_NAME_PATTERN, lambda name: f"'{name}': expected lower-case letters, digits and '-'"
        ),
        _schema(pattern=POOL_NAME_PATTERN.pattern),
    ]
    """The pool's name; its runner job is github-runner-<name>."""
    labels: Annotated[Strings, _schema(maxItems=100)]
    """The runs-on labels this pool serves; must include self-hosted."""
    image: RunnerImage | None = None
    """Overrides images.runner for this pool."""
    driver: Annotated[
        str,
        _choice(
            TASK_DRIVERS,
            lambda driver: f"'{driver}' is not supported (supported: {', '.join(TASK_DRIVERS)})",
        ),
        _schema(enum=list(TASK_DRIVERS)),
    ] = "docker"
    """Nomad task driver; the jobspec's task configs are docker-style."""
    cpu: Annotated[Integer, Field(ge=100)] = 2000
    """CPU in MHz."""
    memory: Annotated[Integer, Field(ge=128)] = 4096
    """Memory in MB."""
    idle_timeout_seconds: Annotated[Integer, Field(ge=60)] = 600
    """A runner that got no job within this long exits."""
    max_duration_seconds: Annotated[Integer, Field(ge=60)] = 21600
    """The longest a runner (and its job) may live."""
    max_runners: Positive = 10
    """The most runners of this pool at once."""
    constraints: Annotated[tuple[Constraint, ...], BeforeValidator(_list_of("a list"))] = ()
    """Nomad constraints on the nodes the runners may use."""
    runner_group_id: Positive = 1
    """GitHub runner group the runners join: 1 is the default group; other groups exist only in
    organizations (and must be open to the repositories using the pool)."""
    node_pool: OptionalNomadName | None = None
    """Nomad node pool of this pool's runners; left out: nomad.node_pool."""
    pids_limit: Annotated[Integer, Field(ge=64)] = 4096
    """Processes and threads the runner task may hold at once."""
    disk: Annotated[Integer, Field(ge=1024)] = 10240
    """MB the allocation reserves on its node (Nomad ephemeral_disk)."""
    sudo: Flag = True
    """true: the image's own sudo rules (passwordless in the official image); false: the runner
    task runs without supplementary groups and with no-new-privileges, so sudo cannot work."""
    docker: Annotated[
        Literal["none", "dind"],
        _choice(
            DOCKER_MODES,
            lambda mode: (
                f"'{mode}' is not a docker mode (known: "
                + ", ".join(f'"{name}"' for name in DOCKER_MODES)
                + ")"
            ),
        ),
    ] = "none"
    """"none": no Docker daemon; "dind": a privileged Docker daemon sidecar in each allocation,
    taking half of cpu and memory (the containers of a job run inside it)."""
    registry_mirror: Annotated[NonEmpty, AfterValidator(_origin)] | None = None
    """A pull-through cache for the dind daemon (Docker Hub): a scheme, host and port."""
    prewarm: Flag = False
    """Keep the pool's images on every eligible node (runner_job/prewarm.nomad.hcl), so the
    first job on a node does not wait for the runner image to download."""

    @field_validator("labels")
    @classmethod
    def _runner_labels(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        lowered = [label.lower() for label in labels]
        if SELF_HOSTED not in lowered:
            raise _problem(f"must include '{SELF_HOSTED}'")
        if len(set(lowered)) != len(lowered):
            raise _problem("duplicate label (labels are case-insensitive)")
        if len(labels) > 100:
            raise _problem("GitHub allows at most 100 labels")
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> PoolConfig:
        if self.max_duration_seconds <= self.idle_timeout_seconds:
            raise _problem("must be longer than idle_timeout_seconds", "max_duration_seconds")
        if self.docker != "dind":
            if self.registry_mirror is not None:
                raise _problem(
                    'only a pool with docker = "dind" has a daemon to use a mirror',
                    "registry_mirror",
                )
            return self
        if self.driver not in DIND_DRIVERS:
            raise _problem(
                f'"dind" needs the docker driver (its privileged mode, allowed by the client\'s '
                f"allow_privileged); driver '{self.driver}' cannot run the daemon",
                "docker",
            )
        if self.cpu < 1000 or self.memory < 2048:
            raise _problem(
                f'"dind" splits cpu and memory in half between the runner and its Docker '
                f"daemon: give the pool at least cpu = 1000 and memory = 2048 (it has "
                f"{self.cpu} and {self.memory})",
                "docker",
            )
        return self

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


ForkPolicy = Annotated[
    str,
    _choice(
        FORK_POLICIES,
        lambda policy: (
            "expected one of "
            + ", ".join(f"'{choice}'" for choice in FORK_POLICIES)
            + f", got '{policy}'"
        ),
    ),
    _schema(enum=list(FORK_POLICIES)),
]


def _repository_name(name: str) -> str:
    if not _REPO_NAME.match(name) or name in (".", ".."):
        raise _problem(f"'{name}' is not a GitHub repository name")
    return name


def _name_or_table(schema: dict[str, Any]) -> None:
    """In the file a repository is its name alone, or a table."""
    table = dict(schema)
    schema.clear()
    schema["anyOf"] = [
        {"type": "string", "description": "The repository's name (its pools: all pools)."},
        table,
    ]


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class RepositoryConfig(_Section):
    """A served repository: its name ("app"), or a table such as { name = "app", pools = [...],
    fork_pull_requests = "refuse", allow_public = false, max_runners = 2 }."""

    model_config = ConfigDict(json_schema_extra=_name_or_table)

    name: Annotated[Text, AfterValidator(_repository_name)]
    """The repository's name, optionally as owner/name with github.owner as the owner."""
    # Left out: every pool, filled in from what [[pools]] told the validation context.
    pools: Annotated[Strings, Field(json_schema_extra=_no_default)] = ()
    """The pools its jobs may use; left out: all pools."""
    fork_pull_requests: ForkPolicy = FORK_POLICY_REFUSE
    """Jobs of runs whose head repository is another one (fork pull requests): "refuse" or
    "allow"; left out: github.fork_pull_requests."""
    allow_public: Flag = False
    """The operator knows the repository is public and wants it served anyway: without this the
    github stack's plan fails for a public repository."""
    max_runners: Positive | None = None
    """The most runners this repository may hold at once, all its pools together; left out:
    github.max_runners_per_repository, else only the pools' caps apply."""

    _owner: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _with_github_defaults(cls, raw: Any, info: ValidationInfo) -> Any:
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise _problem(f"expected a repository name or a table, got {_kind(raw)}")
        scope = _scope(info)
        entry = dict(raw)
        name = entry.get("name")
        owner = scope.get("owner")
        if isinstance(name, str) and "/" in name and owner is not None:
            given_owner, _, entry["name"] = name.partition("/")
            if given_owner.lower() != owner.lower():
                raise _problem(f"'{name}' is not owned by github.owner '{owner}'", "name")
        if "pools" not in entry and "pool_names" in scope:
            entry["pools"] = list(scope["pool_names"])
        entry.setdefault("fork_pull_requests", scope.get("fork_default", FORK_POLICY_REFUSE))
        if "max_runners" not in entry and scope.get("default_cap") is not None:
            entry["max_runners"] = scope["default_cap"]
        return entry

    @field_validator("pools")
    @classmethod
    def _known_pools(cls, chosen: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not chosen:
            raise _problem("list at least one pool (or leave it out for all)")
        pool_names = _scope(info).get("pool_names")
        if pool_names is not None:
            for pool in chosen:
                if pool not in pool_names:
                    known = ", ".join(pool_names)
                    raise _problem(f"unknown pool '{pool}' (known pools: {known})")
        if len(set(chosen)) != len(chosen):
            raise _problem("duplicate pool")
        return chosen

    @model_validator(mode="after")
    def _owned(self, info: ValidationInfo) -> RepositoryConfig:
        self._owner = _scope(info).get("owner", "")
        return self

    @property
    def full_name(self) -> str:
        """ "owner/name" with github.owner as written in the configuration."""
        return f"{self._owner}/{self.name}"


def _app_ids(schema: dict[str, Any]) -> None:
    """For editors: what the [github] validator below requires of auth, in JSON Schema (Draft 7
    has if/then/else too, so Taplo checks it as well)."""
    schema["if"] = {"properties": {"auth": {"const": "app"}}, "required": ["auth"]}
    schema["then"] = {"required": ["app_id", "installation_id"]}
    schema["else"] = {
        "not": {"anyOf": [{"required": ["app_id"]}, {"required": ["installation_id"]}]}
    }


class GitHubConfig(_Section):
    """[github]: the owner of the served repositories and how their jobs are served."""

    model_config = ConfigDict(json_schema_extra=_app_ids)

    owner: Annotated[
        Text,
        _pattern(_OWNER, lambda owner: f"'{owner}' is not a GitHub user or organization name"),
        _schema(pattern=_OWNER.pattern),
    ]
    """The user or organization that owns the repositories."""
    owner_type: Annotated[
        Literal["user", "organization"],
        _choice(
            ("user", "organization"),
            lambda kind: f"expected 'user' or 'organization', got '{kind}'",
        ),
    ] = "organization"
    """Whether the owner is a user or an organization (runner groups exist only in the latter)."""
    api_url: Url = "https://api.github.com"
    """The GitHub REST API."""
    fork_pull_requests: ForkPolicy = FORK_POLICY_REFUSE
    """The default of every repository for jobs of fork pull requests: "refuse" or "allow"."""
    max_runners_per_repository: Positive | None = None
    """The default cap of runners per repository (all its pools together)."""
    repositories: Annotated[
        tuple[RepositoryConfig, ...], BeforeValidator(_list_of("a list")), _schema(minItems=1)
    ]
    """The served repositories: names, or tables with their own pools, fork policy and cap."""
    auth: Annotated[
        Literal["token", "app"],
        _choice(
            GITHUB_AUTH_KINDS,
            lambda kind: (
                "expected one of "
                + ", ".join(f"'{choice}'" for choice in GITHUB_AUTH_KINDS)
                + f", got '{kind}'"
            ),
        ),
    ] = "token"
    """"token": a fine-grained token per role (TF_VAR_github_runner_token,
    TF_VAR_github_read_token, GITHUB_TOKEN); "app": one GitHub App installation, its key in
    TF_VAR_github_app_private_key (never in this file)."""
    app_id: Positive | None = None
    """The App's numeric id (auth = "app" only)."""
    installation_id: Positive | None = None
    """Its installation on the owner (auth = "app" only)."""
    runner_scope: Annotated[
        Literal["repository", "organization"],
        _choice(
            RUNNER_SCOPES,
            lambda scope: (
                "expected one of "
                + ", ".join(f"'{choice}'" for choice in RUNNER_SCOPES)
                + f", got '{scope}'"
            ),
        ),
    ] = "repository"
    """"repository": runners registered on each served repository; "organization": on the
    organization, into each pool's runner group (owner_type "organization" only)."""

    @field_validator("owner")
    @classmethod
    def _tell_owner(cls, owner: str, info: ValidationInfo) -> str:
        _scope(info)["owner"] = owner
        return owner

    @field_validator("fork_pull_requests")
    @classmethod
    def _tell_fork_default(cls, policy: str, info: ValidationInfo) -> str:
        _scope(info)["fork_default"] = policy
        return policy

    @field_validator("max_runners_per_repository")
    @classmethod
    def _tell_default_cap(cls, cap: int | None, info: ValidationInfo) -> int | None:
        _scope(info)["default_cap"] = cap
        return cap

    @model_validator(mode="after")
    def _auth_and_scope(self) -> GitHubConfig:
        for key in ("app_id", "installation_id"):
            # Both are shown on the App's settings and installation pages.
            if self.auth == "token" and getattr(self, key) is not None:
                raise _problem('only with auth = "app" (auth is "token")', key)
            if self.auth == "app" and getattr(self, key) is None:
                raise _problem("missing required field", key)
        if self.runner_scope == "organization" and self.owner_type != "organization":
            raise _problem(
                f"organization runners need an organization owner (github.owner_type is "
                f"'{self.owner_type}'): use \"repository\"",
                "runner_scope",
            )
        return self

    @field_validator("repositories")
    @classmethod
    def _distinct(cls, repositories: tuple[RepositoryConfig, ...]) -> tuple[RepositoryConfig, ...]:
        if not repositories:
            raise _problem("list at least one repository")
        seen: set[str] = set()
        for index, repository in enumerate(repositories):
            lowered = repository.full_name.lower()
            if lowered in seen:
                raise _problem(f"duplicate repository '{repository.full_name}'", index)
            seen.add(lowered)
        return repositories


def _relative_path(path: str) -> str:
    path = path.rstrip("/")
    if PurePosixPath(path).is_absolute() or re.match(r"^[A-Za-z]:[\\/]", path):
        raise _problem("must be relative (absolute paths differ per machine)")
    return path


class LocalBackend(_Section):
    """Local state files ``{path}/{stack}.tfstate``, ``path`` relative to the directory that
    holds cdktf.out/ (the project root for `make synth`)."""

    type: Literal["local"] = "local"
    path: Annotated[Text, AfterValidator(_relative_path)] = "terraform-state"
    """The state directory, relative (absolute paths differ per machine)."""

    @property
    def settings(self) -> Mapping[str, str]:
        return {"path": self.path}


class S3Backend(_Section):
    """State in ``s3://{bucket}/{key_prefix}/{stack}.tfstate``; credentials from the AWS
    environment variables, never from here."""

    type: Literal["s3"]
    bucket: Text
    """The S3 bucket of the state files."""
    region: Text
    """The bucket's region."""
    key_prefix: Annotated[Text, AfterValidator(lambda prefix: prefix.strip("/"))] = (
        "nomad-github-runners"
    )
    """The key prefix of the state files."""
    endpoint: NonEmpty | None = None
    """An S3-compatible endpoint other than AWS's."""
    dynamodb_table: NonEmpty | None = None
    """A DynamoDB table for state locking."""

    @property
    def settings(self) -> Mapping[str, str]:
        settings = {"bucket": self.bucket, "region": self.region, "key_prefix": self.key_prefix}
        for optional in ("endpoint", "dynamodb_table"):
            value = getattr(self, optional)
            if value is not None:
                settings[optional] = value
        return settings


class RemoteBackend(_Section):
    """HCP Terraform / Terraform Enterprise workspaces ``{workspace_prefix}{stack}``; the token
    from Terraform's own credentials, never from here."""

    type: Literal["remote"]
    organization: Text
    """The HCP Terraform / Terraform Enterprise organization."""
    workspace_prefix: Text = "github-runners-"
    """Each stack's workspace is this prefix and the stack's name."""
    hostname: Text = "app.terraform.io"
    """The HCP Terraform or Terraform Enterprise host."""

    @property
    def settings(self) -> Mapping[str, str]:
        return {
            "organization": self.organization,
            "workspace_prefix": self.workspace_prefix,
            "hostname": self.hostname,
        }


def _backend_type(value: Any) -> str | None:
    """The [backend] member ``type`` picks: "local" when left out; None when it picks none."""
    kind = value.get("type", "local") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in BACKEND_TYPES else None


# Where Terraform keeps each stack's state: ``type`` ("local", "s3" or "remote") and its
# ``settings`` (the other fields of the table, defaults filled in).
BackendConfig = Annotated[
    Annotated[LocalBackend, Tag("local")]
    | Annotated[S3Backend, Tag("s3")]
    | Annotated[RemoteBackend, Tag("remote")],
    Discriminator(_backend_type),
]


def _divides_the_hour(minutes: int) -> int:
    # A cron step that does not divide the hour fires unevenly (*/7: minute 56, then 0).
    if minutes > 60 or 60 % minutes:
        raise _problem(f"must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60), got {minutes}")
    return minutes


def _budget_of_the_plan(schema: dict[str, Any]) -> None:
    """For editors: the Free plan's bound on request_budget (plan left out is "free")."""
    schema["if"] = {"properties": {"plan": {"const": "paid"}}, "required": ["plan"]}
    schema["else"] = {
        "properties": {"request_budget": {"maximum": PLAN_MAX_REQUEST_BUDGET["free"]}}
    }


class ReconcileConfig(_Section):
    """How often the Worker's reconciler looks for queued jobs the webhooks did not serve, which
    Workers plan it is sized for (``plan``: ``free``, 10 ms of CPU per invocation, or ``paid``)
    and how many outbound requests one run may send (``request_budget``: by default 10 on the
    Free plan, 40 on a paid one; at most 40 on Free, 950 on paid)."""

    model_config = ConfigDict(json_schema_extra=_budget_of_the_plan)

    interval_minutes: Annotated[
        Positive,
        AfterValidator(_divides_the_hour),
        _schema(enum=[1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60]),
    ] = DEFAULT_RECONCILE_MINUTES
    """Minutes between runs: a divisor of 60."""
    plan: Annotated[
        str,
        _choice(
            WORKERS_PLANS,
            lambda plan: (
                "expected "
                + " or ".join(f"'{name}'" for name in WORKERS_PLANS)
                + f" (your Workers plan), got '{plan}'"
            ),
        ),
        _schema(enum=list(WORKERS_PLANS)),
    ] = DEFAULT_WORKERS_PLAN
    """The Workers plan the reconciler is sized for: "free" or "paid"."""
    # Declared after plan: its default is the plan's (a factory sees the fields before it).
    request_budget: Annotated[
        Integer,
        Field(ge=MIN_RECONCILE_REQUEST_BUDGET),
        _schema(maximum=MAX_RECONCILE_REQUEST_BUDGET),
    ] = Field(
        default_factory=lambda fields: PLAN_DEFAULT_REQUEST_BUDGET[
            fields.get("plan", DEFAULT_WORKERS_PLAN)
        ]
    )
    """Outbound requests one run may send; left out: 10 on the Free plan, 40 on a paid one."""

    @model_validator(mode="after")
    def _within_the_plan(self) -> ReconcileConfig:
        most = PLAN_MAX_REQUEST_BUDGET[self.plan]
        if self.request_budget > most:
            allowance = (
                "the Free plan allows 50 subrequests and 10 ms of CPU per invocation; on a paid "
                "plan set plan = 'paid'"
                if self.plan == "free"
                else "a run stays within the 1,000 subrequests per invocation paid plans long "
                "allowed, KV included, and within its 20 s deadline"
            )
            raise _problem(
                f"must be at most {most} with plan = '{self.plan}' ({allowance}), got "
                f"{self.request_budget}",
                "request_budget",
            )
        return self

    @property
    def cron(self) -> str:
        """The Cron Trigger schedule: every ``interval_minutes`` (a divisor of 60), in UTC."""
        return "0 * * * *" if self.interval_minutes == 60 else f"*/{self.interval_minutes} * * * *"


class AppConfig(_Section):
    """A deployment's configuration file (nomad-github-runners)."""

    model_config = ConfigDict(title="nomad-github-runners configuration")

    cloudflare: CloudflareConfig
    nomad: NomadConfig
    images: ImagesConfig
    pools: Annotated[
        tuple[PoolConfig, ...],
        BeforeValidator(_list_of("a list of tables ([[pools]])")),
        _schema(minItems=1),
    ]
    """The kinds of runner: one [[pools]] table each."""
    github: GitHubConfig
    backend: BackendConfig = LocalBackend()
    """Where Terraform keeps each stack's state; left out: local files under terraform-state/."""
    reconcile: ReconcileConfig = ReconcileConfig()
    """The Worker's reconciler (a Cron Trigger)."""

    _source: str = PrivateAttr(default="<config>")

    @field_validator("pools")
    @classmethod
    def _distinct_pools(
        cls, pools: tuple[PoolConfig, ...], info: ValidationInfo
    ) -> tuple[PoolConfig, ...]:
        if not pools:
            raise _problem("define at least one [[pools]] table")
        names: list[str] = []
        for index, pool in enumerate(pools):
            if pool.name in names:
                raise _problem(f"duplicate pool '{pool.name}'", index, "name")
            names.append(pool.name)
        _scope(info)["pool_names"] = tuple(names)
        return pools

    @model_validator(mode="after")
    def _across_sections(self) -> AppConfig:
        for index, pool in enumerate(self.pools):
            if pool.docker == "dind" and self.images.dind is None:
                raise _problem(
                    f"missing required field: pools[{index}] ('{pool.name}') has docker = "
                    '"dind" and needs a pinned Docker daemon image, e.g. docker:29.7.2-dind',
                    "images",
                    "dind",
                )
        for index, pool in enumerate(self.pools):
            if pool.runner_group_id == DEFAULT_RUNNER_GROUP_ID:
                continue
            if self.github.owner_type == "user":
                raise _problem(
                    "runner groups exist only in organizations (github.owner_type is "
                    "'user'): leave it at 1",
                    "pools",
                    index,
                    "runner_group_id",
                )
            if self.github.runner_scope != "organization":
                # A repository's own runners have no runner group: GitHub puts them in the
                # default one whatever the request says.
                raise _problem(
                    f"runner group {pool.runner_group_id} holds organization runners: set "
                    'github.runner_scope = "organization", or leave it at 1',
                    "pools",
                    index,
                    "runner_group_id",
                )
        return self

    @property
    def source(self) -> str:
        """The file (or the name given) the configuration was read from."""
        return self._source

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


# --- Reading ------------------------------------------------------------------------------------


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
    """Validate an already parsed document (what ``tomllib`` returns); the first problem found
    is the error."""
    try:
        config = AppConfig.model_validate(dict(document), context={})
    except ValidationError as error:
        raise ConfigError(_message(source, error.errors(include_url=False)[0])) from None
    config._source = source
    return config


# --- The JSON Schema ----------------------------------------------------------------------------


class _FileSchema(GenerateJsonSchema):
    """The schema of the TOML file as editors read it: TOML has no null, so an optional field is
    its value's schema (left out, not null); no per-field titles (the descriptions say more)."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        if schema.get("default", ...) is None:
            return self.generate_inner(schema["schema"])
        return super().default_schema(schema)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the configuration file, generated from the models.

    Written for Draft 2020-12 and kept to keywords Draft 7 reads the same way, without a
    ``$schema`` keyword: Taplo validates with a draft-7 validator (the Rust jsonschema crate
    without its 2019-09/2020-12 features) and follows ``#/$defs/...`` references itself.
    """
    return AppConfig.model_json_schema(schema_generator=_FileSchema, mode="validation")


def schema_text() -> str:
    """``config.schema.json`` as committed: the generated schema, stable key order."""
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    """``python -m config --schema``: print the schema; ``--write-schema``: update the file."""
    if argv == ["--schema"]:
        sys.stdout.write(schema_text())
        return 0
    if argv == ["--write-schema"]:
        SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
        return 0
    if len(argv) == 1 and not argv[0].startswith("-"):
        try:
            load_config(argv[0])
        except ConfigError as error:
            print(error, file=sys.stderr)
            return 1
        print(f"{argv[0]}: valid")
        return 0
    print("usage: python -m config (--schema | --write-schema | FILE)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
