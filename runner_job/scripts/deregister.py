"""Poststop task: make sure this allocation's runner is gone from GitHub.

Runs after the runner task has exited for any reason, or never started. Reads the runner id the
register task left in the hand-off directory; if there is none, registration never completed and
there is nothing to remove (exit 0). Otherwise ``GET`` the runner
(``/repos/{owner}/{repo}/actions/runners/{id}``, or ``/orgs/{org}/actions/runners/{id}`` for
organization runners): 404 means GitHub already removed it (an ephemeral runner that ran its
job); if it still exists and carries the name this allocation gave it, ``DELETE`` it (204 or 404
both mean gone). A runner GitHub still reports as busy is retried for a while. Any JIT config
the runner never read is removed too.

The name check matters: the hand-off directory is writable by the runner task, where workflow
code runs, so the id in it is trusted only when GitHub confirms the name.

Exit status: 0 gone, 1 GitHub refused (the message says what to fix), 2 bad settings.

Nomad renders this file as a Go template: it must never contain two opening braces in a row.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from github_api import (
    ConfigError,
    GitHubError,
    add_common_flags,
    client_from,
    credential_item,
    explain,
    run_task,
    runner_name,
    runners_path,
    setting,
)

DESCRIPTION = "Delete this allocation's runner from GitHub if it is still registered."


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    flag = parser.add_argument
    add_common_flags(parser)
    flag("--busy-retries", type=int, default=6, help="tries while GitHub reports the runner busy")
    flag("--busy-delay", type=float, default=5.0, help="seconds between those tries")
    return parser.parse_args(argv)


def read_runner_id(handoff: Path) -> int | None:
    """The id register left, read as a plain file only: the runner task can replace the file.

    A symlink would be followed inside this task's container (to its secrets/github_token, for
    one), and a FIFO would block this task for ever; so no link is followed, nothing blocks, and
    no content is ever echoed.
    """
    path = handoff / "runner_id"
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(
            f"{path} is not a plain file ({error.strerror}); it was changed after registration"
        ) from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ConfigError(f"{path} is not a plain file; it was changed after registration")
        text = handle.read(32).decode("ascii", "replace").strip()
    if not text.isdigit():
        raise ConfigError(f"{path} does not hold a runner id; it was changed after registration")
    return int(text)


def deregister(args: argparse.Namespace) -> str:
    handoff = Path(setting(args.handoff_dir, "RUNNER_HANDOFF_DIR"))
    # A config the runner never read must not outlive the allocation. Whatever the runner task
    # left in its place (it can write there) must not keep the runner from being removed.
    try:
        (handoff / "jitconfig").unlink(missing_ok=True)
    except OSError as error:
        print(
            f"deregister: cannot remove {handoff / 'jitconfig'} ({error.strerror})", file=sys.stderr
        )
    runner_id = read_runner_id(handoff)
    if runner_id is None:
        return "no runner was registered for this allocation; nothing to remove"
    repository = setting(args.repository, "GITHUB_REPOSITORY")
    runners = runners_path(args, repository)
    expected = runner_name(
        setting(args.pool, "RUNNER_POOL"), setting(args.alloc_id, "NOMAD_ALLOC_ID")
    )
    variable = setting(args.credential_variable, "CREDENTIAL_VARIABLE", required=False)
    why: dict[str, Any] = {
        "credential_variable": variable or "holding the deregister task's credential",
        "item": credential_item(args),
        "organization": runners.startswith("/orgs/"),
    }
    client = client_from(args)
    path = f"{runners}/{runner_id}"
    action = f"removing runner {expected} (id {runner_id})"

    found = client.call("GET", path)
    if found.status == 404:
        return f"runner {expected} (id {runner_id}) is already gone from {repository}"
    if found.status != 200:
        raise explain(found, action=action, repository=repository, **why)
    name = found.body.get("name") if isinstance(found.body, dict) else None
    if name != expected:
        raise GitHubError(
            f"{action} for {repository}: refusing, GitHub says runner {runner_id} is named "
            f"{name!r}; the hand-off file {handoff / 'runner_id'} was changed after registration. "
            f"Remove runner {expected} by hand if it is still listed"
        )

    tries = max(1, args.busy_retries)
    for attempt in range(tries):
        if attempt:
            time.sleep(args.busy_delay)
        gone = client.call("DELETE", path)
        if gone.status in (204, 404):
            return f"removed runner {expected} (id {runner_id}) from {repository}"
        if gone.status != 422:
            raise explain(gone, action=action, repository=repository, **why)
        # 422: GitHub still counts the runner as busy while its last job is wrapped up.
    raise GitHubError(
        f"{action} for {repository}: GitHub still reports the runner busy after {tries} tries; "
        "GitHub removes an offline ephemeral runner by itself within a day, or delete it by hand"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_task("deregister", parse_args, deregister, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
