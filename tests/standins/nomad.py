"""A small, faithful stand-in for the Nomad HTTP API behind Cloudflare Access, for tests.

It serves on 127.0.0.1 (ephemeral port) in a background thread and follows the contract the
Worker relies on (see ``shared/reference/FACTS.md``):

* an Access gate in front: without the right ``CF-Access-Client-Id``/``-Secret`` headers the
  request never reaches Nomad and gets 403, as Cloudflare Access answers a service-token app;
* ACL: a wrong or missing ``X-Nomad-Token`` (or ``Authorization: Bearer``) gives 403
  ``Permission denied``, and so does a request the token's namespace capabilities do not cover
  (when the test gives the token a capability list; by default it holds all of them), with the
  capability Nomad checks for each endpoint (nomad/job_endpoint.go): ``list-jobs`` for
  ``GET /v1/jobs``, ``read-job`` for ``GET /v1/job/{id}``, ``.../summary`` and
  ``GET /v1/jobs/statuses`` (nomad/job_endpoint_statuses.go), ``dispatch-job`` for
  ``.../dispatch``, ``submit-job`` for ``DELETE /v1/job/{id}``;
* ``POST /v1/job/{id}/dispatch``: parameterized parents registered by the test; children named
  ``{parent}/dispatch-[{prefix}-]{unix}-{8 hex}``; every dispatch error is a 500 with a plain-text
  reason (unknown job, not parameterized, stopped parent, payload forbidden/required/over 16384
  decoded bytes, unpermitted or missing meta keys); the idempotency token (query
  ``idempotency_token`` or body ``IdempotencyToken``) returns the existing child with
  ``EvalID: ""`` and ``EvalCreateIndex: 0`` for as long as that child is in state (not purged);
* ``GET /v1/allocation/{id}`` (read-job, as Alloc.GetAlloc checks): each dispatched child has one
  allocation, whose ``ClientStatus`` follows the child (``complete`` once it is dead); 404
  ``alloc not found`` when unknown;
* ``GET /v1/jobs?prefix=``, ``GET /v1/job/{id}`` (404 when unknown), ``GET /v1/job/{id}/summary``
  (``Children`` counts), ``DELETE /v1/job/{id}[?purge=true]`` (unknown id: 200, empty fields);
* ``GET /v1/jobs/statuses?include_children=true&filter=..&per_page=N`` (Nomad >= 1.8, read-job
  only): jobs of the namespace, children included only when asked, newest change first, the
  ``filter`` evaluated against the whole job (Meta included) before ``per_page`` cuts the list.
  Of Nomad's filter language (go-bexpr) it knows what the Worker sends: clauses joined by
  ``and``, each ``Selector == "v"``, ``!= "v"`` or ``matches "regexp"`` over ``ID``,
  ``ParentID``, ``Status`` and ``Meta.{key}`` (a missing Meta key matches nothing, as bexpr's
  not-present rule says); anything else is the 500 Nomad gives for a bad expression.
* for doctor, read-only endpoints with Nomad's ACL rules (read from its source, 2.0.x):
  ``GET /v1/job/{id}/allocations`` (``read-job``); ``GET /v1/status/leader`` (no ACL at all);
  ``GET /v1/agent/members`` and ``GET /v1/nodes`` (``node:read``); ``GET /v1/vars?prefix=``
  (metadata only, silently filtered to the paths the token may ``list``); ``GET /v1/var/{path}``
  (403 ``Permission denied`` unless the token may ``read`` the path, checked before the lookup;
  then 404 ``variable not found``); ``GET /v1/acl/token/self``; ``GET /v1/acl/policies`` and
  ``GET /v1/acl/policy/{name}`` (a client token sees only its own policies; ``RulesJSON`` has
  the capabilities). ``token`` is a management token unless ``capabilities`` limits it;
  ``add_acl_token`` adds client tokens whose policies (``AclPolicy``) are enforced on every
  endpoint above and on dispatch/read/list/stop.

Two listeners share one state: ``url`` is the Nomad API hostname (Access in front), and
``origin_url`` is the address behind it (what cloudflared forwards to, and where Terraform and
doctor's management reads go), which has no Access gate.

Every request is recorded; fault switches (down, slow, 500, 403), persistent or one-shot, let
tests inject failures.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import secrets
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_PAYLOAD_BYTES = 16384
FAULTS = ("down", "slow", "500", "403", "530")
# Credentials the stand-in accepts unless a test passes others.
NOMAD_TOKEN = "nomad-token-for-tests"
ACCESS_CLIENT_ID = "access-client-id.access"
ACCESS_CLIENT_SECRET = "access-client-secret-for-tests"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes


@dataclass
class Job:
    id: str
    namespace: str
    parameterized: bool = True
    payload: str = "forbidden"  # optional | required | forbidden
    meta_required: tuple[str, ...] = ()
    meta_optional: tuple[str, ...] = ()
    stopped: bool = False
    type: str = "batch"
    task_groups: list[dict[str, Any]] = field(default_factory=list)
    parent_id: str = ""
    status: str = "running"
    meta: dict[str, str] = field(default_factory=dict)
    idempotency_token: str = ""
    create_index: int = 0
    payload_bytes: bytes = b""
    # A dispatched child's one allocation (its runner): the id a runner's name carries.
    allocation_id: str = ""


def _capability(method: str, path: str) -> str:
    """The namespace capability Nomad's job endpoints check for one request."""
    if path == "/v1/jobs":
        return "list-jobs"
    if method in ("POST", "PUT") and path.endswith("/dispatch"):
        return "dispatch-job"
    if method == "DELETE":
        return "submit-job"
    return "read-job"


@dataclass
class AclPolicy:
    """One ACL policy: namespace pattern -> capabilities (already expanded, as ``RulesJSON``
    shows them), namespace -> {variable path pattern -> capabilities}, and node read."""

    name: str
    namespaces: dict[str, tuple[str, ...]] = field(default_factory=dict)
    variables: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    node_read: bool = False

    def rules_hcl(self) -> str:
        blocks = []
        for namespace, capabilities in self.namespaces.items():
            listed = ", ".join(f'"{capability}"' for capability in capabilities)
            inner = f"  capabilities = [{listed}]\n"
            for path, caps in self.variables.get(namespace, {}).items():
                var_caps = ", ".join(f'"{capability}"' for capability in caps)
                inner += (
                    f'  variables {{\n    path "{path}" {{ capabilities = [{var_caps}] }}\n  }}\n'
                )
            blocks.append(f'namespace "{namespace}" {{\n{inner}}}\n')
        if self.node_read:
            blocks.append('node { policy = "read" }\n')
        return "".join(blocks)

    def rules_json(self) -> dict[str, Any]:
        return {
            "Namespaces": [
                {
                    "Name": namespace,
                    "Policy": "",
                    "Capabilities": list(capabilities),
                    "Variables": (
                        {
                            "Paths": [
                                {"PathSpec": path, "Capabilities": list(caps)}
                                for path, caps in self.variables[namespace].items()
                            ]
                        }
                        if namespace in self.variables
                        else None
                    ),
                }
                for namespace, capabilities in self.namespaces.items()
            ],
            "Node": {"Policy": "read"} if self.node_read else None,
            "Agent": None,
            "Operator": None,
        }


@dataclass
class AclToken:
    secret_id: str
    accessor_id: str
    name: str
    type: str  # "client" | "management"
    policies: tuple[str, ...] = ()


def _most_specific(patterns: dict[str, Any], name: str) -> Any:
    """Nomad's rule lookup: an exact name wins, else the longest matching glob."""
    if name in patterns:
        return patterns[name]
    matches = [pattern for pattern in patterns if fnmatch.fnmatchcase(name, pattern)]
    return patterns[max(matches, key=len)] if matches else None


class NomadStandIn:
    """Start with ``with NomadStandIn(...) as nomad:``; ``nomad.url`` is its base URL."""

    def __init__(
        self,
        *,
        token: str = NOMAD_TOKEN,
        access_client_id: str | None = ACCESS_CLIENT_ID,
        access_client_secret: str | None = ACCESS_CLIENT_SECRET,
        slow_seconds: float = 6.0,
        capabilities: tuple[str, ...] | None = None,
    ) -> None:
        self.token = token
        # The token's capabilities in every namespace; None: all of them (a management token).
        self.capabilities = None if capabilities is None else frozenset(capabilities)
        self.access_client_id = access_client_id
        self.access_client_secret = access_client_secret
        self.slow_seconds = slow_seconds
        self.requests: list[RecordedRequest] = []
        self.jobs: dict[tuple[str, str], Job] = {}
        self.fault: str | None = None
        self.one_shot_faults: list[str] = []
        self.acl_tokens: dict[str, AclToken] = {}
        self.acl_policies: dict[str, AclPolicy] = {}
        self.variables: dict[tuple[str, str], dict[str, str]] = {}
        self.allocations: list[dict[str, Any]] = []
        self.servers: list[tuple[str, str]] = []  # (member name, build version)
        self.server_status: dict[str, str] = {}  # member name -> serf status (default alive)
        self.nodes: list[dict[str, Any]] = []  # NodeListStub-like: Name, Version, Status, ...
        self.leader = "10.0.0.1:4647"
        self._index = 100
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._origin: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> NomadStandIn:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        stand_in = self

        class Handler(_Handler):
            nomad = stand_in

        class OriginHandler(_Handler):
            nomad = stand_in
            gated = False

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._origin = _Server(("127.0.0.1", 0), OriginHandler)
        # A short poll interval keeps shutdown (once per test) quick.
        for server in (self._server, self._origin):
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()

    def stop(self) -> None:
        for server in (self._server, self._origin):
            if server is not None:
                server.shutdown()
                server.server_close()
        self._server = self._origin = None

    @property
    def url(self) -> str:
        assert self._server is not None, "stand-in not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def origin_url(self) -> str:
        """The address behind Access and the tunnel (no Access gate)."""
        assert self._origin is not None, "stand-in not started"
        host, port = self._origin.server_address[:2]
        return f"http://{host}:{port}"

    # -- test controls ---------------------------------------------------------------------
    def register_job(
        self,
        job_id: str,
        *,
        namespace: str = "github-runners",
        meta_required: tuple[str, ...] = (),
        meta_optional: tuple[str, ...] = (),
        payload: str = "forbidden",
        parameterized: bool = True,
        job_type: str = "batch",
        task_groups: list[dict[str, Any]] | None = None,
    ) -> Job:
        job = Job(
            id=job_id,
            namespace=namespace,
            parameterized=parameterized,
            payload=payload,
            meta_required=meta_required,
            meta_optional=meta_optional,
            type=job_type,
            task_groups=list(task_groups or []),
            create_index=self._next_index(),
        )
        with self._lock:
            self.jobs[(namespace, job_id)] = job
        return job

    def add_policy(self, policy: AclPolicy) -> None:
        with self._lock:
            self.acl_policies[policy.name] = policy

    def add_acl_token(self, secret_id: str, *, policies: tuple[str, ...], name: str = "") -> None:
        """A client token holding ``policies`` (each added with ``add_policy``)."""
        with self._lock:
            self.acl_tokens[secret_id] = AclToken(
                secret_id, secrets.token_hex(16), name or "client", "client", policies
            )

    def put_variable(
        self, path: str, items: dict[str, str], namespace: str = "github-runners"
    ) -> None:
        with self._lock:
            self.variables[(namespace, path)] = dict(items)

    def add_allocation(
        self, job_id: str, client_status: str, namespace: str = "github-runners"
    ) -> None:
        with self._lock:
            self.allocations.append(
                {
                    "ID": secrets.token_hex(16),
                    "JobID": job_id,
                    "Namespace": namespace,
                    "TaskGroup": job_id,
                    "ClientStatus": client_status,
                    "DesiredStatus": "run" if client_status in ("pending", "running") else "stop",
                }
            )

    def children(self, parent_id: str, namespace: str = "github-runners") -> list[Job]:
        with self._lock:
            return [
                job
                for (ns, _), job in self.jobs.items()
                if ns == namespace and job.parent_id == parent_id
            ]

    def dispatch_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path.endswith("/dispatch")]

    def set_status(self, job_id: str, status: str, namespace: str = "github-runners") -> None:
        with self._lock:
            self.jobs[(namespace, job_id)].status = status

    @contextmanager
    def faulty(self, fault: str) -> Iterator[None]:
        assert fault in FAULTS
        self.fault = fault
        try:
            yield
        finally:
            self.fault = None

    def _next_index(self) -> int:
        with self._lock:
            self._index += 1
            return self._index

    # -- the API -----------------------------------------------------------------------------
    def answer(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        """(status, content type, body) for one request that passed the fault switches."""
        if self.access_client_id is not None and (
            request.headers.get("cf-access-client-id") != self.access_client_id
            or request.headers.get("cf-access-client-secret") != self.access_client_secret
        ):
            # Cloudflare answers for Access: the request never reaches the origin.
            return 403, "text/html", b"<html><body>Forbidden: Cloudflare Access</body></html>"
        return self.answer_origin(request)

    def answer_origin(self, request: RecordedRequest) -> tuple[int, str, bytes]:
        """What Nomad itself answers (behind Access and the tunnel)."""
        path = request.path
        if request.method == "GET" and path == "/v1/status/leader":
            if not self.leader:
                # Status.Leader forwards to the leader: without one, structs.ErrNoLeader as a 500.
                return 500, "text/plain", b"No cluster leader"
            return _json(200, self.leader)  # Status.Leader checks no ACL
        presented = request.headers.get("x-nomad-token")
        bearer = request.headers.get("authorization", "")
        if presented is None and bearer.lower().startswith("bearer "):
            presented = bearer[7:].strip()
        if presented == self.token:
            # A management token, unless the test gave it a capability list.
            kind = "management" if self.capabilities is None else "client"
            token = AclToken(presented, "primary-accessor", "primary", kind)
        elif presented in self.acl_tokens:
            token = self.acl_tokens[presented]
        else:
            return 403, "text/plain", b"Permission denied"
        namespace = request.query.get("namespace", "default")
        path = request.path
        if request.method == "GET" and path.startswith("/v1/allocation/"):
            if not self._allows(token, namespace, "read-job"):  # Alloc.GetAlloc's check
                return 403, "text/plain", b"Permission denied"
            return self._allocation(namespace, path[len("/v1/allocation/") :])
        if request.method == "GET" and not path.startswith("/v1/job"):
            return self._read_other(token, namespace, request)
        if not self._allows(token, namespace, _capability(request.method, path)):
            return 403, "text/plain", b"Permission denied"
        if request.method == "GET" and path == "/v1/jobs":
            return self._list(namespace, request.query.get("prefix", ""))
        if request.method == "GET" and path == "/v1/jobs/statuses":
            return self._statuses(namespace, request.query)
        if not path.startswith("/v1/job/"):
            return 404, "text/plain", b"Invalid URL"
        rest = path[len("/v1/job/") :]
        if request.method in ("POST", "PUT") and rest.endswith("/dispatch"):
            return self._dispatch(namespace, rest[: -len("/dispatch")], request)
        if request.method == "GET" and rest.endswith("/summary"):
            return self._summary(namespace, rest[: -len("/summary")])
        if request.method == "GET" and rest.endswith("/allocations"):
            return self._allocations(namespace, rest[: -len("/allocations")])
        if request.method == "GET":
            job = self.jobs.get((namespace, rest))
            if job is None:
                return 404, "text/plain", b"job not found"
            return _json(200, _job_document(job))
        if request.method == "DELETE":
            return self._delete(namespace, rest, request.query.get("purge") == "true")
        return 405, "text/plain", b"Invalid method"

    # -- ACL -----------------------------------------------------------------------------------
    def _policies(self, token: AclToken) -> list[AclPolicy]:
        return [self.acl_policies[name] for name in token.policies if name in self.acl_policies]

    def _allows(self, token: AclToken, namespace: str, capability: str) -> bool:
        if token.secret_id == self.token and self.capabilities is not None:
            return capability in self.capabilities  # the test's list, in every namespace
        if token.type == "management":
            return True
        for policy in self._policies(token):
            capabilities = _most_specific(policy.namespaces, namespace)
            if capabilities and capability in capabilities and "deny" not in capabilities:
                return True
        return False

    def _allows_variable(self, token: AclToken, namespace: str, path: str, op: str) -> bool:
        if token.type == "management":
            return True
        for policy in self._policies(token):
            paths = _most_specific(policy.variables, namespace) or {}
            capabilities = _most_specific(paths, path)
            if capabilities and op in capabilities and "deny" not in capabilities:
                return True
        return False

    def _read_other(
        self, token: AclToken, namespace: str, request: RecordedRequest
    ) -> tuple[int, str, bytes]:
        path = request.path
        denied = (403, "text/plain", b"Permission denied")
        node_read = token.type == "management" or any(
            policy.node_read for policy in self._policies(token)
        )
        if path == "/v1/acl/token/self":
            return _json(
                200,
                {
                    "AccessorID": token.accessor_id,
                    "SecretID": token.secret_id,
                    "Name": token.name,
                    "Type": token.type,
                    "Policies": list(token.policies),
                    "Roles": [],
                    "Global": False,
                },
            )
        if path == "/v1/acl/policies":
            names = (
                sorted(self.acl_policies)
                if token.type == "management"
                else sorted(name for name in token.policies if name in self.acl_policies)
            )
            return _json(200, [{"Name": name, "Description": ""} for name in names])
        if path.startswith("/v1/acl/policy/"):
            name = path[len("/v1/acl/policy/") :]
            if token.type != "management" and name not in token.policies:
                return denied
            policy = self.acl_policies.get(name)
            if policy is None:
                return 404, "text/plain", b"ACL policy not found"
            return _json(
                200,
                {"Name": name, "Rules": policy.rules_hcl(), "RulesJSON": policy.rules_json()},
            )
        if path == "/v1/vars":
            prefix = request.query.get("prefix", "")
            listed = [
                {
                    "Namespace": ns,
                    "Path": var_path,
                    "CreateIndex": 10,
                    "ModifyIndex": 10,
                    "CreateTime": 1_700_000_000_000_000_000,
                    "ModifyTime": 1_700_000_000_000_000_000,
                }
                for (ns, var_path) in sorted(self.variables)
                if ns == namespace
                and var_path.startswith(prefix)
                and self._allows_variable(token, ns, var_path, "list")
            ]
            return _json(200, listed)
        if path.startswith("/v1/var/"):
            var_path = path[len("/v1/var/") :]
            if not self._allows_variable(token, namespace, var_path, "read"):
                return denied
            items = self.variables.get((namespace, var_path))
            if items is None:
                return 404, "text/plain", b"variable not found"
            return _json(200, {"Namespace": namespace, "Path": var_path, "Items": items})
        if path == "/v1/agent/members":
            if not node_read:
                return denied
            members = [
                {
                    "Name": name,
                    "Status": self.server_status.get(name, "alive"),
                    "Tags": {"role": "nomad", "build": build},
                }
                for name, build in self.servers
            ]
            return _json(200, {"ServerName": "nomad-1", "Members": members})
        if path == "/v1/nodes":
            if not node_read:
                return denied
            return _json(200, self.nodes)
        return 404, "text/plain", b"Invalid URL"

    def _allocations(self, namespace: str, job_id: str) -> tuple[int, str, bytes]:
        with self._lock:
            stubs = [
                dict(stub)
                for stub in self.allocations
                if stub["Namespace"] == namespace and stub["JobID"] == job_id
            ]
        return _json(200, stubs)

    def _list(self, namespace: str, prefix: str) -> tuple[int, str, bytes]:
        with self._lock:
            stubs = [
                {
                    "ID": job.id,
                    "ParentID": job.parent_id,
                    "Namespace": job.namespace,
                    "Type": "batch",
                    "Status": job.status,
                    "ParameterizedJob": job.parameterized and not job.parent_id,
                    "CreateIndex": job.create_index,
                }
                for (ns, job_id), job in sorted(self.jobs.items())
                if ns == namespace and job_id.startswith(prefix)
            ]
        return _json(200, stubs)

    def _statuses(self, namespace: str, query: dict[str, str]) -> tuple[int, str, bytes]:
        try:
            clauses = _parse_filter(query.get("filter", ""))
        except ValueError as error:
            reason = f"failed to create result paginator: failed to read filter expression: {error}"
            return 500, "text/plain", reason.encode()
        children = query.get("include_children") == "true"
        per_page = int(query.get("per_page") or 0)
        with self._lock:
            jobs = sorted(
                (job for (ns, _), job in self.jobs.items() if ns == namespace),
                key=lambda job: job.create_index,
                reverse=True,
            )
            listed = [
                job
                for job in jobs
                if (children or not job.parent_id) and all(c(job) for c in clauses)
            ]
        if per_page:
            listed = listed[:per_page]
        return _json(
            200,
            [
                {
                    "ID": job.id,
                    "Namespace": job.namespace,
                    "Name": job.id,
                    "Type": "batch",
                    "ParentID": job.parent_id,
                    "Status": job.status,
                    "Stop": job.stopped,
                    "Allocs": [],
                    "ChildStatuses": None,
                }
                for job in listed
            ],
        )

    def _allocation(self, namespace: str, allocation_id: str) -> tuple[int, str, bytes]:
        """A child's allocation: ``ClientStatus`` follows the child (pending, running while any
        task runs, complete once it is dead); 404 ``alloc not found`` as Nomad answers."""
        with self._lock:
            found = [
                job
                for (ns, _), job in self.jobs.items()
                if ns == namespace and job.allocation_id == allocation_id
            ]
        if not found:
            return 404, "text/plain", b"alloc not found"
        (job,) = found
        client = {"pending": "pending", "running": "running"}.get(job.status, "complete")
        document = {
            "ID": job.allocation_id,
            "Namespace": job.namespace,
            "JobID": job.id,
            "TaskGroup": "runner",
            "ClientStatus": client,
            "DesiredStatus": "run" if client != "complete" else "stop",
        }
        return _json(200, document)

    def runner_name(self, child_id: str, pool: str, namespace: str = "github-runners") -> str:
        """The name the runner of ``child_id`` registers with (runner_job's runner_name rule)."""
        with self._lock:
            allocation = self.jobs[(namespace, child_id)].allocation_id
        return f"nomad-{pool}-{allocation.replace('-', '')}"

    def _summary(self, namespace: str, job_id: str) -> tuple[int, str, bytes]:
        if (namespace, job_id) not in self.jobs:
            return 404, "text/plain", b"job not found"
        counts = {"Pending": 0, "Running": 0, "Dead": 0}
        for child in self.children(job_id, namespace):
            counts[child.status.capitalize()] += 1
        return _json(
            200,
            {"JobID": job_id, "Namespace": namespace, "Summary": {}, "Children": counts},
        )

    def _delete(self, namespace: str, job_id: str, purge: bool) -> tuple[int, str, bytes]:
        with self._lock:
            job = self.jobs.get((namespace, job_id))
            if job is None:
                return _json(200, {"EvalID": "", "EvalCreateIndex": 0, "JobModifyIndex": 0})
            if purge:
                del self.jobs[(namespace, job_id)]
            else:
                job.stopped = True
                job.status = "dead"
        index = self._next_index()
        return _json(
            200,
            {"EvalID": secrets.token_hex(16), "EvalCreateIndex": index, "JobModifyIndex": index},
        )

    def _dispatch(
        self, namespace: str, job_id: str, request: RecordedRequest
    ) -> tuple[int, str, bytes]:
        parent = self.jobs.get((namespace, job_id))
        if parent is None:
            return 500, "text/plain", b"job not found"
        if not parent.parameterized or parent.parent_id:
            return 500, "text/plain", b"Specified job is not a parameterized job"
        if parent.stopped:
            return 500, "text/plain", b"Specified job has been stopped"
        try:
            document: Any = json.loads(request.body or b"{}")
        except ValueError:
            return 400, "text/plain", b"Request decode failed"
        if not isinstance(document, dict):
            return 400, "text/plain", b"Request decode failed"
        try:
            payload = base64.b64decode(document.get("Payload") or "", validate=True)
        except (binascii.Error, TypeError):
            return 400, "text/plain", b"Request decode failed"
        if payload and parent.payload == "forbidden":
            return 500, "text/plain", b"Payload is not allowed"
        if not payload and parent.payload == "required":
            return 500, "text/plain", b"Payload is required"
        if len(payload) > MAX_PAYLOAD_BYTES:
            reason = f"Payload exceeds maximum size; {len(payload)} > {MAX_PAYLOAD_BYTES}"
            return 500, "text/plain", reason.encode()
        meta = document.get("Meta") or {}
        if not isinstance(meta, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
        ):
            return 400, "text/plain", b"Request decode failed"
        permitted = set(parent.meta_required) | set(parent.meta_optional)
        unpermitted = sorted(set(meta) - permitted)
        if unpermitted:
            reason = f"Dispatch request included unpermitted metadata keys: {unpermitted}"
            return 500, "text/plain", reason.encode()
        missing = sorted(set(parent.meta_required) - set(meta))
        if missing:
            reason = f"Dispatch did not provide required meta keys: {missing}"
            return 500, "text/plain", reason.encode()
        token = request.query.get("idempotency_token") or document.get("IdempotencyToken") or ""
        with self._lock:
            if token:
                for child in self.jobs.values():
                    if child.parent_id == job_id and child.idempotency_token == token:
                        return _json(
                            200,
                            {
                                "Index": self._index,
                                "JobCreateIndex": child.create_index,
                                "EvalCreateIndex": 0,
                                "EvalID": "",
                                "DispatchedJobID": child.id,
                            },
                        )
            prefix = document.get("IdPrefixTemplate") or ""
            middle = f"{prefix}-" if prefix else ""
            child_id = f"{job_id}/dispatch-{middle}{int(time.time())}-{secrets.token_hex(4)}"
            self._index += 1
            child = Job(
                id=child_id,
                namespace=namespace,
                parameterized=False,
                parent_id=job_id,
                status="pending",
                meta=dict(meta),
                idempotency_token=token,
                create_index=self._index,
                payload_bytes=payload,
                allocation_id=str(uuid.uuid4()),
            )
            self.jobs[(namespace, child_id)] = child
            self._index += 1
            index = self._index
        return _json(
            200,
            {
                "Index": index,
                "JobCreateIndex": child.create_index,
                "EvalCreateIndex": index,
                "EvalID": secrets.token_hex(16),
                "DispatchedJobID": child_id,
            },
        )


_CLAUSE = re.compile(
    r"^\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_/]*)?)\s+"
    r'(==|!=|matches)\s+"([^"]*)"\s*$'
)


def _parse_filter(expression: str) -> list[Any]:
    """The go-bexpr subset described in the module docstring, as predicates over a Job."""
    if not expression.strip():
        return []
    clauses = []
    for text in expression.split(" and "):
        found = _CLAUSE.match(text)
        if found is None:
            raise ValueError(f"unsupported clause {text.strip()!r}")
        selector, operator, value = found.groups()
        clauses.append(_clause(selector, operator, value))
    return clauses


def _clause(selector: str, operator: str, value: str) -> Any:
    fields = {"ID": "id", "ParentID": "parent_id", "Status": "status"}
    if selector.startswith("Meta."):
        key = selector[len("Meta.") :]

        def read(job: Job) -> str | None:
            return job.meta.get(key)
    elif selector in fields:
        attribute = fields[selector]

        def read(job: Job) -> str | None:
            return str(getattr(job, attribute))
    else:
        raise ValueError(f"unknown selector {selector!r}")
    pattern = re.compile(value) if operator == "matches" else None

    def holds(job: Job) -> bool:
        actual = read(job)
        if actual is None:  # bexpr: a missing map key is equal to nothing, matches nothing
            return operator == "!="
        if pattern is not None:
            return pattern.search(actual) is not None
        return (actual == value) == (operator == "==")

    return holds


def _json(status: int, document: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(document).encode()


def _job_document(job: Job) -> dict[str, Any]:
    parameterized = (
        {
            "Payload": job.payload,
            "MetaRequired": list(job.meta_required),
            "MetaOptional": list(job.meta_optional),
        }
        if job.parameterized and not job.parent_id
        else None
    )
    return {
        "ID": job.id,
        "Namespace": job.namespace,
        "Type": job.type,
        "TaskGroups": job.task_groups or None,
        "ParentID": job.parent_id,
        "Status": job.status,
        "Stop": job.stopped,
        "Meta": job.meta or None,
        "Dispatched": bool(job.parent_id),
        "ParameterizedJob": parameterized,
        "Payload": base64.b64encode(job.payload_bytes).decode() if job.payload_bytes else None,
        "CreateIndex": job.create_index,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # clients that do not pool (urllib) connect per request: bursts

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A pooling client (workerd) drops idle keep-alive connections with a reset, and a
        # caller that gave up (the "slow" fault) leaves a broken pipe: neither is a stand-in bug.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    nomad: NomadStandIn
    gated = True  # behind Access (the Nomad API hostname); False for the origin address
    # HTTP/1.1 with keep-alive, as Nomad's own API server (Go net/http) answers. The default
    # HTTP/1.0 closed every connection after one answer, so workerd's pooled connections died
    # under it ("Network connection lost") and each Worker request paid a new connection.
    protocol_version = "HTTP/1.1"
    # Status line, headers and body leave in one write (flushed per request by the base
    # class); with TCP_NODELAY set too, an answer never waits for the client's delayed ACK
    # (~40 ms per request on a kept-alive connection with the body in its own small write).
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        return  # keep test output clean

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=self.command,
            path=unquote(parts.path),
            query={key: values[-1] for key, values in parse_qs(parts.query).items()},
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
        )
        nomad = self.nomad
        with nomad._lock:
            nomad.requests.append(request)
            fault = nomad.one_shot_faults.pop(0) if nomad.one_shot_faults else nomad.fault
        if fault == "down":
            # As a dead tunnel origin looks to the caller: the connection drops, no answer.
            self.close_connection = True
            self.connection.close()
            return
        if fault == "slow":
            time.sleep(nomad.slow_seconds)
        if fault == "500":
            status, content_type, answer = 500, "text/plain", b"rpc error: No cluster leader"
        elif fault == "403":
            status, content_type, answer = 403, "text/plain", b"Permission denied"
        elif fault == "530":
            # Cloudflare's own answer for a tunnel with no healthy connector (error 1033).
            status, content_type, answer = 530, "text/html", b"<html>error code: 1033</html>"
        else:
            answer_of = nomad.answer if self.gated else nomad.answer_origin
            status, content_type, answer = answer_of(request)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(answer)))  # keeps the connection usable
        try:
            self.end_headers()
            self.wfile.write(answer)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # The caller gave up first (the "slow" fault outlasts its timeout): as a real server
            # would, drop the answer quietly instead of printing a traceback into test output.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = _serve
