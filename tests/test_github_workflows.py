""".github/workflows: valid against the vendored GitHub workflow schema, and doing what they say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"
# owner/repo@<full commit SHA> # <the release tag it was taken from>
PINNED_ACTION = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def workflow(name: str) -> dict[str, Any]:
    document: dict[str, Any] = YAML(typ="safe").load((WORKFLOWS / name).read_text())
    return document


def uses_lines() -> list[tuple[str, str]]:
    """Every `uses:` of every workflow, with the rest of its line (the tag comment)."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for line in path.read_text().splitlines():
            match = re.match(r"^\s*(?:- )?uses: (.*)$", line)
            if match:
                found.append((path.name, match.group(1)))
    return found


def test_workflows_validate_offline() -> None:
    """check-jsonschema ships the schema (vendor.github-workflows): no network needed."""
    files = sorted(str(path) for path in WORKFLOWS.glob("*.yml"))
    assert len(files) == 2
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", *files],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check is not vacuous: a workflow without jobs fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text("name: broken\non: push\n")
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.github-workflows", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0


def test_ci_runs_the_readme_test_command() -> None:
    assert "run: ./.ci/run" in (WORKFLOWS / "ci.yml").read_text()


@pytest.fixture
def diff_workflow() -> str:
    return (WORKFLOWS / "cdktf-diff.yml").read_text()


def test_diff_runs_on_pull_requests_and_comments(diff_workflow: str) -> None:
    assert re.search(r"^on:\n  pull_request:", diff_workflow, re.M)
    assert "pull-requests: write" in diff_workflow
    assert 'npx --no-install cdktf diff "$stack"' in diff_workflow
    assert "createComment" in diff_workflow
    for stack in ("edge", "nomad", "dispatch", "github"):
        assert f" {stack}" in diff_workflow


def test_diff_credentials_come_from_secrets(diff_workflow: str) -> None:
    """Every credential variable is a ${{ secrets.X }} reference; forks (no secrets) are skipped."""
    for name in (
        "CLOUDFLARE_API_TOKEN",
        "GITHUB_TOKEN",
        "NOMAD_TOKEN",
        "TF_VAR_github_runner_token",
        "TF_VAR_github_read_token",
        "TF_VAR_github_app_private_key",
    ):
        assert re.search(
            rf"^          {name}: \$\{{\{{ secrets\.[A-Z_]+ \}}\}}$", diff_workflow, re.M
        ), name
    assert "head.repo.full_name == github.repository" in diff_workflow


def test_diff_credentials_reach_only_the_diff_step() -> None:
    """Not the job's env, so the installs' package scripts and the comment step never see them."""
    job = workflow("cdktf-diff.yml")["jobs"]["diff"]
    credential = re.compile(r"\$\{\{\s*(secrets\.|github\.token)")
    assert not credential.search(json.dumps(job["env"]))
    with_credentials = [step for step in job["steps"] if credential.search(json.dumps(step))]
    assert [step.get("name") for step in with_credentials] == ["cdktf diff"]


def test_every_action_is_pinned_by_commit() -> None:
    """A tag can be moved to other code; a full commit SHA cannot. The tag stays as a comment."""
    found = uses_lines()
    assert len(found) >= 9  # 4 in ci.yml, 5 in cdktf-diff.yml
    unpinned = [f"{name}: {uses}" for name, uses in found if not PINNED_ACTION.match(uses)]
    assert unpinned == []


def test_pin_pattern_refuses_tags_and_short_shas() -> None:
    """The pin check is not vacuous."""
    for uses in (
        "actions/checkout@v7",
        "actions/checkout@v7.0.1",
        "actions/checkout@3d3c42e # v7.0.1",
        "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1",
    ):
        assert not PINNED_ACTION.match(uses), uses


def test_diff_job_waits_for_an_environment_with_reviewers() -> None:
    """The job names an environment, so its required reviewers gate it and its secrets."""
    job = workflow("cdktf-diff.yml")["jobs"]["diff"]
    assert job["environment"] == "cdktf-diff"


def test_diff_runs_the_locked_cdktf_cli(diff_workflow: str) -> None:
    """The CLI comes from package-lock.json, never resolved by npx at run time with secrets set."""
    assert "npx --yes" not in diff_workflow
    assert "cdktf-cli@" not in diff_workflow
    package = json.loads((REPO_ROOT / "package.json").read_text())
    assert package["devDependencies"]["cdktf-cli"] == "0.21.0"
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert lock["packages"][""]["devDependencies"]["cdktf-cli"] == "0.21.0"
    assert lock["packages"]["node_modules/cdktf-cli"]["version"] == "0.21.0"
    assert lock["packages"]["node_modules/cdktf-cli"]["integrity"].startswith("sha512-")


@pytest.mark.parametrize("name", ["ci.yml", "cdktf-diff.yml"])
def test_checkout_keeps_its_token_out_of_the_working_copy(name: str) -> None:
    """Code from the pull request runs in these jobs: no token persisted in .git/config."""
    steps = next(iter(workflow(name)["jobs"].values()))["steps"]
    (checkout,) = [step for step in steps if step.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["persist-credentials"] is False


def test_no_secret_name_github_uses_cannot_create() -> None:
    """GitHub refuses secret names starting with GITHUB_; such a reference would stay empty."""
    text = "\n".join(path.read_text() for path in WORKFLOWS.glob("*.yml"))
    assert re.findall(r"secrets\.GITHUB_\w*", text, re.I) == []
