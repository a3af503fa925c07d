"""Parse and validate the GitHub deliveries the Worker acts on into frozen dataclasses.

``parse_event(event_name, body)`` turns the raw body of a ``ping`` or ``workflow_job`` delivery
into a :class:`Ping` or :class:`WorkflowJobEvent`; any other event name gives an
:class:`OtherEvent` (acknowledged, never acted on).

Liberal in what a delivery may lack: only what a decision cannot do without rejects it with a
:class:`PayloadError` naming the field: ``action``, ``repository.full_name``,
``workflow_job.id``, ``workflow_job.run_id`` and ``workflow_job.labels``. Every other field read
(:data:`OPTIONAL_FIELDS`) is taken when present and well-formed, and otherwise left unset and
named in ``WorkflowJob.missing``, so the ledger and the log line can say what a sender left out:
GitHub Enterprise Server 3.3-3.5 documents ``workflow_job`` payloads without ``run_attempt`` or
``created_at``, and octokit/webhooks' schema gained ``created_at`` only in 2023. Everything else
in the payload is ignored. Standard library only, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

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
# Read when present and well-formed, recorded in WorkflowJob.missing otherwise (in this order).
OPTIONAL_FIELDS: Final[tuple[str, ...]] = (
    "run_attempt",
    "name",
    "status",
    "conclusion",
    "runner_id",
    "runner_name",
    "created_at",
    "started_at",
)


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
    """The part of ``workflow_job`` a dispatch decision and the ledger need.

    ``id``, ``run_id`` and ``labels`` are always there. The other fields are None when the
    delivery lacks them or carries something malformed, and then their names are in
    ``missing``; ``conclusion``, ``runner_id`` and ``runner_name`` are also None when GitHub
    sends null (no conclusion or no runner yet), which is a value, not a gap.
    """

    id: int
    run_id: int
    run_attempt: int | None
    name: str | None
    labels: tuple[str, ...]
    status: str | None
    conclusion: str | None
    runner_id: int | None
    runner_name: str | None
    created_at: datetime | None  # timezone-aware, UTC
    started_at: datetime | None = None  # for a queued job, when it was queued
    missing: tuple[str, ...] = ()  # names from OPTIONAL_FIELDS, in that order

    @property
    def queued_at(self) -> datetime | None:
        """When the job was queued: ``created_at``, else ``started_at`` (which GitHub sets to
        the same moment on a queued job), else None (not known)."""
        return self.created_at or self.started_at


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


_T = TypeVar("_T")


class _Optional:
    """Reads the optional fields of one ``workflow_job`` object, noting each one it cannot use."""

    _ABSENT: Final = object()

    def __init__(self, raw_job: dict[str, Any]) -> None:
        self._job = raw_job
        self.missing: set[str] = set()

    def _read(self, key: str, convert: Callable[[Any], _T], *, nullable: bool) -> _T | None:
        value = self._job.get(key, self._ABSENT)
        if value is None and nullable:
            return None
        try:
            if value is self._ABSENT or value is None:
                raise PayloadError(key)
            return convert(value)
        except PayloadError:
            self.missing.add(key)
            return None

    def positive_int(self, key: str) -> int | None:
        return self._read(key, _positive_int, nullable=False)

    def runner_id(self) -> int | None:
        return self._read("runner_id", _runner_id, nullable=True)

    def text(self, key: str, *, nullable: bool) -> str | None:
        return self._read(key, _short_text, nullable=nullable)

    def timestamp(self, key: str) -> datetime | None:
        return self._read(key, _moment, nullable=False)

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in OPTIONAL_FIELDS if name in self.missing)


def _positive_int(value: Any) -> int:
    if not _is_id(value):
        raise PayloadError("not a positive integer")
    return int(value)


def _runner_id(value: Any) -> int | None:
    # GitHub reports "no runner" as null or 0, depending on the moment.
    if type(value) is int and value == 0:
        return None
    return _positive_int(value)


def _short_text(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise PayloadError("not a short non-empty string")
    return value


def _moment(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(_short_text(value))
    except ValueError:
        raise PayloadError("not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise PayloadError("timestamp without a time zone")
    return moment.astimezone(UTC)


def _parse_workflow_job(document: dict[str, Any]) -> WorkflowJobEvent:
    action = _text(document, "action", "action")
    assert action is not None
    repository = _object(document, "repository", "repository")
    full_name = _text(repository, "full_name", "repository.full_name")
    assert full_name is not None
    if not REPOSITORY_PATTERN.match(full_name):
        raise PayloadError("repository.full_name: not an owner/repo name")
    raw_job = _object(document, "workflow_job", "workflow_job")
    job_id = _id(raw_job, "id", "workflow_job.id")
    run_id = _id(raw_job, "run_id", "workflow_job.run_id")
    labels = _labels(raw_job, "workflow_job.labels")
    optional = _Optional(raw_job)
    job = WorkflowJob(
        id=job_id,
        run_id=run_id,
        run_attempt=optional.positive_int("run_attempt"),
        name=optional.text("name", nullable=False),
        labels=labels,
        status=optional.text("status", nullable=False),
        conclusion=optional.text("conclusion", nullable=True),
        runner_id=optional.runner_id(),
        runner_name=optional.text("runner_name", nullable=True),
        created_at=optional.timestamp("created_at"),
        started_at=optional.timestamp("started_at"),
        missing=optional.names(),
    )
    return WorkflowJobEvent(action=action, repository=full_name, job=job)
