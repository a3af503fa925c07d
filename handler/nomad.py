"""The Nomad side of a dispatch, as plain data: the request to send and what the answer means.

``dispatch_request(...)`` builds ``POST {nomad}/v1/job/{job}/dispatch?namespace=..&
idempotency_token=..`` with the Nomad ACL token and the Cloudflare Access service-token headers.
``interpret_dispatch_response(status, body)`` reads Nomad's answer: 200 is a new child, or an
idempotent replay of an earlier one when ``EvalID`` is empty; 403 is a refused credential (Nomad's
ACL or Cloudflare Access); Nomad reports dispatch errors as 500 with a plain-text reason.
No I/O here: an adapter sends the request. Standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlencode

from handler.contract import META_JOB_ID, META_REPOSITORY

# Nomad truncates nothing, but a reason echoed into our logs and answers should stay short.
_MAX_REASON: Final = 300


@dataclass(frozen=True)
class HttpRequest:
    """An outbound HTTP request. Headers carry credentials, so they stay out of ``repr``."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes


@dataclass(frozen=True)
class NomadCredentials:
    """What the Worker presents to reach Nomad: Access service token, then Nomad ACL token."""

    nomad_token: str = field(repr=False)
    access_client_id: str = field(repr=False)
    access_client_secret: str = field(repr=False)


@dataclass(frozen=True)
class DispatchAccepted:
    child_id: str
    replay: bool  # True: Nomad returned an existing child for this token and started nothing
    eval_id: str


class NomadError(Exception):
    """Nomad did not dispatch; ``status`` is its HTTP status and ``reason`` its (short) text."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"Nomad answered {status}: {reason}")
        self.status = status
        self.reason = reason

    @property
    def retryable(self) -> bool:
        return self.status >= 500


class NomadPermissionDenied(NomadError):
    """403: the ACL token or the Access service token was refused."""


class NomadDispatchRejected(NomadError):
    """500 with a plain-text reason: unknown job, bad meta, payload rules, stopped parent..."""


class NomadBadResponse(NomadError):
    """An answer Nomad's API never gives (e.g. a 200 without a child id, or an HTML error page)."""


def dispatch_request(
    *,
    nomad_addr: str,
    namespace: str,
    nomad_job: str,
    meta: Mapping[str, str],
    idempotency_token: str,
    credentials: NomadCredentials,
    id_prefix: str | None = None,
) -> HttpRequest:
    """The dispatch call for one runner. ``id_prefix`` (Nomad >= 1.6) tags the child's id."""
    base = nomad_addr.rstrip("/")
    query = urlencode({"namespace": namespace, "idempotency_token": idempotency_token})
    url = f"{base}/v1/job/{quote(nomad_job, safe='')}/dispatch?{query}"
    document: dict[str, object] = {"Meta": dict(meta)}
    if id_prefix:
        document["IdPrefixTemplate"] = id_prefix
    headers = (("Content-Type", "application/json"), *_auth_headers(credentials))
    body = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    return HttpRequest(method="POST", url=url, headers=headers, body=body)


def _auth_headers(credentials: NomadCredentials) -> tuple[tuple[str, str], ...]:
    return (
        ("X-Nomad-Token", credentials.nomad_token),
        ("CF-Access-Client-Id", credentials.access_client_id),
        ("CF-Access-Client-Secret", credentials.access_client_secret),
    )


def _read_request(
    nomad_addr: str, job_id: str, suffix: str, namespace: str, credentials: NomadCredentials
) -> HttpRequest:
    query = urlencode({"namespace": namespace})
    url = f"{nomad_addr.rstrip('/')}/v1/job/{quote(job_id, safe='')}{suffix}?{query}"
    return HttpRequest(method="GET", url=url, headers=_auth_headers(credentials), body=b"")


def _short(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    text = " ".join(text.split())
    return text[:_MAX_REASON] if text else "(empty body)"


def _error(status: int, body: bytes) -> NomadError:
    """The error an answer other than the expected 200 stands for."""
    if status == 403:
        return NomadPermissionDenied(status, _short(body))
    if status == 500:
        return NomadDispatchRejected(status, _short(body))
    return NomadBadResponse(status, _short(body))


def interpret_dispatch_response(status: int, body: bytes) -> DispatchAccepted:
    """What a dispatch answer means; raises a :class:`NomadError` subclass unless dispatched."""
    if status == 200:
        try:
            document = json.loads(body)
        except ValueError:
            raise NomadBadResponse(status, "200 without a JSON body") from None
        if not isinstance(document, dict):
            raise NomadBadResponse(status, "200 without a JSON object")
        child = document.get("DispatchedJobID")
        eval_id = document.get("EvalID", "")
        if not isinstance(child, str) or not child or not isinstance(eval_id, str):
            raise NomadBadResponse(status, "200 without DispatchedJobID")
        return DispatchAccepted(child_id=child, replay=eval_id == "", eval_id=eval_id)
    raise _error(status, body)


def summary_request(
    *, nomad_addr: str, namespace: str, nomad_job: str, credentials: NomadCredentials
) -> HttpRequest:
    """``GET {nomad}/v1/job/{job}/summary?namespace=..``: the pool's children by state."""
    return _read_request(nomad_addr, nomad_job, "/summary", namespace, credentials)


def interpret_summary_response(status: int, body: bytes) -> int:
    """Children of a parameterized job that hold or wait for a slot: Pending + Running.

    Dead children are done and free their slot. Raises a :class:`NomadError` subclass for any
    answer but a 200 with a ``Children`` object (404 unknown job, 403 refused, 500 Nomad error).
    """
    if status == 200:
        try:
            document = json.loads(body)
        except ValueError:
            raise NomadBadResponse(status, "summary: 200 without a JSON body") from None
        children = document.get("Children") if isinstance(document, dict) else None
        if not isinstance(children, dict):
            raise NomadBadResponse(status, "summary: no Children counts (not a parameterized job?)")
        counts = [children.get("Pending", 0), children.get("Running", 0)]
        if not all(type(count) is int and count >= 0 for count in counts):
            raise NomadBadResponse(status, "summary: Children counts are not integers")
        return int(counts[0]) + int(counts[1])
    raise _error(status, body)


def job_request(
    *, nomad_addr: str, namespace: str, job_id: str, credentials: NomadCredentials
) -> HttpRequest:
    """``GET {nomad}/v1/job/{id}?namespace=..``: one job (e.g. a dispatched child) and its state."""
    return _read_request(nomad_addr, job_id, "", namespace, credentials)


def interpret_job_status(status: int, body: bytes) -> str | None:
    """A job's ``Status`` (pending, running or dead); None when Nomad no longer has it (404).

    Raises a :class:`NomadError` subclass for any other answer (403 refused, 500 Nomad error).
    """
    if status == 200:
        try:
            document = json.loads(body)
        except ValueError:
            raise NomadBadResponse(status, "job: 200 without a JSON body") from None
        job_status = document.get("Status") if isinstance(document, dict) else None
        if not isinstance(job_status, str) or not job_status:
            raise NomadBadResponse(status, "job: no Status")
        return job_status
    if status == 404:
        return None
    raise _error(status, body)


def _statuses_request(
    nomad_addr: str, namespace: str, expression: str, per_page: int, credentials: NomadCredentials
) -> HttpRequest:
    """``GET {nomad}/v1/jobs/statuses`` with children included and ``expression`` as filter."""
    query = urlencode(
        {
            "namespace": namespace,
            "include_children": "true",
            "per_page": str(per_page),
            "filter": expression,
        }
    )
    url = f"{nomad_addr.rstrip('/')}/v1/jobs/statuses?{query}"
    return HttpRequest(method="GET", url=url, headers=_auth_headers(credentials), body=b"")


def _statuses_array(status: int, body: bytes) -> list[object]:
    """The entries of a ``/v1/jobs/statuses`` answer; a :class:`NomadError` subclass for any
    answer but a 200 with a JSON array."""
    if status != 200:
        raise _error(status, body)
    try:
        document = json.loads(body)
    except ValueError:
        raise NomadBadResponse(status, "job statuses: 200 without a JSON body") from None
    if not isinstance(document, list):
        raise NomadBadResponse(status, "job statuses: expected a JSON array")
    return document


def repository_children_request(
    *,
    nomad_addr: str,
    namespace: str,
    repository: str,
    limit: int,
    credentials: NomadCredentials,
) -> HttpRequest:
    """``GET {nomad}/v1/jobs/statuses``: up to ``limit`` live children of one repository.

    The jobs list (``/v1/jobs``) needs ``list-jobs``, which the dispatch token does not have.
    ``/v1/jobs/statuses`` (Nomad >= 1.8) needs only ``read-job``, lists
    dispatched children with ``include_children=true``, and evaluates ``filter`` against the
    whole job, Meta included, before paging; ``per_page`` stops it at the cap. The repository
    is compared case-insensitively (a webhook sends GitHub's spelling, the reconciler the
    routing's lower case); its name has no character special to the expression language but
    '.', which the pattern writes as ``[.]``.
    """
    pattern = "(?i)^" + repository.replace(".", "[.]") + "$"
    expression = (
        f'ParentID != "" and Status != "dead" and Meta.{META_REPOSITORY} matches "{pattern}"'
    )
    return _statuses_request(nomad_addr, namespace, expression, limit, credentials)


def interpret_children_response(status: int, body: bytes) -> int:
    """How many jobs a ``/v1/jobs/statuses`` answer lists (at most the ``per_page`` sent).

    Raises a :class:`NomadError` subclass for any answer but a 200 with a JSON array.
    """
    return len(_statuses_array(status, body))


# One GitHub job has a child per dispatch that started a runner for it: the first, then a successor
# for each dead one the reconciler or a freed slot replaced (reconcile.MAX_REDISPATCHES at most
# per run); more than this many is a chain no record needs in full.
JOB_CHILDREN_PER_PAGE: Final = 20


@dataclass(frozen=True)
class JobChild:
    """A child dispatched for one GitHub job, as its id tells: ``{parent}/dispatch-gh{job}-{unix
    seconds}-{8 hex}`` (Nomad's ``structs.DispatchedID`` with our ``IdPrefixTemplate``)."""

    child_id: str
    dispatched_at: float  # the unix second Nomad put in the id: when it was dispatched
    status: str  # pending, running or dead


def job_children_request(
    *,
    nomad_addr: str,
    namespace: str,
    parent: str,
    job_id: int,
    credentials: NomadCredentials,
) -> HttpRequest:
    """``GET {nomad}/v1/jobs/statuses``: the children ``parent`` has dispatched for one GitHub job.

    Nomad is the record of a dispatch: the Worker writes no KV when a ``queued`` delivery
    dispatches, and learns the child from here at the job's next delivery. ``read-job`` is
    enough (see :func:`repository_children_request`); dead children are listed too, until Nomad
    collects them.
    """
    expression = f'ParentID == "{parent}" and Meta.{META_JOB_ID} == "{job_id}"'
    return _statuses_request(nomad_addr, namespace, expression, JOB_CHILDREN_PER_PAGE, credentials)


def parse_child_id(parent: str, child_id: str) -> tuple[int, float] | None:
    """(GitHub job id, dispatch unix second) from a child id of ours, or None for any other id."""
    head = f"{parent}/dispatch-gh"
    if not child_id.startswith(head):
        return None
    parts = child_id[len(head) :].split("-")
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    if not (parts[1].isascii() and parts[1].isdigit()):
        return None
    return int(parts[0]), float(parts[1])


def interpret_job_children(status: int, body: bytes, parent: str, job_id: int) -> list[JobChild]:
    """The job's children from a ``/v1/jobs/statuses`` answer, oldest dispatch first.

    Entries that are not children of ``parent`` for ``job_id`` (by their id) are left out.
    Raises a :class:`NomadError` subclass for any answer but a 200 with a JSON array.
    """
    children = []
    for entry in _statuses_array(status, body):
        if not isinstance(entry, dict):
            continue
        child_id, child_status = entry.get("ID"), entry.get("Status")
        if not isinstance(child_id, str) or not isinstance(child_status, str):
            continue
        parsed = parse_child_id(parent, child_id)
        if parsed is None or parsed[0] != job_id:
            continue
        children.append(JobChild(child_id, parsed[1], child_status))
    # Nomad lists the most recently changed job first (ModifyIndex, descending). A successor is
    # only dispatched after its predecessor died, and a dead child changes no more, so the
    # successor is always listed first: reversed, two children of one second sort by dispatch
    # too (the sort is stable).
    children.reverse()
    children.sort(key=lambda child: child.dispatched_at)
    return children


def live_children_request(
    *, nomad_addr: str, namespace: str, parent: str, limit: int, credentials: NomadCredentials
) -> HttpRequest:
    """``GET {nomad}/v1/jobs/statuses``: up to ``limit`` pending or running children of
    ``parent`` (``read-job``, as :func:`repository_children_request`)."""
    expression = f'ParentID == "{parent}" and Status != "dead"'
    return _statuses_request(nomad_addr, namespace, expression, limit, credentials)


def interpret_live_children(status: int, body: bytes, parent: str) -> list[int]:
    """The GitHub job ids the listed children of ``parent`` were dispatched for (by their ids;
    a child whose id is not one of ours is left out). Raises a :class:`NomadError` subclass for
    any answer but a 200 with a JSON array."""
    jobs = []
    for entry in _statuses_array(status, body):
        child_id = entry.get("ID") if isinstance(entry, dict) else None
        parsed = parse_child_id(parent, child_id) if isinstance(child_id, str) else None
        if parsed is not None:
            jobs.append(parsed[0])
    return jobs


# A runner's name ends with its allocation's id, dashes removed (runner_job/scripts/github_api.py,
# runner_name): 32 lower-case hex digits after the last "-".
_ALLOCATION_HEX: Final = frozenset("0123456789abcdef")


def allocation_of_runner(runner_name: str | None) -> str | None:
    """The allocation id (``8-4-4-4-12``) a runner of ours is named after, or None when the
    name is not one of ours (another runner, GitHub's own, or no name)."""
    if not runner_name or not runner_name.startswith("nomad-"):
        return None
    compact = runner_name.rsplit("-", 1)[-1]
    if len(compact) != 32 or not set(compact) <= _ALLOCATION_HEX:
        return None
    return f"{compact[:8]}-{compact[8:12]}-{compact[12:16]}-{compact[16:20]}-{compact[20:]}"


def allocation_request(
    *, nomad_addr: str, namespace: str, allocation_id: str, credentials: NomadCredentials
) -> HttpRequest:
    """``GET {nomad}/v1/allocation/{id}?namespace=..``: one allocation (``read-job`` suffices:
    Alloc.GetAlloc checks that namespace capability)."""
    query = urlencode({"namespace": namespace})
    url = f"{nomad_addr.rstrip('/')}/v1/allocation/{quote(allocation_id, safe='')}?{query}"
    return HttpRequest(method="GET", url=url, headers=_auth_headers(credentials), body=b"")


def interpret_allocation(status: int, body: bytes) -> tuple[str, str] | None:
    """(``JobID``, ``ClientStatus``) of an allocation; None when Nomad no longer has it (404).

    ``ClientStatus`` stays ``running`` while any task runs, a poststop task (the runner's
    deregister) included, and becomes ``complete`` (or ``failed``, ``lost``) after.
    """
    if status == 404:
        return None
    if status != 200:
        raise _error(status, body)
    try:
        document = json.loads(body)
    except ValueError:
        raise NomadBadResponse(status, "allocation: 200 without a JSON body") from None
    job_id = document.get("JobID") if isinstance(document, dict) else None
    client = document.get("ClientStatus") if isinstance(document, dict) else None
    if not isinstance(job_id, str) or not isinstance(client, str):
        raise NomadBadResponse(status, "allocation: no JobID or ClientStatus")
    return job_id, client
