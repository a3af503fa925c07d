""".github/workflows: valid against the vendored GitHub workflow schema, and doing what they say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO_ROOT / ".github" / "workflows"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


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
    assert "npx --yes cdktf-cli@0.21.0 diff" in diff_workflow
    assert "createComment" in diff_workflow
    for stack in ("edge", "nomad", "dispatch", "github"):
        assert f" {stack}" in diff_workflow


def test_diff_credentials_come_from_repository_secrets(diff_workflow: str) -> None:
    """Every credential variable is a ${{ secrets.X }} reference; forks (no secrets) are skipped."""
    for name in (
        "CLOUDFLARE_API_TOKEN",
        "GITHUB_TOKEN",
        "NOMAD_TOKEN",
        "TF_VAR_github_runner_token",
        "TF_VAR_github_read_token",
    ):
        assert re.search(
            rf"^          {name}: \$\{{\{{ secrets\.[A-Z_]+ \}}\}}$", diff_workflow, re.M
        ), name
    assert "head.repo.full_name == github.repository" in diff_workflow


def test_diff_credentials_reach_only_the_diff_step(diff_workflow: str) -> None:
    """Not the job's env, so the installs' package scripts and the comment step never see them."""
    job_header, steps = diff_workflow.split("\n    steps:\n")
    assert "secrets." not in job_header
    with_secrets = [step for step in steps.split("\n      - ") if "secrets." in step]
    assert len(with_secrets) == 1
    assert with_secrets[0].startswith("name: cdktf diff\n")
