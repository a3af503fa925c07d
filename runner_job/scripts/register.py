"""Prestart task: mint one just-in-time runner config and hand it to the runner task.

Calls ``POST /repos/{owner}/{repo}/actions/runners/generate-jitconfig`` (organization runners:
``POST /orgs/{org}/actions/runners/generate-jitconfig``) with the pool's labels, runner group
and a runner name unique to this allocation, then writes into the hand-off
directory (in the allocation's shared ``alloc/`` dir):

* ``jitconfig``: the encoded config, a secret until the runner has used it; mode 0600, owned by
  the runner image's user, which deletes it once read;
* ``runner_id`` and ``runner_name``: for the deregister task.

GitHub answers 409 when the name is taken. The name is this allocation's own, so that runner is
one an earlier try in this allocation registered: GitHub created it, but its answer was lost (a
5xx or a timeout, then the retry). Nobody ever got its config, so it is looked up by name,
deleted unless GitHub reports it busy, and the call is made once more.

Settings come from flags, else from environment variables set by the jobspec (names in
``--help``). Exit status: 0 registered, 1 GitHub refused (the message says what to fix),
2 bad settings. The credential (a token, or a GitHub App's key that mints an installation
token: ``github_api``) is read from a file and never printed.

Nomad renders this file as a Go template: it must never contain two opening braces in a row.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from github_api import (
    Client,
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

DESCRIPTION = "Mint a just-in-time runner config and hand it to the runner task."
# The official runner image runs as user "runner" (uid 1001).
DEFAULT_RUNNER_UID = 1001
MAX_LABELS = 100


def parse_labels(raw: str) -> list[str]:
    try:
        labels = json.loads(raw)
    except ValueError:
        raise ConfigError(f"RUNNER_LABELS is not a JSON list of strings: {raw!r}") from None
    if (
        not isinstance(labels, list)
        or not all(isinstance(label, str) and label.strip() for label in labels)
        or not 1 <= len(labels) <= MAX_LABELS
    ):
        raise ConfigError(
            f"RUNNER_LABELS must be a JSON list of 1 to {MAX_LABELS} non-empty strings: {raw!r}"
        )
    return [str(label) for label in labels]


def write_handoff(directory: Path, *, jitconfig: str, runner_id: int, name: str, uid: int) -> None:
    """Write the hand-off files so that only the runner user can read the config."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    as_root = os.geteuid() == 0
    if as_root:
        # The runner task runs as another user and must be able to delete the config.
        os.chown(directory, uid, uid)
    # The id first: should anything below fail, the deregister task still finds the runner
    # GitHub has just registered and removes it.
    (directory / "runner_id").write_text(f"{runner_id}\n", encoding="utf-8")
    (directory / "runner_name").write_text(f"{name}\n", encoding="utf-8")
    config_path = directory / "jitconfig"
    descriptor = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(jitconfig)
    if as_root:
        os.chown(config_path, uid, uid)


def remove_leftover(
    client: Client, runners_path: str, name: str, *, repository: str, why: dict[str, Any]
) -> str:
    """Delete the idle runner that holds this allocation's name; say what was done.

    Called after a 409: an earlier try registered it and its answer was lost, so no task has its
    config. A busy runner of this name is left alone (it runs someone's job) and fails the task.
    """
    action = f"registering runner {name}: GitHub says the name is taken; looking it up"
    listed = client.call("GET", f"{runners_path}?name={urllib.parse.quote(name)}&per_page=100")
    if listed.status != 200:
        raise explain(listed, action=action, repository=repository, **why)
    runners = listed.body.get("runners") if isinstance(listed.body, dict) else None
    found = [
        runner
        for runner in (runners if isinstance(runners, list) else [])
        if isinstance(runner, dict) and runner.get("name") == name
    ]
    if not found:
        return "the runner holding the name was gone when looked up"
    runner_id = found[0].get("id")
    if not isinstance(runner_id, int):
        raise GitHubError(
            f"registering runner {name} for {repository}: GitHub lists the runner of this name "
            "without an id; is github_api_url a GitHub REST API?"
        )
    if found[0].get("busy") is True:
        raise GitHubError(
            f"registering runner {name} for {repository}: a runner of this name (id {runner_id}) "
            "already exists and GitHub reports it busy running a job, so it was not removed and "
            "no runner was registered for this allocation. This allocation's tasks cannot have "
            "started it: find out who registered it (repository Settings > Actions > Runners), "
            "then re-dispatch the job (a new allocation gets a new name)"
        )
    gone = client.call("DELETE", f"{runners_path}/{runner_id}")
    if gone.status == 422:
        raise GitHubError(
            f"registering runner {name} for {repository}: a runner of this name (id {runner_id}) "
            "already exists and GitHub refused to delete it as it is now running a job; no "
            "runner was registered for this allocation. Find out who registered it (repository "
            "Settings > Actions > Runners), then re-dispatch the job"
        )
    if gone.status not in (204, 404):
        raise explain(
            gone,
            action=f"registering runner {name}: removing the runner (id {runner_id}) that holds "
            "the name",
            repository=repository,
            **why,
        )
    return f"removed runner id {runner_id}, left by an earlier try whose answer was lost"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    flag = parser.add_argument
    add_common_flags(parser)
    flag("--runner-group-id", help="GitHub runner group id [env RUNNER_GROUP_ID]")
    flag("--labels", help="JSON list of runner labels [env RUNNER_LABELS]")
    flag("--work-folder", default="_work", help="runner work folder (default _work)")
    flag("--runner-uid", type=int, default=DEFAULT_RUNNER_UID, help="uid of the runner user")
    return parser.parse_args(argv)


def register(args: argparse.Namespace) -> str:
    repository = setting(args.repository, "GITHUB_REPOSITORY")
    path = runners_path(args, repository)
    pool = setting(args.pool, "RUNNER_POOL")
    name = runner_name(pool, setting(args.alloc_id, "NOMAD_ALLOC_ID"))
    group_text = setting(args.runner_group_id, "RUNNER_GROUP_ID")
    try:
        group_id = int(float(group_text))
    except ValueError:
        raise ConfigError(f"RUNNER_GROUP_ID must be a number, got {group_text!r}") from None
    labels = parse_labels(setting(args.labels, "RUNNER_LABELS"))
    handoff = Path(setting(args.handoff_dir, "RUNNER_HANDOFF_DIR"))
    variable = setting(args.credential_variable, "CREDENTIAL_VARIABLE", required=False)
    why: dict[str, Any] = {
        "credential_variable": variable or "holding the register task's credential",
        "item": credential_item(args),
        "organization": path.startswith("/orgs/"),
    }
    client = client_from(args)
    body = {
        "name": name,
        "runner_group_id": group_id,
        "labels": labels,
        "work_folder": args.work_folder,
    }
    response = client.call("POST", f"{path}/generate-jitconfig", body)
    note = ""
    if response.status == 409:
        note = "; " + remove_leftover(client, path, name, repository=repository, why=why)
        response = client.call("POST", f"{path}/generate-jitconfig", body)
    if response.status != 201:
        raise explain(response, action=f"registering runner {name}", repository=repository, **why)
    answer = response.body if isinstance(response.body, dict) else {}
    runner = answer.get("runner")
    jitconfig = answer.get("encoded_jit_config")
    runner_id = runner.get("id") if isinstance(runner, dict) else None
    if not isinstance(jitconfig, str) or not jitconfig or not isinstance(runner_id, int):
        raise GitHubError(
            f"registering runner {name} for {repository}: GitHub answered 201 without "
            "runner.id and encoded_jit_config; is github_api_url a GitHub REST API?"
        )
    try:
        write_handoff(
            handoff, jitconfig=jitconfig, runner_id=runner_id, name=name, uid=args.runner_uid
        )
    except OSError as error:
        raise ConfigError(
            f"registered runner {name} (id {runner_id}) but cannot write the hand-off files in "
            f"{handoff} ({error.strerror}); the deregister task removes the runner"
        ) from None
    return f"registered runner {name} (id {runner_id}) for {repository} with labels {labels}{note}"


def main(argv: Sequence[str] | None = None) -> int:
    return run_task("register", parse_args, register, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
