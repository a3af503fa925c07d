"""GitHub's sending side, for tests and benches: real payloads, variants, signed deliveries.

Payloads come from ``tests/fixtures/github-webhooks/`` (octokit/webhooks examples, MIT, copied
unchanged with their licence). Variants (self-hosted labels, fresh
timestamps, other ids) are derived from them, never written from scratch, so they keep GitHub's
shape. ``delivery(...)`` returns the path, headers and raw body GitHub would POST.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from handler.contract import NOMAD_ADDR_BINDING, Routing, webhook_path, webhook_secret_for
from handler.signature import sign

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "github-webhooks" / "payload-examples"
SCHEMAS = REPO_ROOT / "tests" / "fixtures" / "github-webhooks" / "payload-schemas"

WEBHOOK_KEY = "webhook-key-for-tests"
STATUS_TOKEN = "status-token-for-tests"
REPOSITORY = "Codertocat/Hello-World"  # the fixtures' repository
OTHER_REPOSITORY = "octo-org/octo-repo"
LINUX_LABELS = ("self-hosted", "linux", "x64")

ROUTING_DOCUMENT: dict[str, Any] = {
    "version": 1,
    "namespace": "github-runners",
    "pools": [
        {
            "name": "linux-x64",
            "labels": ["self-hosted", "linux", "x64"],
            "nomad_job": "github-runner-linux-x64",
            "max_runners": 10,
        },
        {
            "name": "linux-x64-large",
            "labels": ["self-hosted", "linux", "x64", "large"],
            "nomad_job": "github-runner-linux-x64-large",
            "max_runners": 2,
        },
        {
            "name": "gpu",
            "labels": ["self-hosted", "linux", "x64", "gpu"],
            "nomad_job": "github-runner-gpu",
            "max_runners": 1,
        },
        {
            "name": "arm",
            "labels": ["self-hosted", "linux", "arm64"],
            "nomad_job": "github-runner-arm",
            "max_runners": 4,
        },
    ],
    "repositories": {
        "codertocat/hello-world": ["linux-x64", "linux-x64-large", "gpu"],
        "octo-org/octo-repo": ["arm"],
    },
    # Most tests are about dispatching, not about forks: their routing lets fork runs through,
    # so no run lookup is needed. The fork policy's own tests use REFUSING_FORKS below.
    "fork_pull_requests": {"codertocat/hello-world": "allow", "octo-org/octo-repo": "allow"},
}
ROUTING = Routing.from_document(ROUTING_DOCUMENT)
# The same routing with the default policy: fork runs refused everywhere.
REFUSING_FORKS = Routing.from_document(
    {key: value for key, value in ROUTING_DOCUMENT.items() if key != "fork_pull_requests"}
)


def load(name: str) -> dict[str, Any]:
    """One fixture payload, e.g. ``load("workflow_job/queued")`` or ``load("ping/payload")``."""
    file_name = f"{name}.json" if name.endswith("payload") else f"{name}.payload.json"
    document: dict[str, Any] = json.loads((FIXTURES / file_name).read_text())
    return document


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def workflow_job(
    action: str = "queued",
    *,
    labels: tuple[str, ...] | list[str] = LINUX_LABELS,
    job_id: int = 289782451,
    run_id: int = 2202229078,
    repository: str = REPOSITORY,
    created_at: datetime | None = None,
    status: str | None = None,
    conclusion: str | None = None,
    runner_id: int | None = None,
) -> dict[str, Any]:
    """A ``workflow_job`` payload derived from the fixture of ``action``."""
    base = {
        "queued": "workflow_job/queued",
        "waiting": "workflow_job/waiting",
        "in_progress": "workflow_job/in_progress",
        "completed": "workflow_job/completed.success.with-organization",
    }.get(action, "workflow_job/queued")
    payload = copy.deepcopy(load(base))
    payload["action"] = action
    job = payload["workflow_job"]
    job["labels"] = list(labels)
    job["id"] = job_id
    job["run_id"] = run_id
    job["created_at"] = iso(created_at or datetime.now(UTC) - timedelta(seconds=5))
    if action in ("queued", "waiting"):
        # Until a runner starts it, GitHub reports a job's started_at as its queued moment.
        job["started_at"] = job["created_at"]
    job["status"] = status or {"waiting": "waiting"}.get(action, action)
    if action == "queued":
        # The octokit example carries a runner on a queued job; real queued jobs have none.
        job["runner_id"] = None
        job["runner_name"] = None
    if conclusion is not None:
        job["conclusion"] = conclusion
    if runner_id is not None or action == "completed":
        job["runner_id"] = runner_id
        if runner_id is None:
            job["runner_name"] = None
    owner, name = repository.split("/")
    payload["repository"]["full_name"] = repository
    payload["repository"]["name"] = name
    payload["repository"]["owner"]["login"] = owner
    return payload


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # lower-case names, as the adapters hand them to the core
    body: bytes

    def http_headers(self) -> dict[str, str]:
        return dict(self.headers)


def delivery(
    payload: dict[str, Any] | bytes,
    *,
    event: str = "workflow_job",
    repository: str = REPOSITORY,
    delivery_id: str | None = None,
    key: str = WEBHOOK_KEY,
    signature: str | None = None,
) -> Delivery:
    """What GitHub POSTs for ``payload`` to the hook of ``repository``, signed with its secret."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "content-type": "application/json",
        "user-agent": "GitHub-Hookshot/044aadd",
        "x-github-event": event,
        "x-github-delivery": delivery_id or str(uuid.uuid4()),
        "x-github-hook-id": "292430182",
        "x-hub-signature-256": signature or sign(webhook_secret_for(key, repository), body),
    }
    return Delivery(path=webhook_path(repository), headers=headers, body=body)


def bindings(nomad_url: str) -> dict[str, str]:
    """Worker binding values for tests (the stand-in's default credentials)."""
    from tests.standins import nomad

    return {
        "ROUTING": ROUTING.to_json(),
        NOMAD_ADDR_BINDING: nomad_url,
        "NOMAD_TOKEN": nomad.NOMAD_TOKEN,
        "CF_ACCESS_CLIENT_ID": nomad.ACCESS_CLIENT_ID,
        "CF_ACCESS_CLIENT_SECRET": nomad.ACCESS_CLIENT_SECRET,
        "WEBHOOK_SECRET_KEY": WEBHOOK_KEY,
        "STATUS_TOKEN": STATUS_TOKEN,
    }


def status_headers(token: str = STATUS_TOKEN) -> dict[str, str]:
    """What the operator sends to read ``GET /status``."""
    return {"authorization": f"Bearer {token}"}


def register_pools(stand_in: Any, routing: Routing = ROUTING) -> None:
    """Register every pool's parameterized runner job at a Nomad stand-in, as the jobspec does."""
    from handler.contract import DISPATCH_META_KEYS

    for pool in routing.pools:
        stand_in.register_job(
            pool.nomad_job, namespace=routing.namespace, meta_required=DISPATCH_META_KEYS
        )
