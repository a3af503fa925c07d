"""A burst: 1,000 queued jobs over 50 repositories in one go, 20 % of the deliveries redelivered,
completed events out of order (some before their job's queued): exactly 1,000 dispatches, none
twice. Through the handler core under CPython with the Nomad stand-in's rules in-process (the
HTTP and Workers-runtime figures come from ``bench/burst.py``).
"""

import asyncio
import time
from datetime import UTC, datetime

from handler.local_server import MemoryLedger
from handler.service import IncomingRequest, Ports, handle, settings_from_bindings
from tests.standins.burst import DirectNomad, burst, burst_routing, children_by_token
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import bindings, register_pools


def test_a_thousand_jobs_fifty_repositories_redeliveries_and_disorder_give_a_thousand_runners():
    events = burst(jobs=1000, repositories=50, redelivered=0.2)
    assert events.redelivered == 200 and events.completed_before_queued > 50
    routing = burst_routing(50)
    nomad = NomadStandIn()  # used in-process: no server needed
    register_pools(nomad, routing)
    settings = settings_from_bindings(
        (bindings("http://nomad.invalid") | {"ROUTING": routing.to_json()}).get
    )
    ledger = MemoryLedger()
    ports = Ports(DirectNomad(nomad), ledger, time.monotonic)

    async def deliver_all():
        async def one(sent):
            request = IncomingRequest("POST", sent.path, sent.headers, sent.body)
            return await handle(request, settings, ports, datetime.now(UTC))

        replies = []
        for start in range(0, len(events.deliveries), 100):  # 100 in flight at a time
            chunk = events.deliveries[start : start + 100]
            replies.extend(await asyncio.gather(*(one(sent) for sent in chunk)))
        return replies

    replies = asyncio.run(deliver_all())
    assert len(replies) == 2200
    outcomes = [reply.document["outcome"] for reply in replies]
    assert outcomes.count("dispatched") == 1000
    # A redelivered queued event finds its job's child at Nomad, or, once the ledger has the
    # job started after a queued delivery was handled, is not even sent (already_started).
    codes = [reply.document.get("code") for reply in replies]
    replays = outcomes.count("already_dispatched")
    assert replays + codes.count("already_started") == 200
    assert outcomes.count("ignored") == 1000 + codes.count("already_started")
    assert codes.count("recorded") == 1000  # every completed event, recorded only
    tokens = children_by_token(nomad)
    assert len(tokens) == 1000 and set(tokens.values()) == {1}
    assert sorted(int(token) for token in tokens) == events.job_ids
    dispatches = [r for r in nomad.requests if r.path.endswith("/dispatch")]
    assert len(dispatches) == 1000 + replays  # Nomad started 1,000
