"""config.py: the example files load, and each kind of mistake is reported with file, field, why."""

from __future__ import annotations

import copy
import json
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator
from pydantic import ValidationError

from config import (
    ConfigError,
    load_config,
    loads_config,
    parse_config,
    runner_version,
    schema_text,
)
from config import main as config_main
from handler.contract import Routing, webhook_path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
SOURCE = "my/config.toml"


def example() -> dict[str, Any]:
    with (EXAMPLES / "config.toml").open("rb") as handle:
        return tomllib.load(handle)


def error_of(document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source=SOURCE)
    return str(caught.value)


class TestExamples:
    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
    def test_every_example_loads_and_round_trips_its_routing(self, path: Path) -> None:
        """Every shipped example is valid and its routing document survives the Worker's parser."""
        config = load_config(path)
        routing = config.routing()
        assert Routing.from_json(routing.to_json()) == routing
        assert len(routing.repositories) == len(config.github.repositories)

    def test_example_values(self) -> None:
        """Defaults fill what the example leaves out; repositories without pools get all pools."""
        config = load_config(EXAMPLES / "config.toml")
        assert config.nomad.namespace == "github-runners"
        assert [repo.full_name for repo in config.github.repositories] == [
            "example-org/website",
            "example-org/api",
        ]
        assert all(repo.pools == ("linux-x64",) for repo in config.github.repositories)
        assert config.pools[0].nomad_job == "github-runner-linux-x64"
        assert config.backend.type == "local"
        assert not Path(config.backend.settings["path"]).is_absolute()

    def test_routing_lower_cases_repositories_and_labels(self) -> None:
        """GitHub compares names and labels case-insensitively: routing stores them lower-cased."""
        config = load_config(EXAMPLES / "user-owned.toml")
        routing = config.routing()
        assert "octocat/hello-world" in routing.repositories
        assert routing.pool("default").labels == frozenset({"self-hosted", "linux", "arm64"})
        assert webhook_path("octocat/Hello-World") == "/webhook/octocat/hello-world"

    def test_per_repository_pool_choice(self) -> None:
        config = load_config(EXAMPLES / "two-pools.toml")
        assert config.routing().repositories == {
            "example-org/monorepo": ("small", "gpu"),
            "example-org/ml-models": ("gpu",),
            "example-org/docs": ("small",),
        }
        assert config.pool("gpu").image == "ghcr.io/example-org/gpu-runner:cuda12-20261124"
        assert config.pool("small").image is None
        assert config.runner_image(config.pool("gpu")) == config.pool("gpu").image
        assert config.runner_image(config.pool("small")) is None
        assert config.routing().repository_max_runners == {
            "example-org/monorepo": 8,
            "example-org/ml-models": 2,
            "example-org/docs": 8,
        }


def mutate(path: tuple[Any, ...], value: Any, *, delete: bool = False) -> dict[str, Any]:
    document = copy.deepcopy(example())
    target: Any = document
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


class TestErrors:
    """Each error names the file, the dotted field and what is wrong."""

    def test_missing_field(self) -> None:
        message = error_of(mutate(("cloudflare", "zone_id"), None, delete=True))
        assert message == f"{SOURCE}: cloudflare.zone_id: missing required field"

    def test_missing_section(self) -> None:
        message = error_of(mutate(("github",), None, delete=True))
        assert message == f"{SOURCE}: github: missing required field"

    def test_wrong_type(self) -> None:
        message = error_of(mutate(("pools", 0, "cpu"), "2000"))
        assert message == f"{SOURCE}: pools[0].cpu: expected an integer, got a string"

    def test_boolean_is_not_an_integer(self) -> None:
        message = error_of(mutate(("pools", 0, "max_runners"), True))
        assert message == f"{SOURCE}: pools[0].max_runners: expected an integer, got a boolean"

    def test_wrong_type_in_list(self) -> None:
        message = error_of(mutate(("nomad", "datacenters"), ["dc1", 2]))
        assert (
            message
            == f"{SOURCE}: nomad.datacenters[1]: expected a non-empty string, got an integer"
        )

    def test_unknown_pool_in_repository(self) -> None:
        document = example()
        document["github"]["repositories"].append({"name": "ml", "pools": ["gpu"]})
        message = error_of(document)
        assert message == (
            f"{SOURCE}: github.repositories[2].pools: unknown pool 'gpu' (known pools: linux-x64)"
        )

    def test_duplicate_repository_case_insensitive(self) -> None:
        document = example()
        document["github"]["repositories"].append("Website")
        message = error_of(document)
        assert (
            message
            == f"{SOURCE}: github.repositories[2]: duplicate repository 'example-org/Website'"
        )

    def test_repository_of_another_owner(self) -> None:
        document = example()
        document["github"]["repositories"].append("someone-else/tool")
        assert "github.repositories[2].name: 'someone-else/tool' is not owned by" in error_of(
            document
        )

    @pytest.mark.parametrize(
        ("host", "why"),
        [
            ("hooks.example.org", "'hooks.example.org' is not within the zone 'example.com'"),
            ("Hooks.example.com", "is not a lower-case DNS name"),
            ("bad_label.example.com", "bad label 'bad_label'"),
            ("https://hooks.example.com", "bad label 'https://hooks'"),
            ("example.com", "is not within the zone"),
        ],
    )
    def test_bad_hostname(self, host: str, why: str) -> None:
        message = error_of(mutate(("cloudflare", "webhook_hostname"), host))
        assert message.startswith(f"{SOURCE}: cloudflare.webhook_hostname: ")
        assert why in message

    def test_same_hostname_twice(self) -> None:
        message = error_of(mutate(("cloudflare", "nomad_api_hostname"), "gh-runners.example.com"))
        assert (
            message == f"{SOURCE}: cloudflare.nomad_api_hostname: must differ from webhook_hostname"
        )

    def test_unknown_key_is_a_typo(self) -> None:
        message = error_of(mutate(("pools", 0, "memroy"), 1024))
        assert message == f"{SOURCE}: pools[0].memroy: unknown field (check the spelling)"

    def test_unknown_top_level_section(self) -> None:
        message = error_of(mutate(("secrets",), {"github_token": "x"}))
        assert message == f"{SOURCE}: secrets: unknown field (check the spelling)"

    def test_labels_must_include_self_hosted(self) -> None:
        message = error_of(mutate(("pools", 0, "labels"), ["linux", "x64"]))
        assert message == f"{SOURCE}: pools[0].labels: must include 'self-hosted'"

    @pytest.mark.parametrize(
        "image",
        ["ghcr.io/actions/actions-runner", "ghcr.io/actions/actions-runner:latest", "python:"],
    )
    def test_unpinned_image(self, image: str) -> None:
        message = error_of(mutate(("images", "runner"), image))
        assert message.startswith(f"{SOURCE}: images.runner: '{image}'")

    def test_registry_port_is_not_a_tag(self) -> None:
        message = error_of(mutate(("images", "helper"), "registry.local:5000/python"))
        assert "is not pinned" in message

    def test_digest_is_a_pin(self) -> None:
        digest = "python@sha256:" + "a" * 64
        config = parse_config(mutate(("images", "helper"), digest), source=SOURCE)
        assert config.images.helper == digest

    def test_absolute_backend_path(self) -> None:
        message = error_of(mutate(("backend", "path"), "/var/lib/state"))
        assert message == (
            f"{SOURCE}: backend.path: must be relative (absolute paths differ per machine)"
        )

    def test_unknown_backend(self) -> None:
        message = error_of(mutate(("backend", "type"), "consul"))
        assert (
            message == f"{SOURCE}: backend.type: expected 'local', 's3' or 'remote', got 'consul'"
        )

    def test_duplicate_pool(self) -> None:
        document = example()
        document["pools"].append(copy.deepcopy(document["pools"][0]))
        assert error_of(document) == f"{SOURCE}: pools[1].name: duplicate pool 'linux-x64'"

    def test_no_pools(self) -> None:
        document = mutate(("pools",), [])
        assert error_of(document) == f"{SOURCE}: pools: define at least one [[pools]] table"

    def test_bad_owner_type(self) -> None:
        message = error_of(mutate(("github", "owner_type"), "team"))
        assert (
            message == f"{SOURCE}: github.owner_type: expected 'user' or 'organization', got 'team'"
        )

    def test_bad_constraint_operator(self) -> None:
        constraints = [{"attribute": "${attr.kernel.name}", "operator": "~", "value": "linux"}]
        message = error_of(mutate(("pools", 0, "constraints"), constraints))
        assert message == (
            f"{SOURCE}: pools[0].constraints[0].operator: unknown Nomad constraint operator '~'"
        )

    def test_driver_defaults_to_docker_and_takes_podman(self) -> None:
        assert parse_config(copy.deepcopy(example()), source=SOURCE).pools[0].driver == "docker"
        document = mutate(("pools", 0, "driver"), "podman")
        assert parse_config(document, source=SOURCE).pools[0].driver == "podman"

    def test_driver_must_take_docker_style_task_config(self) -> None:
        message = error_of(mutate(("pools", 0, "driver"), "exec"))
        assert message == (
            f"{SOURCE}: pools[0].driver: 'exec' is not supported (supported: docker, podman)"
        )

    def test_runner_group_needs_an_organization(self) -> None:
        document = mutate(("pools", 0, "runner_group_id"), 3)
        document["github"]["runner_scope"] = "organization"
        assert parse_config(document, source=SOURCE).pools[0].runner_group_id == 3
        del document["github"]["runner_scope"]
        document["github"]["owner_type"] = "user"
        assert error_of(document) == (
            f"{SOURCE}: pools[0].runner_group_id: runner groups exist only in organizations "
            "(github.owner_type is 'user'): leave it at 1"
        )

    def test_nomad_address_must_be_a_url(self) -> None:
        message = error_of(mutate(("nomad", "address"), "nomad.example.com:4646"))
        assert message == f"{SOURCE}: nomad.address: 'nomad.example.com:4646' is not an http(s) URL"

    def test_tunnel_origin_has_no_path(self) -> None:
        message = error_of(mutate(("nomad", "tunnel_origin"), "http://127.0.0.1:4646/v1"))
        assert message == (
            f"{SOURCE}: nomad.tunnel_origin: 'http://127.0.0.1:4646/v1': a scheme, host and port "
            "only, no path"
        )
        config = parse_config(mutate(("nomad", "tunnel_origin"), "http://127.0.0.1:4646/"))
        assert config.nomad.tunnel_origin == "http://127.0.0.1:4646"

    def test_runner_namespace_is_not_the_default_one(self) -> None:
        message = error_of(mutate(("nomad", "namespace"), "default"))
        assert message.startswith(
            f"{SOURCE}: nomad.namespace: runner jobs need a namespace of their own"
        )

    def test_invalid_toml_names_the_file(self) -> None:
        with pytest.raises(ConfigError, match=r"^my/config.toml: not valid TOML"):
            loads_config("[cloudflare\n", source=SOURCE)

    def test_missing_file(self, tmp_path: Path) -> None:
        missing = tmp_path / "nope.toml"
        with pytest.raises(ConfigError, match="no such configuration file"):
            load_config(missing)


class TestReconcile:
    def test_default_is_every_five_minutes(self) -> None:
        config = load_config(EXAMPLES / "config.toml")
        assert config.reconcile.interval_minutes == 5
        assert config.reconcile.cron == "*/5 * * * *"

    @pytest.mark.parametrize(
        ("minutes", "cron"), [(1, "*/1 * * * *"), (15, "*/15 * * * *"), (60, "0 * * * *")]
    )
    def test_interval_becomes_a_cron_schedule(self, minutes: int, cron: str) -> None:
        document = example() | {"reconcile": {"interval_minutes": minutes}}
        assert parse_config(document, source=SOURCE).reconcile.cron == cron

    @pytest.mark.parametrize("minutes", [0, 7, 90])
    def test_interval_must_divide_the_hour(self, minutes: int) -> None:
        message = error_of(example() | {"reconcile": {"interval_minutes": minutes}})
        assert message.startswith(f"{SOURCE}: reconcile.interval_minutes: ")

    def test_plan_defaults_to_free_with_its_small_request_budget(self) -> None:
        config = load_config(EXAMPLES / "config.toml")
        assert (config.reconcile.plan, config.reconcile.request_budget) == ("free", 10)
        document = example() | {"reconcile": {"interval_minutes": 10}}
        assert parse_config(document, source=SOURCE).reconcile.request_budget == 10

    def test_paid_plan_defaults_to_forty_requests(self) -> None:
        document = example() | {"reconcile": {"plan": "paid"}}
        reconcile = parse_config(document, source=SOURCE).reconcile
        assert (reconcile.plan, reconcile.request_budget) == ("paid", 40)

    @pytest.mark.parametrize(
        ("plan", "budget"), [("free", 10), ("free", 40), ("paid", 10), ("paid", 400), ("paid", 950)]
    )
    def test_request_budget_within_bounds(self, plan: str, budget: int) -> None:
        document = example() | {"reconcile": {"plan": plan, "request_budget": budget}}
        assert parse_config(document, source=SOURCE).reconcile.request_budget == budget

    @pytest.mark.parametrize(
        ("plan", "budget", "problem"),
        [
            ("free", 9, "must be at least 10, got 9"),
            ("paid", 0, "must be at least 10, got 0"),
            ("paid", 951, "must be at most 950 with plan = 'paid'"),
            ("free", 41, "must be at most 40 with plan = 'free' (the Free plan allows 50"),
            ("free", 400, "on a paid plan set plan = 'paid'"),
            ("paid", "40", "expected an integer, got a string"),
            ("paid", 40.0, "expected an integer"),
            ("free", True, "expected an integer"),
        ],
    )
    def test_request_budget_out_of_bounds_or_not_an_integer(
        self, plan: str, budget: object, problem: str
    ) -> None:
        message = error_of(example() | {"reconcile": {"plan": plan, "request_budget": budget}})
        assert message.startswith(f"{SOURCE}: reconcile.request_budget: ")
        assert problem in message

    @pytest.mark.parametrize("plan", ["Free", "pro", "", 1])
    def test_plan_is_free_or_paid(self, plan: object) -> None:
        message = error_of(example() | {"reconcile": {"plan": plan}})
        assert message.startswith(f"{SOURCE}: reconcile.plan: ")
        if isinstance(plan, str) and plan:
            assert message.endswith(f"expected 'free' or 'paid' (your Workers plan), got '{plan}'")

    def test_unknown_reconcile_key(self) -> None:
        message = error_of(example() | {"reconcile": {"every": 5}})
        assert "reconcile.every: unknown field" in message


class TestForkPolicy:
    """[github] fork_pull_requests (default for all), per repository fork_pull_requests and
    allow_public, carried to the Worker by the routing."""

    def test_default_refuses_fork_runs_everywhere_and_no_repository_is_public(self) -> None:
        config = parse_config(example(), source=SOURCE)
        assert config.github.fork_pull_requests == "refuse"
        assert {repo.fork_pull_requests for repo in config.github.repositories} == {"refuse"}
        assert not any(repo.allow_public for repo in config.github.repositories)
        routing = config.routing()
        assert routing.fork_policy("example-org/website") == "refuse"
        assert Routing.from_json(routing.to_json()) == routing

    def test_the_github_default_applies_to_repositories_without_their_own(self) -> None:
        document = mutate(("github", "fork_pull_requests"), "allow")
        document["github"]["repositories"] = [
            "website",
            {"name": "api", "fork_pull_requests": "refuse", "allow_public": True},
        ]
        config = parse_config(document, source=SOURCE)
        website, api = config.github.repositories
        assert (website.fork_pull_requests, website.allow_public) == ("allow", False)
        assert (api.fork_pull_requests, api.allow_public) == ("refuse", True)
        routing = Routing.from_json(config.routing().to_json())
        assert routing.fork_policy("Example-Org/Website") == "allow"
        assert routing.fork_policy("example-org/api") == "refuse"

    def test_an_unknown_policy_is_named(self) -> None:
        message = error_of(mutate(("github", "fork_pull_requests"), "sometimes"))
        assert message == (
            f"{SOURCE}: github.fork_pull_requests: expected one of 'refuse', 'allow', "
            "got 'sometimes'"
        )

    def test_an_unknown_repository_policy_is_named(self) -> None:
        document = mutate(("github", "repositories", 1, "fork_pull_requests"), "Allow")
        message = error_of(document)
        assert message.startswith(f"{SOURCE}: github.repositories[1].fork_pull_requests: ")
        assert "got 'Allow'" in message

    def test_allow_public_must_be_a_boolean(self) -> None:
        message = error_of(mutate(("github", "repositories", 1, "allow_public"), "yes"))
        assert message == (
            f"{SOURCE}: github.repositories[1].allow_public: expected true or false, got a string"
        )

    def test_allow_public_is_per_repository_only(self) -> None:
        message = error_of(mutate(("github", "allow_public"), True))
        assert message == f"{SOURCE}: github.allow_public: unknown field (check the spelling)"


class TestPoolSandbox:
    """Per-pool walls: node pool, process limit, disk, sudo."""

    def test_defaults(self) -> None:
        config = parse_config(copy.deepcopy(example()), source=SOURCE)
        pool = config.pools[0]
        assert (pool.node_pool, pool.pids_limit, pool.disk, pool.sudo) == (None, 4096, 10240, True)

    def test_values_are_read(self) -> None:
        document = copy.deepcopy(example())
        document["pools"][0] |= {
            "node_pool": "runners",
            "pids_limit": 1024,
            "disk": 20480,
            "sudo": False,
        }
        pool = parse_config(document, source=SOURCE).pools[0]
        assert (pool.node_pool, pool.pids_limit, pool.disk, pool.sudo) == (
            "runners",
            1024,
            20480,
            False,
        )

    @pytest.mark.parametrize(
        ("field", "value", "problem"),
        [
            ("node_pool", "not a pool", "expected letters, digits, '-' and '_' only"),
            ("node_pool", 3, "expected a non-empty string, got an integer"),
            ("pids_limit", 10, "must be at least 64, got 10"),
            ("pids_limit", "4096", "expected an integer, got a string"),
            ("disk", 100, "must be at least 1024, got 100"),
            ("sudo", "no", "expected true or false, got a string"),
            ("sudo", 0, "expected true or false, got an integer"),
        ],
    )
    def test_bad_values_are_named(self, field: str, value: Any, problem: str) -> None:
        assert error_of(mutate(("pools", 0, field), value)) == (
            f"{SOURCE}: pools[0].{field}: {problem}"
        )


def dind_document(**pool: Any) -> dict[str, Any]:
    document = copy.deepcopy(example())
    document["pools"][0] |= {"docker": "dind"} | pool
    document["images"]["dind"] = "docker:29.7.2-dind"
    return document


class TestDockerInDocker:
    def test_pools_have_no_docker_by_default(self) -> None:
        config = parse_config(copy.deepcopy(example()), source=SOURCE)
        assert config.pools[0].docker == "none"
        assert config.pools[0].docker_share == (0, 0)
        assert config.images.dind is None

    def test_a_dind_pool_reads_its_mirror_and_splits_its_resources(self) -> None:
        document = dind_document(
            cpu=4000, memory=8192, registry_mirror="https://mirror.example.com:5000/"
        )
        config = parse_config(document, source=SOURCE)
        pool = config.pools[0]
        assert (pool.docker, pool.registry_mirror) == ("dind", "https://mirror.example.com:5000")
        assert pool.docker_share == (2000, 4096)
        assert config.images.dind == "docker:29.7.2-dind"

    def test_the_dind_example_loads(self) -> None:
        config = load_config(EXAMPLES / "docker-in-docker.toml")
        assert [pool.docker for pool in config.pools] == ["none", "dind"]

    @pytest.mark.parametrize(
        ("pool", "field", "problem"),
        [
            (
                {"docker": "host"},
                "docker",
                """'host' is not a docker mode (known: "none", "dind")""",
            ),
            ({"docker": True}, "docker", "expected a string, got a boolean"),
            (
                {"driver": "podman"},
                "docker",
                '"dind" needs the docker driver (its privileged mode, allowed by the client\'s '
                "allow_privileged); driver 'podman' cannot run the daemon",
            ),
            (
                {"cpu": 500},
                "docker",
                '"dind" splits cpu and memory in half between the runner and its Docker daemon: '
                "give the pool at least cpu = 1000 and memory = 2048 (it has 500 and 4096)",
            ),
            (
                {"registry_mirror": "mirror.example.com"},
                "registry_mirror",
                "'mirror.example.com' is not an http(s) URL",
            ),
            (
                {"registry_mirror": "https://mirror.example.com/v2"},
                "registry_mirror",
                "'https://mirror.example.com/v2': a scheme, host and port only, no path",
            ),
        ],
    )
    def test_invalid_dind_pools_are_named(
        self, pool: dict[str, Any], field: str, problem: str
    ) -> None:
        assert error_of(dind_document(**pool)) == f"{SOURCE}: pools[0].{field}: {problem}"

    def test_a_mirror_without_a_daemon_is_refused(self) -> None:
        message = error_of(mutate(("pools", 0, "registry_mirror"), "https://mirror.example.com"))
        assert message == (
            f'{SOURCE}: pools[0].registry_mirror: only a pool with docker = "dind" has a '
            "daemon to use a mirror"
        )

    def test_a_dind_pool_needs_the_daemon_image(self) -> None:
        document = dind_document()
        del document["images"]["dind"]
        name = document["pools"][0]["name"]
        assert error_of(document) == (
            f"{SOURCE}: images.dind: missing required field: pools[0] ('{name}') has docker = "
            '"dind" and needs a pinned Docker daemon image, e.g. docker:29.7.2-dind'
        )

    @pytest.mark.parametrize(
        "image",
        ["docker:dind", "docker:29-dind", "docker:dind-rootless", "docker:latest", "docker"],
    )
    def test_the_daemon_image_is_pinned(self, image: str) -> None:
        document = dind_document()
        document["images"]["dind"] = image
        assert error_of(document).startswith(f"{SOURCE}: images.dind: '{image}'")

    def test_a_digest_pins_the_daemon_image(self) -> None:
        document = dind_document()
        document["images"]["dind"] = "docker@sha256:" + "a" * 64
        assert parse_config(document, source=SOURCE).images.dind == document["images"]["dind"]


class TestRunnerImage:
    """images.runner and pools[].image: the official runner by release version, or any pin."""

    def test_left_out_follows_the_newest_release(self) -> None:
        config = parse_config(example(), source=SOURCE)
        assert config.images.runner is None
        assert config.runner_image(config.pools[0]) is None

    def test_no_example_pins_the_official_runner(self) -> None:
        """A pin goes stale within weeks: the examples must not ship one."""
        for path in sorted(EXAMPLES.glob("*.toml")):
            config = load_config(path)
            for pool in config.pools:
                image = config.runner_image(pool)
                assert image is None or runner_version(image) is None, (path.name, image)

    @pytest.mark.parametrize(
        ("image", "version"),
        [
            ("ghcr.io/actions/actions-runner:2.330.0", (2, 330, 0)),
            ("ghcr.io/actions/actions-runner:2.329.0", (2, 329, 0)),
            ("ghcr.io/actions/actions-runner:2.336.0@sha256:" + "b" * 64, (2, 336, 0)),
        ],
    )
    def test_official_pin_and_its_version(self, image: str, version: tuple[int, int, int]) -> None:
        config = parse_config(mutate(("images", "runner"), image), source=SOURCE)
        assert config.images.runner == image
        assert runner_version(image) == version

    def test_other_images_are_taken_as_pinned(self) -> None:
        """A custom image's runner version is unknown here: any pin is accepted, none checked."""
        image = "registry.example.com/actions/actions-runner:2.100.0"
        config = parse_config(mutate(("images", "runner"), image), source=SOURCE)
        assert config.images.runner == image
        assert runner_version(image) is None

    def test_below_the_floor_github_registers(self) -> None:
        message = error_of(mutate(("images", "runner"), "ghcr.io/actions/actions-runner:2.328.0"))
        assert message == (
            f"{SOURCE}: images.runner: 'ghcr.io/actions/actions-runner:2.328.0': GitHub "
            "registers no runner older than 2.329.0; pin a current release, or remove the pin "
            "to follow the newest one"
        )

    def test_official_image_by_digest_alone(self) -> None:
        image = "ghcr.io/actions/actions-runner@sha256:" + "a" * 64
        message = error_of(mutate(("images", "runner"), image))
        assert message.startswith(
            f"{SOURCE}: images.runner: '{image}': pin the official runner by its release version"
        )

    @pytest.mark.parametrize("tag", ["2.330", "v2.330.0", "2.330.0-ubuntu", "ubuntu-22.04"])
    def test_official_tag_that_is_not_a_release_version(self, tag: str) -> None:
        image = f"ghcr.io/actions/actions-runner:{tag}"
        message = error_of(mutate(("images", "runner"), image))
        assert message == (
            f"{SOURCE}: images.runner: '{image}': the official runner's tags are release "
            f"versions such as '2.330.0', not '{tag}'"
        )

    def test_pool_image_is_checked_the_same_way(self) -> None:
        message = error_of(mutate(("pools", 0, "image"), "ghcr.io/actions/actions-runner:2.300.0"))
        assert message.startswith(
            f"{SOURCE}: pools[0].image: 'ghcr.io/actions/actions-runner:2.300.0': GitHub "
            "registers no runner older than 2.329.0"
        )

    def test_pool_image_wins_over_images_runner(self) -> None:
        document = mutate(("images", "runner"), "ghcr.io/actions/actions-runner:2.331.0")
        document["pools"][0]["image"] = "ghcr.io/actions/actions-runner:2.332.0"
        config = parse_config(document, source=SOURCE)
        assert config.runner_image(config.pools[0]) == "ghcr.io/actions/actions-runner:2.332.0"

    def test_floating_tag_is_still_refused(self) -> None:
        message = error_of(mutate(("images", "runner"), "ghcr.io/actions/actions-runner:latest"))
        assert "floating tag 'latest'" in message


class TestRepositoryCaps:
    """max_runners per repository (and its default): what keeps one repository from a whole pool."""

    def test_no_cap_by_default(self) -> None:
        config = parse_config(example(), source=SOURCE)
        assert all(repo.max_runners is None for repo in config.github.repositories)
        assert config.routing().repository_max_runners == {}
        assert "repository_max_runners" not in config.routing().to_json()

    def test_the_default_applies_where_a_repository_sets_none(self) -> None:
        document = example()
        document["github"]["max_runners_per_repository"] = 3
        first = document["github"]["repositories"][0]
        document["github"]["repositories"][0] = {"name": first, "max_runners": 1}
        routing = parse_config(document, source=SOURCE).routing()
        caps = dict(routing.repository_max_runners)
        assert caps == {f"example-org/{first}".lower(): 1, "example-org/api": 3}
        assert Routing.from_json(routing.to_json()).repository_cap(f"Example-Org/{first}") == 1

    @pytest.mark.parametrize("value", [0, -1, True, "2", 1.5])
    def test_a_cap_is_a_positive_integer(self, value: Any) -> None:
        document = example()
        document["github"]["repositories"][0] = {"name": "website", "max_runners": value}
        assert "github.repositories[0].max_runners" in error_of(document)
        document = example()
        document["github"]["max_runners_per_repository"] = value
        assert "github.max_runners_per_repository" in error_of(document)


class TestGitHubAuthAndRunnerScope:
    """[github] auth, app_id, installation_id and runner_scope (issue 12)."""

    def test_defaults_are_tokens_and_repository_runners(self) -> None:
        github = parse_config(example(), source=SOURCE).github
        assert (github.auth, github.app_id, github.installation_id) == ("token", None, None)
        assert github.runner_scope == "repository"

    def test_an_app_takes_its_id_and_installation_id(self) -> None:
        document = example()
        document["github"].update(auth="app", app_id=123, installation_id=456)
        github = parse_config(document, source=SOURCE).github
        assert (github.auth, github.app_id, github.installation_id) == ("app", 123, 456)

    @pytest.mark.parametrize(
        ("fields", "problem"),
        [
            ({"auth": "oauth"}, "github.auth: expected one of 'token', 'app', got 'oauth'"),
            ({"auth": "app", "installation_id": 4}, "github.app_id: missing required field"),
            ({"auth": "app", "app_id": 3}, "github.installation_id: missing required field"),
            (
                {"auth": "app", "app_id": "Iv23li", "installation_id": 4},
                "github.app_id: expected an integer, got a string",
            ),
            (
                {"auth": "app", "app_id": 3, "installation_id": 0},
                "github.installation_id: must be at least 1, got 0",
            ),
            ({"app_id": 3}, 'github.app_id: only with auth = "app" (auth is "token")'),
            ({"installation_id": 3}, 'github.installation_id: only with auth = "app"'),
            (
                {"private_key": "-----BEGIN RSA PRIVATE KEY-----"},
                "github.private_key: unknown field",
            ),
            (
                {"runner_scope": "enterprise"},
                "github.runner_scope: expected one of 'repository', 'organization', got "
                "'enterprise'",
            ),
        ],
    )
    def test_bad_auth_fields_are_named(self, fields: dict[str, Any], problem: str) -> None:
        document = example()
        document["github"].update(fields)
        assert error_of(document).startswith(f"{SOURCE}: {problem}")

    def test_organization_runners_need_an_organization(self) -> None:
        document = example()
        document["github"].update(owner_type="user", runner_scope="organization")
        assert error_of(document) == (
            f"{SOURCE}: github.runner_scope: organization runners need an organization owner "
            "(github.owner_type is 'user'): use \"repository\""
        )

    def test_a_runner_group_needs_organization_scope(self) -> None:
        document = mutate(("pools", 0, "runner_group_id"), 4)
        assert error_of(document) == (
            f"{SOURCE}: pools[0].runner_group_id: runner group 4 holds organization runners: "
            'set github.runner_scope = "organization", or leave it at 1'
        )
        document["github"]["runner_scope"] = "organization"
        config = parse_config(document, source=SOURCE)
        assert (config.github.runner_scope, config.pools[0].runner_group_id) == (
            "organization",
            4,
        )


class TestPrewarm:
    def test_off_unless_asked_for(self) -> None:
        config = parse_config(example(), source=SOURCE)
        assert [pool.prewarm for pool in config.pools] == [False] * len(config.pools)
        two_pools = load_config(EXAMPLES / "two-pools.toml")
        assert {pool.name: pool.prewarm for pool in two_pools.pools} == {
            "small": False,
            "gpu": True,
        }

    def test_on_names_a_job_outside_the_runner_job_prefix(self) -> None:
        pool = parse_config(mutate(("pools", 0, "prewarm"), True), source=SOURCE).pools[0]
        assert pool.prewarm is True
        assert pool.prewarm_job == f"github-prewarm-{pool.name}"
        assert not pool.prewarm_job.startswith("github-runner-")

    @pytest.mark.parametrize(
        ("value", "kind"), [("yes", "a string"), (1, "an integer"), ([True], "a list")]
    )
    def test_must_be_a_boolean(self, value: object, kind: str) -> None:
        assert error_of(mutate(("pools", 0, "prewarm"), value)) == (
            f"{SOURCE}: pools[0].prewarm: expected true or false, got {kind}"
        )


class TestShapes:
    """Errors of shapes pydantic checks (tables, lists, the backend's type), in our wording."""

    def test_a_section_that_is_not_a_table(self) -> None:
        assert error_of(mutate(("nomad",), "nomad.example.com")) == (
            f"{SOURCE}: nomad: expected a table, got a string"
        )

    def test_pools_that_are_not_a_list_of_tables(self) -> None:
        assert error_of(mutate(("pools",), {"name": "x"})) == (
            f"{SOURCE}: pools: expected a list of tables ([[pools]]), got a table"
        )
        assert error_of(mutate(("pools", 0), "linux-x64")) == (
            f"{SOURCE}: pools[0]: expected a table, got a string"
        )

    def test_a_repository_that_is_neither_a_name_nor_a_table(self) -> None:
        assert error_of(mutate(("github", "repositories", 1), 7)) == (
            f"{SOURCE}: github.repositories[1]: expected a repository name or a table, "
            "got an integer"
        )

    def test_an_empty_pool_choice(self) -> None:
        document = mutate(("github", "repositories", 1), {"name": "api", "pools": []})
        assert error_of(document) == (
            f"{SOURCE}: github.repositories[1].pools: list at least one pool (or leave it out "
            "for all)"
        )

    @pytest.mark.parametrize(
        ("backend", "problem"),
        [
            ({"type": "s3", "region": "eu-west-1"}, "backend.bucket: missing required field"),
            ({"type": "s3", "bucket": "b", "region": "r", "path": "x"}, "backend.path: unknown"),
            ({"type": "remote"}, "backend.organization: missing required field"),
            ({"type": 3}, "backend.type: expected a string, got an integer"),
            ("local", "backend: expected a table, got a string"),
        ],
    )
    def test_backend_errors_name_the_field_not_the_union_member(
        self, backend: object, problem: str
    ) -> None:
        assert error_of(example() | {"backend": backend}).startswith(f"{SOURCE}: {problem}")

    def test_backend_settings_fill_their_defaults(self) -> None:
        backend = parse_config(
            example() | {"backend": {"type": "s3", "bucket": "b", "region": "r"}}, source=SOURCE
        ).backend
        assert (backend.type, dict(backend.settings)) == (
            "s3",
            {"bucket": "b", "region": "r", "key_prefix": "nomad-github-runners"},
        )

    def test_models_are_frozen(self) -> None:
        config = parse_config(example(), source=SOURCE)
        with pytest.raises(ValidationError):
            config.pools[0].cpu = 1  # type: ignore[misc]
        assert config.source == SOURCE


def walk_property_names(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties":
                yield from value
            yield from walk_property_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from walk_property_names(item)


class TestSchema:
    """config.schema.json: generated from the models, referenced by the examples, and what a
    JSON Schema validator (as in editors) makes of the examples and of mistakes."""

    SCHEMA = REPO_ROOT / "config.schema.json"

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(self.SCHEMA.read_text(encoding="utf-8"))
        return schema

    def test_the_committed_schema_is_what_the_models_generate(self) -> None:
        assert self.SCHEMA.read_text(encoding="utf-8") == schema_text(), (
            "config.schema.json is stale: run `python -m config --write-schema`"
        )

    def test_the_command_prints_the_schema(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert config_main(["--schema"]) == 0
        assert json.loads(capsys.readouterr().out) == self.schema()

    @pytest.mark.parametrize("draft", [Draft202012Validator, Draft7Validator])
    def test_the_schema_is_a_valid_schema(self, draft: Any) -> None:
        """Draft 2020-12, and Draft 7 too: Taplo's validator reads the file as draft 7."""
        draft.check_schema(self.schema())

    @pytest.mark.parametrize("draft", [Draft202012Validator, Draft7Validator])
    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
    def test_every_example_validates_against_the_schema(self, path: Path, draft: Any) -> None:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
        # Taplo's validator checks formats under draft 7 by default: so does this one.
        validator = draft(self.schema(), format_checker=draft.FORMAT_CHECKER)
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == []

    @pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
    def test_every_example_points_editors_at_the_schema(self, path: Path) -> None:
        """Taplo's schema directive: a header comment, its path relative to the document."""
        first_line = path.read_text(encoding="utf-8").splitlines()[0]
        assert first_line.startswith("#:schema ")
        target = (path.parent / first_line.removeprefix("#:schema ").strip()).resolve()
        assert target == self.SCHEMA

    @pytest.mark.parametrize(
        ("path", "value"),
        [
            (("pools", 0, "memroy"), 1024),
            (("secrets",), {"github_token": "x"}),
            (("pools", 0, "cpu"), "2000"),
            (("pools", 0, "sudo"), "no"),
            (("pools", 0, "driver"), "exec"),
            (("nomad", "datacenters"), []),
            (("github", "repositories", 1), {"pools": ["linux-x64"]}),
            (("github", "repositories", 1), {"name": "api", "fork_pull_requests": "Allow"}),
            (("backend",), {"type": "consul"}),
            (("backend",), {"type": "s3", "region": "eu-west-1"}),
            (("reconcile",), {"request_budget": 951}),
            (("reconcile",), {"request_budget": 41}),
            (("reconcile",), {"plan": "free", "request_budget": 41}),
            (("reconcile",), {"plan": "paid", "request_budget": 951}),
            (("cloudflare", "account_id"), "not-hex"),
            (("github", "owner"), ""),
            (("pools", 0, "labels"), ["self-hosted", ""]),
            (("github", "app_id"), 3),
            (("github", "auth"), "app"),
        ],
    )
    def test_the_schema_refuses_what_the_models_refuse(
        self, path: tuple[Any, ...], value: Any
    ) -> None:
        """The editor's check agrees with load_config on these mistakes (not on every rule:
        the cross-field ones, such as a repository's pools, only load_config knows)."""
        document = mutate(path, value)
        with pytest.raises(ConfigError):
            parse_config(document, source=SOURCE)
        assert not Draft202012Validator(self.schema()).is_valid(document)

    def test_an_app_with_both_ids_is_what_the_schema_accepts(self) -> None:
        document = example()
        document["github"].update(auth="app", app_id=123, installation_id=456)
        parse_config(document, source=SOURCE)
        assert Draft202012Validator(self.schema()).is_valid(document)
        assert Draft7Validator(self.schema()).is_valid(document)
        del document["github"]["installation_id"]
        assert not Draft7Validator(self.schema()).is_valid(document)

    def test_a_paid_plan_lifts_the_budget_bound_in_the_schema_too(self) -> None:
        document = example() | {"reconcile": {"plan": "paid", "request_budget": 400}}
        parse_config(document, source=SOURCE)
        assert Draft7Validator(self.schema()).is_valid(document)
        assert Draft202012Validator(self.schema()).is_valid(document)

    def test_no_field_looks_like_a_secret(self) -> None:
        names = set(walk_property_names(self.schema()))
        assert "repositories" in names  # the walk does reach nested tables
        secret = re.compile(r"token|secret|password|private|credential|(^|_)key$")
        assert sorted(name for name in names if secret.search(name)) == []


class TestCommand:
    """``python -m config FILE``: the full validation alone, as a command."""

    def test_a_valid_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        path = str(EXAMPLES / "two-pools.toml")
        assert config_main([path]) == 0
        assert capsys.readouterr().out == f"{path}: valid\n"

    def test_an_invalid_file_prints_the_error(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "bad.toml"
        path.write_text((EXAMPLES / "config.toml").read_text() + "\n[secrets]\ntoken = 'x'\n")
        assert config_main([str(path)]) == 1
        assert capsys.readouterr().err == f"{path}: secrets: unknown field (check the spelling)\n"

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert config_main([]) == 2
        assert "usage:" in capsys.readouterr().err
