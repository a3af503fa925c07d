"""stacks/components/runner_release.py: the newest-release image and the version window check.

The synthesized JSON is asserted as written, then handed to the real Terraform binary
(``terraform`` on PATH, >= 1.5, as the README requires for deploying): ``terraform init`` decodes
the whole nomad stack, the check block included, and stops only where it needs the provider
plugins, which are out of reach here; ``terraform plan`` evaluates the check's assertions and the
image expression exactly as synthesized, with the GitHub answers put in ``locals`` in place of
the data sources (the only edit), and reports failures as the warnings a real plan prints.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from config import AppConfig, parse_config
from stacks.components.runner_release import (
    CHECK_NAME,
    RELEASE_TAG_PATTERN,
    RELEASES_DATA,
    RELEASES_READ,
    tag_number,
    version_number,
)
from tests.stack_synth import (
    EXAMPLES,
    PINNED_POOL_RUNNER_IMAGE,
    PINNED_RUNNER_IMAGE,
    jobs_by_name,
    newest_runner_image,
    synthesized,
)

RELEASES = f"data.github_rest_api.{RELEASES_DATA}"


def nomad(variant: str) -> dict[str, Any]:
    return synthesized(variant).stacks["nomad"]


def example_document() -> dict[str, Any]:
    with (EXAMPLES / "config.toml").open("rb") as handle:
        return tomllib.load(handle)


def synth_nomad(config: AppConfig) -> dict[str, Any]:
    """The nomad stack alone, for configurations no shared variant covers."""
    from cdktf import Testing

    from stacks.nomad import NomadStack

    stack = NomadStack(Testing.app(), "nomad", config=config, tunnel_token="not-used-here")
    synthesized_stack: dict[str, Any] = json.loads(Testing.synth(stack))
    return synthesized_stack


def runner_images(stack: dict[str, Any]) -> dict[str, str]:
    return {
        name: job["hcl2"]["vars"]["runner_image"]
        for name, job in jobs_by_name(stack).items()
        if "runner_image" in job["hcl2"]["vars"]
    }


class TestNewestRelease:
    def test_unpinned_pools_run_the_newest_release(self) -> None:
        stack = nomad("example")
        ((_, release),) = stack["data"]["github_release"].items()
        assert release["owner"] == "actions"
        assert release["repository"] == "runner"
        assert release["retrieve_by"] == "latest"
        assert release["provider"] == "github.runner_releases"
        assert runner_images(stack) == {"github-runner-linux-x64": newest_runner_image(stack)}
        assert "check" not in stack

    def test_the_tag_shape_is_a_postcondition(self) -> None:
        (release,) = nomad("example")["data"]["github_release"].values()
        (postcondition,) = release["lifecycle"]["postcondition"]
        assert postcondition["condition"] == (
            f'${{can(regex("{RELEASE_TAG_PATTERN}", self.release_tag))}}'
        )

    def test_one_github_provider_aimed_at_github_com(self) -> None:
        """actions/runner is on github.com, even for a GitHub Enterprise Server deployment."""
        stack = nomad("example")
        (provider,) = stack["provider"]["github"]
        assert provider == {
            "alias": "runner_releases",
            "base_url": "https://api.github.com/",
            "token": "${var.github_releases_token}",
        }
        variable = stack["variable"]["github_releases_token"]
        assert variable["sensitive"] is True
        assert variable["default"] == ""  # explicit: the provider never falls back to GITHUB_TOKEN
        assert stack["terraform"]["required_providers"]["github"] == {
            "source": "integrations/github",
            "version": "6.9.0",
        }

    def test_a_custom_pool_image_is_taken_as_is(self) -> None:
        synth = synthesized("two-pools")
        images = runner_images(synth.stacks["nomad"])
        assert images["github-runner-gpu"] == synth.config.pool("gpu").image
        assert images["github-runner-small"] == newest_runner_image(synth.stacks["nomad"])
        assert "check" not in synth.stacks["nomad"]

    def test_no_lookup_when_no_pool_needs_one(self) -> None:
        """Only custom images: no GitHub provider, no variable, no data source, no check."""
        document = example_document()
        document["images"]["runner"] = "registry.example.com/ci/runner:20261124"
        stack = synth_nomad(parse_config(document, source="custom-only"))
        assert "github" not in stack["provider"]
        assert "github_releases_token" not in stack["variable"]
        assert "github_release" not in stack.get("data", {})
        assert "check" not in stack
        assert runner_images(stack) == {
            "github-runner-linux-x64": "registry.example.com/ci/runner:20261124"
        }


class TestVersionWindowCheck:
    def check(self) -> dict[str, Any]:
        stack = nomad("pinned-runner")
        block: dict[str, Any] = stack["check"][CHECK_NAME]
        return block

    def test_pinned_pools_run_their_pin(self) -> None:
        stack = nomad("pinned-runner")
        assert runner_images(stack) == {
            "github-runner-linux-x64": PINNED_RUNNER_IMAGE,
            "github-runner-arm64": PINNED_POOL_RUNNER_IMAGE,
        }
        assert "github_release" not in stack.get("data", {})

    def test_its_data_source_reads_the_newest_releases_of_actions_runner(self) -> None:
        assert self.check()["data"] == {
            "github_rest_api": {
                RELEASES_DATA: {
                    "provider": "github.runner_releases",
                    "endpoint": f"repos/actions/runner/releases?per_page={RELEASES_READ}",
                }
            }
        }

    def test_one_assertion_for_the_read_and_one_per_pinned_version(self) -> None:
        asserts = self.check()["assert"]
        assert asserts[0]["condition"] == (
            f"${{{RELEASES}.code == 200 && can(jsondecode({RELEASES}.body)[0].tag_name)}}"
        )
        assert [version_number((2, 335, 1)), version_number((2, 336, 0))] == [2335001, 2336000]
        assert len(asserts) == 3
        assert "> 2335001 &&" in asserts[1]["condition"]
        assert asserts[1]["error_message"].startswith(
            "Runner 2.335.1 (images.runner, pool linux-x64) is past GitHub's runner version "
            "window: actions/runner ${try(join("
        )
        assert "> 2336000 &&" in asserts[2]["condition"]
        assert asserts[2]["error_message"].startswith(
            "Runner 2.336.0 (pools[1].image, pool arm64) is past GitHub's runner version window"
        )
        for assertion in asserts[1:]:
            assert "plantimestamp()" in assertion["condition"]
            assert 'timeadd(release.published_at, "720h")' in assertion["condition"]

    def test_a_version_shared_by_pools_is_checked_once(self) -> None:
        document = example_document()
        document["images"]["runner"] = PINNED_RUNNER_IMAGE
        document["pools"].append(
            {"name": "big", "labels": ["self-hosted", "big"], "image": PINNED_RUNNER_IMAGE}
        )
        stack = synth_nomad(parse_config(document, source="shared-pin"))
        asserts = stack["check"][CHECK_NAME]["assert"]
        assert len(asserts) == 2
        assert asserts[1]["error_message"].startswith(
            "Runner 2.335.1 (images.runner, pool linux-x64; pools[1].image, pool big) is past"
        )


# ---- the real Terraform binary -------------------------------------------------------------


def terraform() -> str:
    found = shutil.which("terraform")
    if found is None:
        pytest.fail("terraform is not on PATH: install Terraform >= 1.5 (see the README)")
    return found


def run_terraform(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {
        **os.environ,
        "CHECKPOINT_DISABLE": "1",
        "TF_IN_AUTOMATION": "1",
        "TF_CLI_CONFIG_FILE": os.devnull,
    }
    return subprocess.run(
        [terraform(), f"-chdir={directory}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environment,
    )


def init_offline(directory: Path) -> str:
    """``terraform init`` with no plugin source: it decodes the configuration, then stops.

    Returns its output, whitespace-normalized (Terraform wraps its messages).
    """
    plugins = directory / "no-plugins"
    plugins.mkdir()
    result = run_terraform(
        directory, "init", "-backend=false", "-input=false", "-no-color", f"-plugin-dir={plugins}"
    )
    assert result.returncode != 0, "init cannot succeed without the provider plugins"
    return " ".join((result.stdout + result.stderr).split())


class TestTerraformDecodesTheStack:
    def stack_dir(self, tmp_path: Path, stack: dict[str, Any]) -> Path:
        (tmp_path / "cdk.tf.json").write_text(json.dumps(stack, indent=1))
        return tmp_path

    def test_the_check_block_is_valid_terraform(self, tmp_path: Path) -> None:
        output = init_offline(self.stack_dir(tmp_path, nomad("pinned-runner")))
        # Past the configuration, to the provider plugins it cannot fetch here.
        assert "problems with the configuration" not in output, output[-3000:]
        assert "Failed to query available provider packages" in output, output[-3000:]
        assert "integrations/github" in output

    def test_a_malformed_check_block_is_refused_before_that(self, tmp_path: Path) -> None:
        """The test above is not vacuous: init does decode the check block."""
        stack = copy.deepcopy(nomad("pinned-runner"))
        stack["check"][CHECK_NAME]["data"]["github_rest_api"][RELEASES_DATA]["count"] = 1
        output = init_offline(self.stack_dir(tmp_path, stack))
        assert "problems with the configuration" in output, output[-3000:]
        assert "not supported within nested data blocks" in output


def release(tag: str, days_ago: float | None, **fields: Any) -> dict[str, Any]:
    """A release as GET /repos/{o}/{r}/releases lists it (the fields the check reads)."""
    published = (
        None
        if days_ago is None
        else (datetime.now(UTC) - timedelta(days=days_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    entry: dict[str, Any] = {
        "tag_name": tag,
        "name": tag,
        "draft": False,
        "prerelease": False,
        "published_at": published,
        "assets": [],
    }
    entry.update(fields)
    return entry


# Each scenario: what GitHub answers, and which pinned versions the plan warns about (with the
# overdue releases the warning names). The pins are 2.335.1 and 2.336.0 (variant pinned-runner).
SCENARIOS: dict[str, tuple[int, list[Any] | dict[str, Any], dict[str, list[str]]]] = {
    "current": (
        200,
        [release("v2.336.0", 5), release("v2.335.1", 20), release("v2.335.0", 70)],
        {},
    ),
    "both_overdue": (
        200,
        [release("v2.337.0", 40), release("v2.336.0", 80), release("v2.335.1", 120)],
        {"2.335.1": ["v2.337.0", "v2.336.0"], "2.336.0": ["v2.337.0"]},
    ),
    # The newest release is fresh, but the one between it and the pin is overdue.
    "intermediate_release_overdue": (
        200,
        [release("v2.338.0", 3), release("v2.337.0", 31), release("v2.336.0", 90)],
        {"2.335.1": ["v2.337.0", "v2.336.0"], "2.336.0": ["v2.337.0"]},
    ),
    "just_inside_the_window": (
        200,
        [release("v2.337.0", 29.5), release("v2.336.0", 29.9), release("v2.335.1", 60)],
        {},
    ),
    "prereleases_and_drafts_do_not_count": (
        200,
        [
            release("v2.338.0", None, draft=True),
            release("v2.337.0", 60, prerelease=True),
            release("v2.336.0", 10),
        ],
        {},
    ),
    "odd_entries_are_skipped_without_error": (
        200,
        [
            release("nightly", 90),
            release("v3.0", 90),
            release("v2.340.0-rc1", 90),
            {"name": "no tag at all"},
            release("v2.336.0", 10),
        ],
        {},
    ),
}
UNREADABLE: dict[str, tuple[int, Any]] = {
    "not_found": (404, {"message": "Not Found", "status": "404"}),
    "not_json": (200, "<html>rate limited</html>"),
    "empty_list": (200, []),
}


def check_as_locals(
    check: dict[str, Any], name: str, code: int, body: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The synthesized check with its data source replaced by locals holding GitHub's answer."""
    text = json.dumps(check["assert"])
    text = text.replace(f"{RELEASES}.body", f"local.{name}_body")
    text = text.replace(f"{RELEASES}.code", f"local.{name}_code")
    assert RELEASES not in text
    body_text = body if isinstance(body, str) else json.dumps(body)
    return {f"{name}_body": body_text, f"{name}_code": code}, {"assert": json.loads(text)}


def plan_warnings(directory: Path) -> tuple[int, dict[str, list[str]], list[dict[str, Any]]]:
    """Run init and plan; return the plan's exit code, warning details by check, and errors."""
    initialized = run_terraform(directory, "init", "-input=false", "-no-color")
    assert initialized.returncode == 0, initialized.stdout + initialized.stderr
    planned = run_terraform(directory, "plan", "-input=false", "-lock=false", "-json")
    warnings: dict[str, list[str]] = {}
    errors = []
    for line in planned.stdout.splitlines():
        message = json.loads(line)
        diagnostic = message.get("diagnostic")
        if message.get("type") != "diagnostic" or diagnostic is None:
            continue
        if diagnostic["severity"] == "error":
            errors.append(diagnostic)
            continue
        if diagnostic["summary"] != "Check block assertion failed":
            continue
        context = diagnostic["snippet"]["context"]  # check.<name>.assert[<i>]
        warnings.setdefault(context.split(".")[1], []).append(diagnostic["detail"])
    return planned.returncode, warnings, errors


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One Terraform plan holding every scenario as its own check block."""
    directory = tmp_path_factory.mktemp("version-window")
    check = synthesized("pinned-runner").stacks["nomad"]["check"][CHECK_NAME]
    newest = nomad("example")
    ((release_name, release_data),) = newest["data"]["github_release"].items()
    config: dict[str, Any] = {"locals": {}, "check": {}}
    cases = {name: (code, body) for name, (code, body, _) in SCENARIOS.items()} | UNREADABLE
    for name, (code, body) in cases.items():
        local_values, block = check_as_locals(check, name, code, body)
        config["locals"].update(local_values)
        config["check"][name] = block
    # The newest-release image and the tag postcondition, evaluated on sample tags.
    image = newest_runner_image(newest).replace(
        f"data.github_release.{release_name}.release_tag", "local.sample_tag"
    )
    (postcondition,) = release_data["lifecycle"]["postcondition"]
    tag_ok = postcondition["condition"].replace("self.release_tag", "local.sample_tag")
    config["locals"]["sample_tag"] = "v2.337.0"
    config["locals"]["newest_image"] = image
    config["check"]["image_of_newest"] = {
        "assert": [
            {
                "condition": '${local.newest_image == "ghcr.io/actions/actions-runner:2.337.0"}',
                "error_message": "image is ${local.newest_image}",
            },
            {"condition": tag_ok, "error_message": "v2.337.0 is refused"},
        ]
    }
    for index, bad in enumerate(["2.337.0", "v2.337", "latest", "v2.337.0-beta"]):
        # A condition must refer to something: each sample tag is a local.
        config["locals"][f"bad_tag_{index}"] = bad
        condition = postcondition["condition"].replace("self.release_tag", f"local.bad_tag_{index}")
        config["check"][f"bad_tag_{index}"] = {
            "assert": [{"condition": condition, "error_message": f"refused {bad}"}]
        }
    # tag_number() agrees with version_number() on real tags.
    for index, (tag, version) in enumerate([("v2.336.0", (2, 336, 0)), ("v3.0.12", (3, 0, 12))]):
        config["locals"][f"tag_{index}"] = tag
        number = tag_number(f"local.tag_{index}")
        config["check"][f"tag_number_{index}"] = {
            "assert": [
                {
                    "condition": f"${{{number} == {version_number(version)}}}",
                    "error_message": f"tag_number({tag}) is ${{{number}}}",
                }
            ]
        }
    (directory / "main.tf.json").write_text(json.dumps(config, indent=1))
    code, warnings, errors = plan_warnings(directory)
    return {"code": code, "warnings": warnings, "errors": errors}


class TestTerraformEvaluatesTheCheck:
    def test_failing_assertions_are_warnings_never_errors(self, evaluated: dict[str, Any]) -> None:
        assert evaluated["errors"] == []
        assert evaluated["code"] == 0
        assert evaluated["warnings"], "no scenario warned at all"

    @pytest.mark.parametrize("scenario", sorted(SCENARIOS))
    def test_scenario(self, scenario: str, evaluated: dict[str, Any]) -> None:
        _, _, expected = SCENARIOS[scenario]
        details = evaluated["warnings"].get(scenario, [])
        assert len(details) == len(expected), details
        for pinned, overdue in expected.items():
            (detail,) = [text for text in details if text.startswith(f"Runner {pinned} (")]
            assert f"actions/runner {', '.join(overdue)} came out more than 30 days" in detail

    @pytest.mark.parametrize("case", sorted(UNREADABLE))
    def test_an_unreadable_answer_says_so_and_checks_nothing(
        self, case: str, evaluated: dict[str, Any]
    ) -> None:
        code, _ = UNREADABLE[case]
        (detail,) = evaluated["warnings"][case]
        assert detail.startswith(f"Could not read the actions/runner releases (HTTP {code})")

    def test_newest_image_and_tag_postcondition(self, evaluated: dict[str, Any]) -> None:
        assert "image_of_newest" not in evaluated["warnings"]
        for index, bad in enumerate(["2.337.0", "v2.337", "latest", "v2.337.0-beta"]):
            assert evaluated["warnings"][f"bad_tag_{index}"] == [f"refused {bad}"]

    def test_tag_numbers_order_like_versions(self, evaluated: dict[str, Any]) -> None:
        assert "tag_number_0" not in evaluated["warnings"]
        assert "tag_number_1" not in evaluated["warnings"]
