"""Test-only main module: runs the class-style Worker entry in the local Workers runtime.

wrangler 3.92.0 (workerd 2024-11-06) only calls a top-level ``on_fetch(request, env)``. This
adapter builds the production ``Default(WorkerEntrypoint)`` from ``handler/entry.py`` with the
runtime's ``env`` and forwards the request, then hands the runtime the JS Response inside the
SDK's Response. For tests it also answers ``GET /__test/kv/{key}`` with the raw KV value and
``GET /__test/ledger-list/{prefix}`` with one page of the entry's own ``KvLedger.list``, and
runs ``Default.scheduled`` (the Cron Trigger's handler) on ``GET /__test/scheduled``: the local
runtime's own ``--test-scheduled`` route does not reach Python Workers. For the benchmark,
``GET /__test/nomad-reads/{n}`` sends ``n`` capacity reads (the first pool's job summary) through
the entry's own ``FetchTransport``, one after the other, and answers their statuses: ``n = 0``
against ``n = 1`` is the cost of one outbound request from inside the Worker. Never uploaded:
production calls ``Default.fetch`` and ``Default.scheduled`` itself.
"""

import json
from urllib.parse import unquote, urlsplit

from js import Response as JsResponse

from handler.entry import Default, FetchTransport, KvLedger
from handler.nomad import summary_request
from handler.service import settings_from_bindings

_KV_PREFIX = "/__test/kv/"
_LIST_PREFIX = "/__test/ledger-list/"
_SCHEDULED_PATH = "/__test/scheduled"
_READS_PREFIX = "/__test/nomad-reads/"


class _Controller:
    # What the runtime hands a scheduled handler; the reconciler reads none of it.
    cron = "*/5 * * * *"
    type = "scheduled"
    scheduledTime = 0


async def on_fetch(request, env, ctx=None):
    path = urlsplit(request.url).path
    if path.startswith(_KV_PREFIX):
        value = await env.LEDGER.get(unquote(path[len(_KV_PREFIX) :]))
        return JsResponse.new(value if isinstance(value, str) else "", status=200)
    if path.startswith(_LIST_PREFIX):
        page = await KvLedger(env.LEDGER).list(unquote(path[len(_LIST_PREFIX) :]), None)
        document = {"entries": [list(entry) for entry in page.entries], "cursor": page.cursor}
        return JsResponse.new(json.dumps(document), status=200)
    if path.startswith(_READS_PREFIX):
        settings = settings_from_bindings(lambda name: getattr(env, name, None))
        summary = summary_request(
            nomad_addr=settings.nomad_addr,
            namespace=settings.routing.namespace,
            nomad_job=settings.routing.pools[0].nomad_job,
            credentials=settings.credentials,
        )
        transport = FetchTransport()
        statuses = [
            (await transport.send(summary))[0] for _ in range(int(path[len(_READS_PREFIX) :]))
        ]
        return JsResponse.new(json.dumps(statuses), status=200)
    if path == _SCHEDULED_PATH:
        await Default(ctx, env).scheduled(_Controller(), env, ctx)
        return JsResponse.new("ran", status=200)
    response = await Default(ctx, env).fetch(request)
    return response.js_object
