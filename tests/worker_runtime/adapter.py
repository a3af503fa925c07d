"""Test-only main module: runs the class-style Worker entry in the local Workers runtime.

wrangler 3.92.0 (workerd 2024-11-06) only calls a top-level ``on_fetch(request, env)``. This
adapter builds the production ``Default(WorkerEntrypoint)`` from ``handler/entry.py`` with the
runtime's ``env`` and forwards the request, then hands the runtime the JS Response inside the
SDK's Response. It also answers ``GET /__test/kv/{key}`` with the raw KV value so tests can read
the ledger. Never uploaded: production calls ``Default.fetch`` itself.
"""

from urllib.parse import unquote, urlsplit

from js import Response as JsResponse

from handler.entry import Default

_KV_PREFIX = "/__test/kv/"


async def on_fetch(request, env, ctx=None):
    path = urlsplit(request.url).path
    if path.startswith(_KV_PREFIX):
        value = await env.LEDGER.get(unquote(path[len(_KV_PREFIX) :]))
        return JsResponse.new(value if isinstance(value, str) else "", status=200)
    response = await Default(ctx, env).fetch(request)
    return response.js_object
