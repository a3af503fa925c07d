"""Test-only shim: serves the uploaded Worker in the local Workers runtime, found as in production.

wrangler 3.92.0 (workerd 2024-11-06) only calls a top-level ``on_fetch(request, env)``, so this
is the local runtime's main module. It does not import the Worker's code by a name of its own:
``main_module_loader.load_entry_class`` imports the uploaded main module by its name
(``MAIN_MODULE`` of ``handler.bundle``, written by the harness into ``_harness_main_module.py``)
and takes the ``WorkerEntrypoint`` subclass ``Default`` from its namespace, the production
rule. A layout production refuses (a main module in a directory, a name that does not import,
no ``Default``) fails here, at the first request, with the error production would give.

Each request builds ``Default(ctx, env)`` with the runtime's ``env`` and forwards to its
``fetch``, then hands the runtime the JS Response inside the SDK's Response. For tests it also
answers ``GET /__test/kv/{key}`` with the raw KV value and ``GET /__test/ledger-list/{prefix}``
with one page of the entry's own ``KvLedger.list``, and runs ``Default.scheduled`` (the Cron
Trigger's handler) on ``GET /__test/scheduled[?time=MS&cron=...]``: the local runtime's own
``--test-scheduled`` route does not reach Python Workers. For the benchmark,
``GET /__test/nomad-reads/{n}`` sends ``n`` capacity reads (the first pool's job summary)
through the entry's own ``FetchTransport``, one after the other, and answers their statuses:
``n = 0`` against ``n = 1`` is the cost of one outbound request from inside the Worker.
Also for the benchmark (bench/cpu_budget.py), the I/O baseline: ``GET /__test/io/arm`` starts
recording every call the entry's ``FetchTransport`` and ``KvLedger`` make (the request and its
arguments, not the answers; work deferred with ``waitUntil`` included) and empties the entry's
``/status`` cache, so the next ``/status`` is computed afresh; ``GET /__test/io/replay`` stops
recording and makes the recorded calls again, one after the other, through the same
``FetchTransport`` code and the very ``KvLedger`` objects (so the same KV binding), doing
nothing with the answers: the same outbound requests and KV operations as the recorded
invocation, without the handler's work. Both the recorded and the replayed calls go
through the same recording wrapper, so it costs each side the same. A replayed dispatch reuses
its idempotency token (Nomad answers with the existing child) and a replayed KV put writes the
same value again. ``POST /__test/kv-fill`` stores ``[[key, value, metadata], ...]`` in the
``LEDGER`` namespace (a ledger of known size for ``/status``).
``KvLedger`` and ``FetchTransport`` are taken from the module that defines the loaded class.
Never uploaded: production calls ``Default.fetch`` and ``Default.scheduled`` itself.
"""

import json
import sys
import time
from urllib.parse import parse_qs, unquote, urlsplit

from _harness_main_module import MAIN_MODULE
from js import Response as JsResponse
from main_module_loader import load_entry_class
from workers import WorkerEntrypoint

# At import, as production loads the main module before the first request.
_ENTRY_CLASS = load_entry_class(MAIN_MODULE, WorkerEntrypoint)
_ENTRY_MODULE = sys.modules[_ENTRY_CLASS.__module__]

_KV_PREFIX = "/__test/kv/"
_LIST_PREFIX = "/__test/ledger-list/"
_SCHEDULED_PATH = "/__test/scheduled"
_READS_PREFIX = "/__test/nomad-reads/"
_IO_ARM_PATH = "/__test/io/arm"
_IO_REPLAY_PATH = "/__test/io/replay"
_KV_FILL_PATH = "/__test/kv-fill"
_LEDGER_TTL_SECONDS = 4 * 24 * 3600


class _Controller:
    """What the runtime hands a scheduled handler (workerd's ScheduledController): the
    scheduled time in milliseconds since the epoch (a JS number, a float in Python) and the
    trigger's cron. ``/__test/scheduled?time=MS&cron=...`` sets them; by default now, every 5
    minutes."""

    type = "scheduled"

    def __init__(self, query):
        values = parse_qs(query)
        self.scheduledTime = float(values.get("time", [str(time.time() * 1000)])[0])
        self.cron = values.get("cron", ["*/5 * * * *"])[0]


async def _nomad_reads(env, count):
    # Test-only route: the pure modules it needs are imported only when it is used.
    from handler.nomad import summary_request
    from handler.service import settings_from_bindings

    settings = settings_from_bindings(lambda name: getattr(env, name, None))
    summary = summary_request(
        nomad_addr=settings.nomad_addr,
        namespace=settings.routing.namespace,
        nomad_job=settings.routing.pools[0].nomad_job,
        credentials=settings.credentials,
    )
    transport = _ENTRY_MODULE.FetchTransport()
    return [(await transport.send(summary))[0] for _ in range(count)]


class _IoRecorder:
    """Wraps the entry's ``FetchTransport._call`` and ``KvLedger``'s four methods once, for the
    life of the isolate; while ``recording`` each call is appended to ``calls``."""

    def __init__(self):
        self.recording = False
        self.calls = []
        self.installed = False

    def install(self):
        if self.installed:
            return
        self.installed = True
        transport = _ENTRY_MODULE.FetchTransport
        original_call = transport._call
        recorder = self

        async def call(self, request, *, with_headers):
            if recorder.recording:
                recorder.calls.append(("fetch", request, with_headers))
            return await original_call(self, request, with_headers=with_headers)

        transport._call = call
        ledger = _ENTRY_MODULE.KvLedger
        for name in ("get", "put", "delete", "list"):
            setattr(ledger, name, self._wrap(name, getattr(ledger, name)))

    def _wrap(self, name, original):
        recorder = self

        async def method(self, *args, **kwargs):
            if recorder.recording:
                recorder.calls.append((name, self, args, kwargs))
            return await original(self, *args, **kwargs)

        return method

    def arm(self):
        self.install()
        self.calls = []
        self.recording = True

    async def replay(self):
        self.recording = False
        calls, self.calls = self.calls, []
        transport = _ENTRY_MODULE.FetchTransport()
        counts = {"fetch": 0, "kv": 0, "errors": 0}
        for call in calls:
            try:
                if call[0] == "fetch":
                    counts["fetch"] += 1
                    await transport._call(call[1], with_headers=call[2])
                else:
                    # The very KvLedger the entry used: the same binding (the SDK's wrapper of
                    # the KV namespace converts every answer to Python values, at a cost).
                    name, ledger, args, kwargs = call
                    counts["kv"] += 1
                    await getattr(ledger, name)(*args, **kwargs)
            except Exception:  # counted: the bench refuses a replay with errors
                counts["errors"] += 1
        return counts


_IO = _IoRecorder()


async def _kv_fill(request, env):
    entries = json.loads(await request.text())
    for key, value, metadata in entries:
        await env.LEDGER.put(key, value, expirationTtl=_LEDGER_TTL_SECONDS, metadata=metadata)
    return len(entries)


async def on_fetch(request, env, ctx=None):
    path = urlsplit(request.url).path
    if path == _IO_ARM_PATH:
        _IO.arm()
        _ENTRY_MODULE._STATUS_CACHE.document = None
        return JsResponse.new("armed", status=200)
    if path == _IO_REPLAY_PATH:
        return JsResponse.new(json.dumps(await _IO.replay()), status=200)
    if path == _KV_FILL_PATH:
        return JsResponse.new(json.dumps(await _kv_fill(request, env)), status=200)
    if path.startswith(_KV_PREFIX):
        value = await env.LEDGER.get(unquote(path[len(_KV_PREFIX) :]))
        return JsResponse.new(value if isinstance(value, str) else "", status=200)
    if path.startswith(_LIST_PREFIX):
        ledger = _ENTRY_MODULE.KvLedger(env.LEDGER)
        page = await ledger.list(unquote(path[len(_LIST_PREFIX) :]), None)
        document = {"entries": [list(entry) for entry in page.entries], "cursor": page.cursor}
        return JsResponse.new(json.dumps(document), status=200)
    if path.startswith(_READS_PREFIX):
        statuses = await _nomad_reads(env, int(path[len(_READS_PREFIX) :]))
        return JsResponse.new(json.dumps(statuses), status=200)
    if path == _SCHEDULED_PATH:
        controller = _Controller(urlsplit(request.url).query)
        await _ENTRY_CLASS(ctx, env).scheduled(controller, env, ctx)
        return JsResponse.new("ran", status=200)
    response = await _ENTRY_CLASS(ctx, env).fetch(request)
    return response.js_object
