"""Benchmark: the CPython cost of the Worker's pure core for one typical delivery.

verify the signature + parse the event + decide + build the Nomad request, for a signed
``workflow_job``/``queued`` self-hosted payload derived from the real octokit example (~7 KB),
median over 10,000 runs. Baseline in the same process: ``json.loads`` of the same body, the
least any handler must do; the ratio is what the figures should be compared by across machines.
Goal (issue 2): median under 200 us. Run: ``.venv/bin/python bench/handler_core.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from handler.contract import webhook_secret_for
from handler.decide import Dispatch, decide
from handler.events import WorkflowJobEvent, parse_event
from handler.nomad import NomadCredentials, dispatch_request
from handler.signature import verify_signature
from tests.standins.webhooks import REPOSITORY, ROUTING, WEBHOOK_KEY, delivery, workflow_job

RUNS = 10_000
CREDENTIALS = NomadCredentials("token", "id", "secret")


def one(body: bytes, signature: str, secret: str, now: datetime) -> None:
    verify_signature(secret, body, signature)
    event = parse_event("workflow_job", body)
    assert isinstance(event, WorkflowJobEvent)
    decision = decide(event, ROUTING, now)
    assert isinstance(decision, Dispatch)
    dispatch_request(
        nomad_addr="https://nomad-api.example.com",
        namespace=ROUTING.namespace,
        nomad_job=decision.pool.nomad_job,
        meta=decision.meta,
        idempotency_token=decision.idempotency_token,
        credentials=CREDENTIALS,
        id_prefix=f"gh{event.job.id}",
    )


def timed(function, runs: int) -> list[float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        function()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return samples


def main() -> None:
    sent = delivery(workflow_job())
    body, signature = sent.body, sent.headers["x-hub-signature-256"]
    # The Worker derives the secret per delivery too: include it in the measured work.
    now = datetime.now(UTC)

    def core() -> None:
        one(body, signature, webhook_secret_for(WEBHOOK_KEY, REPOSITORY), now)

    def baseline() -> None:
        json.loads(body)

    for function in (core, baseline):  # warm-up
        timed(function, 500)
    core_us = timed(core, RUNS)
    base_us = timed(baseline, RUNS)
    core_median, base_median = statistics.median(core_us), statistics.median(base_us)
    p99 = statistics.quantiles(core_us, n=100)[98]
    print(f"handler core (verify+parse+decide+build), {len(body)} B body, {RUNS} runs:")
    print(f"  median {core_median:.1f} us   p99 {p99:.1f} us   (goal: median < 200 us)")
    print(
        f"  baseline json.loads median {base_median:.1f} us",
        f"  ratio {core_median / base_median:.2f}x",
    )


if __name__ == "__main__":
    main()
