"""Where the Nomad side of the toolkit lives on disk, and the names both sides must agree on.

The jobspecs and task scripts in this folder are plain files a Nomad operator can read and run
with ``nomad job run``; the Nomad stack reads the same files. The constants below are the
agreements between the jobspecs and the stacks: group and task names, the Nomad Variable paths
that hold credentials (each readable by exactly one task, through Nomad's workload identity) and
the item keys inside them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

RUNNER_JOB_DIR: Final = Path(__file__).resolve().parent
RUNNER_JOBSPEC: Final = RUNNER_JOB_DIR / "runner.nomad.hcl"
# A pool with docker = "dind": the same job plus the allocation's own Docker daemon.
RUNNER_DIND_JOBSPEC: Final = RUNNER_JOB_DIR / "runner-dind.nomad.hcl"
CLOUDFLARED_JOBSPEC: Final = RUNNER_JOB_DIR / "cloudflared.nomad.hcl"
PREWARM_JOBSPEC: Final = RUNNER_JOB_DIR / "prewarm.nomad.hcl"
SCRIPTS_DIR: Final = RUNNER_JOB_DIR / "scripts"

RUNNER_GROUP: Final = "runner"
REGISTER_TASK: Final = "register"
RUNNER_TASK: Final = "runner"
DEREGISTER_TASK: Final = "deregister"
DOCKER_TASK: Final = "docker"  # the Docker daemon sidecar of a dind pool
GITHUB_TOKEN_ITEM: Final = "github_token"
# The item holding a GitHub App's PEM private key instead (auth = "app").
GITHUB_APP_KEY_ITEM: Final = "github_app_private_key"

# The cloudflared job's id (the stack deploys it under this name; doctor looks it up by it).
CLOUDFLARED_JOB: Final = "cloudflared"
CLOUDFLARED_GROUP: Final = "cloudflared"
CLOUDFLARED_TASK: Final = "cloudflared"
TUNNEL_TOKEN_ITEM: Final = "tunnel_token"

PREWARM_GROUP: Final = "prewarm"
# Prewarm task names, one per image kept on the node: runner, helper, and DOCKER_TASK for the
# Docker daemon image of a dind pool.
PREWARM_TASKS: Final = ("runner", "helper", DOCKER_TASK)


def credential_variable_paths(job_name: str) -> tuple[str, str]:
    """Nomad Variable paths holding the GitHub credential for one runner job.

    One per task that needs it (register, deregister) and none the runner task can read: a task
    reads ``nomad/jobs/{job}/{group}/{task}`` of its own task only, so workflow code running in
    the runner task never sees the credential.
    """
    base = f"nomad/jobs/{job_name}/{RUNNER_GROUP}"
    return (f"{base}/{REGISTER_TASK}", f"{base}/{DEREGISTER_TASK}")


def tunnel_token_variable_path(job_name: str) -> str:
    """Nomad Variable path holding the Cloudflare tunnel token, readable by cloudflared only."""
    return f"nomad/jobs/{job_name}/{CLOUDFLARED_GROUP}/{CLOUDFLARED_TASK}"
