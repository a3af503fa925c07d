"""A webhook burst as GitHub could send it, shared by the burst test and ``bench/burst.py``.

``burst(jobs, repositories, redelivered, seed)`` returns the deliveries of ``jobs`` queued jobs
spread over ``repositories`` repositories: one ``queued`` delivery per job, a share of them
delivered twice (same delivery id and body, as a manual redelivery), and one ``completed``
delivery per job (some cancelled before assignment), all shuffled so that completed events
arrive out of order, some before their job's ``queued``. ``DirectNomad`` is a transport that
hands requests straight to a :class:`~tests.standins.nomad.NomadStandIn`'s ``answer`` (same
rules, no sockets) for measuring the core alone.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from handler.contract import PoolRoute, Routing
from handler.nomad import HttpRequest
from tests.standins.nomad import NomadStandIn, RecordedRequest
from tests.standins.webhooks import LINUX_LABELS, Delivery, delivery, workflow_job

POOL_JOB = "github-runner-linux-x64"


def burst_routing(repositories: int) -> Routing:
    return Routing(
        namespace="github-runners",
        # A cap above the burst: this measures dispatch, not deferral.
        pools=(PoolRoute("linux-x64", frozenset(LINUX_LABELS), POOL_JOB, 100_000),),
        repositories={repository_name(n): ("linux-x64",) for n in range(repositories)},
        # No fork check: this measures dispatch, not GitHub lookups.
        fork_pull_requests={repository_name(n): "allow" for n in range(repositories)},
    )


def repository_name(index: int) -> str:
    return f"burst-org/repo-{index:03d}"


@dataclass(frozen=True)
class Burst:
    deliveries: list[Delivery]
    job_ids: list[int]
    redelivered: int
    completed_before_queued: int


def burst(
    jobs: int = 1000, repositories: int = 50, redelivered: float = 0.2, seed: int = 5
) -> Burst:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    queued: list[tuple[int, Delivery]] = []
    completed: list[tuple[int, Delivery]] = []
    job_ids = []
    for n in range(jobs):
        repository = repository_name(n % repositories)
        job_id = 7_000_000 + n
        job_ids.append(job_id)
        payload = workflow_job(job_id=job_id, run_id=job_id * 3, repository=repository)
        queued.append((job_id, delivery(payload, repository=repository)))
        if rng.random() < 0.1:  # cancelled before any runner took it
            done = workflow_job(
                "completed",
                job_id=job_id,
                run_id=job_id * 3,
                repository=repository,
                conclusion="cancelled",
            )
        else:
            done = workflow_job(
                "completed",
                job_id=job_id,
                run_id=job_id * 3,
                repository=repository,
                conclusion="success",
                runner_id=1000 + n,
            )
        completed.append((job_id, delivery(done, repository=repository)))
    again = rng.sample(queued, int(jobs * redelivered))
    stream = [*queued, *again, *completed]
    rng.shuffle(stream)
    first_queued: dict[int, int] = {}
    first_completed: dict[int, int] = {}
    for position, (job_id, sent) in enumerate(stream):
        action = json.loads(sent.body)["action"]
        target = first_queued if action == "queued" else first_completed
        target.setdefault(job_id, position)
    early = sum(1 for job_id in job_ids if first_completed[job_id] < first_queued[job_id])
    return Burst(
        deliveries=[sent for _, sent in stream],
        job_ids=job_ids,
        redelivered=len(again),
        completed_before_queued=early,
    )


class DirectNomad:
    """The Nomad stand-in's own rules, called in-process: measures the handler core alone."""

    def __init__(self, nomad: NomadStandIn) -> None:
        self.nomad = nomad

    async def send(self, request: HttpRequest) -> tuple[int, bytes]:
        parts = urlsplit(request.url)
        recorded = RecordedRequest(
            method=request.method,
            path=unquote(parts.path),
            query={key: values[-1] for key, values in parse_qs(parts.query).items()},
            headers={name.lower(): value for name, value in request.headers},
            body=request.body,
        )
        self.nomad.requests.append(recorded)
        status, _, body = self.nomad.answer(recorded)
        return status, body


def children_by_token(nomad: NomadStandIn) -> dict[str, int]:
    counts: dict[str, int] = {}
    for child in nomad.children(POOL_JOB):
        counts[child.idempotency_token] = counts.get(child.idempotency_token, 0) + 1
    return counts


def summary(outcomes: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[str(outcome)] = counts.get(str(outcome), 0) + 1
    return counts
