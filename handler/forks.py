"""Is a workflow run from a fork? The question the fork policy asks before a runner is dispatched.

A ``workflow_job`` delivery says nothing about forks; its run does. ``GET
/repos/{owner}/{repo}/actions/runs/{run_id}`` (with "Actions: read"), and every entry of the runs
list the reconciler already reads, is a workflow run object carrying ``repository`` and
``head_repository``. :func:`origin_of_run` turns one into a verdict:

* :data:`SAME_REPOSITORY`: ``head_repository.full_name`` equals ``repository.full_name``
  (case-insensitively) and that is the repository asked about: the run's code is the
  repository's own (a push, a schedule, a pull request from a branch of the repository);
* :data:`FORK`: the names differ: a pull request from a fork;
* :data:`UNKNOWN`: no head repository to compare (GitHub answers ``null`` once the fork is
  deleted), or a run of another repository, or a shape we do not know. Not verifiable is
  treated like a fork: never dispatched.

The head repository of a run never changes, so a verdict read from GitHub can be kept for the
run's life: :class:`RunOriginCache` keeps them per isolate (memory only, no KV write). Lookup
failures are not verdicts and are never cached. Standard library only, no I/O.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote

from handler import contract
from handler.github_errors import github_message
from handler.nomad import HttpRequest

SAME_REPOSITORY: Final = "same_repository"
FORK: Final = "fork"
UNKNOWN: Final = "unknown"
ORIGINS: Final = frozenset({SAME_REPOSITORY, FORK, UNKNOWN})

# Reason codes of jobs the fork policy keeps from a runner (ledger, log line, /status).
FORK_CODE: Final = "fork_pull_request"
UNKNOWN_CODE: Final = "head_repository_unknown"
LOOKUP_FAILED_CODE: Final = "run_lookup_failed"

GITHUB_API_VERSION: Final = "2022-11-28"
USER_AGENT: Final = "nomad-github-runners-fork-check"
# The webhook path looks a run up at most once per delivery and within this time, so that a
# dispatch attempt still fits before GitHub stops waiting (10 s).
LOOKUP_TIMEOUT_SECONDS: Final = 3.0
_MAX_REASON: Final = 160


class RunLookupError(Exception):
    """GitHub did not answer with the run; ``reason`` says why (status and message, no secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class GitHubRead:
    """Where and with what the Worker reads runs: ``GITHUB_API_URL`` and ``GITHUB_READ_TOKEN``."""

    api_url: str
    token: str = field(repr=False)


def github_read_from_bindings(lookup: Callable[[str], object]) -> GitHubRead | None:
    """The read credential from the bindings, or None when either is absent or malformed.

    Optional for webhooks: without it a repository that refuses fork runs dispatches nothing
    (its runs cannot be verified) while every other delivery works as before.
    """
    api_url = lookup(contract.GITHUB_API_URL_BINDING)
    token = lookup(contract.GITHUB_READ_TOKEN_BINDING)
    if not isinstance(api_url, str) or not isinstance(token, str):
        return None
    api_url, token = api_url.strip().rstrip("/"), token.strip()
    if not token or not api_url.startswith(("https://", "http://")):
        return None
    return GitHubRead(api_url=api_url, token=token)


def run_request(github: GitHubRead, repository: str, run_id: int) -> HttpRequest:
    """``GET /repos/{owner}/{repo}/actions/runs/{run_id}`` with the read token."""
    owner, name = repository.split("/", 1)
    url = (
        f"{github.api_url}/repos/{quote(owner, safe='')}/{quote(name, safe='')}"
        f"/actions/runs/{run_id}"
    )
    headers = (
        ("Accept", "application/vnd.github+json"),
        ("Authorization", f"Bearer {github.token}"),
        ("X-GitHub-Api-Version", GITHUB_API_VERSION),
        ("User-Agent", USER_AGENT),
    )
    return HttpRequest("GET", url, headers, b"")


def _full_name(value: Any) -> str | None:
    name = value.get("full_name") if isinstance(value, dict) else None
    return name if isinstance(name, str) and contract.REPOSITORY_PATTERN.match(name) else None


def origin_of_run(run: Any, repository: str) -> str:
    """The verdict on one workflow run object of ``repository`` (see the module docstring)."""
    if not isinstance(run, dict):
        return UNKNOWN
    base, head = _full_name(run.get("repository")), _full_name(run.get("head_repository"))
    if base is None or head is None or base.lower() != repository.lower():
        return UNKNOWN
    return SAME_REPOSITORY if head.lower() == base.lower() else FORK


def interpret_run(status: int, body: bytes, repository: str) -> str:
    """The verdict of one ``GET .../actions/runs/{id}`` answer; RunLookupError unless 200."""
    if status != 200:
        raise RunLookupError(f"GitHub answered {status}: {github_message(body, _MAX_REASON)}")
    try:
        document: Any = json.loads(body)
    except ValueError:
        raise RunLookupError("GitHub answered 200 with a body that is not JSON") from None
    return origin_of_run(document, repository)


def code_for(origin: str) -> str | None:
    """The reason code that keeps a job of a run with this verdict from a runner, if any."""
    if origin == SAME_REPOSITORY:
        return None
    return FORK_CODE if origin == FORK else UNKNOWN_CODE


def reason_for(code: str) -> str:
    if code == FORK_CODE:
        return (
            "the run's head repository is not this repository (a pull request from a fork) "
            "and the repository's fork_pull_requests policy is 'refuse'"
        )
    if code == UNKNOWN_CODE:
        return (
            "the run names no head repository to compare (a deleted fork?): not verifiable, "
            "so treated as a fork"
        )
    return "the run could not be looked up"


class RunOriginCache:
    """Verdicts per (repository, run id) for the life of an isolate, the oldest dropped first.

    A run's head repository is fixed when the run is created, so a verdict never goes stale;
    the bound only caps memory. Sibling jobs of one run (queued together, so often served by
    the same isolate) and the reconciler's later passes then cost no second request.
    """

    def __init__(self, max_entries: int = 4096) -> None:
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, int], str] = OrderedDict()

    def get(self, repository: str, run_id: int) -> str | None:
        key = (repository.lower(), run_id)
        origin = self._entries.get(key)
        if origin is not None:
            self._entries.move_to_end(key)
        return origin

    def keep(self, repository: str, run_id: int, origin: str) -> None:
        if origin not in ORIGINS:
            raise ValueError(f"not a run origin: {origin!r}")
        key = (repository.lower(), run_id)
        self._entries[key] = origin
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def origins_from_runs(runs: Any, repository: str) -> Mapping[int, str]:
    """Verdicts for every run of a runs list answer (``workflow_runs``), keyed by run id."""
    if not isinstance(runs, list):
        return {}
    return {
        run["id"]: origin_of_run(run, repository)
        for run in runs
        if isinstance(run, dict) and type(run.get("id")) is int and run["id"] > 0
    }
