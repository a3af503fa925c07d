"""Parse and validate the GitHub deliveries the Worker acts on into frozen dataclasses.

``parse_event(event_name, body)`` turns the raw body of a ``ping`` or ``workflow_job`` delivery
into a :class:`Ping` or :class:`WorkflowJobEvent`; any other event name gives an
:class:`OtherEvent` (acknowledged, never acted on). A body that is not what GitHub documents
raises :class:`PayloadError` whose message names the offending field. Only fields the decision
needs are read; everything else in the payload is ignored. Standard library only, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from handler.contract import REPOSITORY_PATTERN

EVENT_HEADER: Final = "x-github-event"
DELIVERY_HEADER: Final = "x-github-delivery"
HOOK_ID_HEADER: Final = "x-github-hook-id"

WORKFLOW_JOB: Final = "workflow_job"
PING: Final = "ping"
KNOWN_ACTIONS: Final = frozenset({"queued", "waiting", "in_progress", "completed"})

# GitHub ids are positive 64-bit integers; anything outside is not from GitHub.
_MAX_ID: Final = 2**63 - 1
# runs-on takes at most a few dozen labels in practice; 100 is GitHub's own cap for runners.
MAX_LABELS: Final = 100
MAX_LABEL_LENGTH: Final = 256
_MAX_TEXT: Final = 1024


class PayloadError(ValueError):
    """The body is not a valid delivery; the message names the field and the problem."""


@dataclass(frozen=True)
class Ping:
    """GitHub's hello when a hook is created: answered OK, nothing else."""

    hook_id: int | None
    zen: str


@dataclass(frozen=True)
class OtherEvent:
    """An event this Worker does not act on (the hook should not send it; we acknowledge it)."""

    name: str


@dataclass(frozen=True)
class WorkflowJob:
    """The part of ``workflow_job`` a dispatch decision and the ledger need."""

    id: int
    run_id: int
    run_attempt: int
    name: str
    labels: tuple[str, ...]
    status: str
    conclusion: str | None
    runner_id: int | None
    runner_name: str | None
    created_at: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class WorkflowJobEvent:
    action: str
    repository: str  # repository.full_name as GitHub spells it
    job: WorkflowJob


Event = Ping | OtherEvent | WorkflowJobEvent


def parse_event(event_name: str, body: bytes) -> Event:
    """Parse one delivery's raw body according to its ``X-GitHub-Event`` name."""
    if event_name == WORKFLOW_JOB:
        return _parse_workflow_job(_load_object(body))
    if event_name == PING:
        document = _load_object(body)
        hook_id = _optional_id(document, "hook_id", "hook_id")
        zen = document.get("zen", "")
        return Ping(hook_id=hook_id, zen=zen if isinstance(zen, str) else "")
    return OtherEvent(name=event_name)


def _reject_constant(name: str) -> Any:
    raise PayloadError(f"body: {name} is not JSON")


def _load_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadError("body: not UTF-8") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError("body: JSON nested too deeply") from None
    except ValueError as error:
        raise PayloadError(f"body: not JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise PayloadError("body: expected a JSON object")
    return document


def _object(parent: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value: Any = parent.get(key)
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected an object")
    return value


def _is_id(value: Any) -> bool:
    return type(value) is int and 0 < value <= _MAX_ID


def _id(parent: dict[str, Any], key: str, where: str) -> int:
    value: Any = parent.get(key)
    if not _is_id(value):
        raise PayloadError(f"{where}: expected a positive integer id")
    return int(value)


def _optional_id(parent: dict[str, Any], key: str, where: str) -> int | None:
    value: Any = parent.get(key)
    # GitHub reports "no runner" as null or 0, depending on the moment.
    if value is None or (type(value) is int and value == 0):
        return None
    if not _is_id(value):
        raise PayloadError(f"{where}: expected a positive integer id or null")
    return int(value)


def _text(parent: dict[str, Any], key: str, where: str, *, optional: bool = False) -> str | None:
    value: Any = parent.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not optional):
        raise PayloadError(f"{where}: expected a non-empty string")
    if len(value) > _MAX_TEXT:
        raise PayloadError(f"{where}: longer than {_MAX_TEXT} characters")
    return value


def _timestamp(parent: dict[str, Any], key: str, where: str) -> datetime:
    raw = _text(parent, key, where)
    assert raw is not None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise PayloadError(f"{where}: expected an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise PayloadError(f"{where}: timestamp has no time zone")
    return moment.astimezone(UTC)


def _labels(parent: dict[str, Any], where: str) -> tuple[str, ...]:
    value = parent.get("labels")
    if not isinstance(value, list):
        raise PayloadError(f"{where}: expected a list of strings")
    if len(value) > MAX_LABELS:
        raise PayloadError(f"{where}: more than {MAX_LABELS} labels")
    for index, label in enumerate(value):
        if not isinstance(label, str) or not label or len(label) > MAX_LABEL_LENGTH:
            raise PayloadError(
                f"{where}[{index}]: expected a non-empty string of at most "
                f"{MAX_LABEL_LENGTH} characters"
            )
    return tuple(value)


def _parse_workflow_job(document: dict[str, Any]) -> WorkflowJobEvent:
    action = _text(document, "action", "action")
    assert action is not None
    repository = _object(document, "repository", "repository")
    full_name = _text(repository, "full_name", "repository.full_name")
    assert full_name is not None
    if not REPOSITORY_PATTERN.match(full_name):
        raise PayloadError("repository.full_name: not an owner/repo name")
    raw_job = _object(document, "workflow_job", "workflow_job")
    run_attempt = raw_job.get("run_attempt", 1)
    if not _is_id(run_attempt):
        raise PayloadError("workflow_job.run_attempt: expected a positive integer")
    status = _text(raw_job, "status", "workflow_job.status")
    assert status is not None
    job = WorkflowJob(
        id=_id(raw_job, "id", "workflow_job.id"),
        run_id=_id(raw_job, "run_id", "workflow_job.run_id"),
        run_attempt=run_attempt,
        name=_text(raw_job, "name", "workflow_job.name", optional=True) or "",
        labels=_labels(raw_job, "workflow_job.labels"),
        status=status,
        conclusion=_text(raw_job, "conclusion", "workflow_job.conclusion", optional=True),
        runner_id=_optional_id(raw_job, "runner_id", "workflow_job.runner_id"),
        runner_name=_text(raw_job, "runner_name", "workflow_job.runner_name", optional=True),
        created_at=_timestamp(raw_job, "created_at", "workflow_job.created_at"),
    )
    return WorkflowJobEvent(action=action, repository=full_name, job=job)
