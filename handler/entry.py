"""The Worker entry: the runtime's request in, :func:`handler.service.handle`, a Response out.

Class style (``WorkerEntrypoint``), as compatibility dates from 2025-08-14 on require; the
runtime serves it because the root main module ``worker.py`` (``handler/worker.py``) imports it.
Everything that decides lives in the pure modules beside this one; this adapter only reads the
bindings on ``self.env``, turns the request into an :class:`~handler.service.IncomingRequest`,
supplies the ports (outbound ``fetch`` to Nomad, the ``LEDGER`` KV namespace) and prints the one
structured log line per delivery; ``scheduled`` runs the reconciler on the Cron Trigger. With a
GitHub App's bindings it signs the App's JWT with the runtime's WebCrypto
(:class:`WebCryptoSigner`) and keeps the installation token in the isolate's
:class:`~handler.github_auth.GitHubCredential`. It is the outermost layer, so it alone turns
unexpected exceptions into a 500.
The modules ``workers``/``js`` exist only inside the Workers runtime: nothing else imports them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from js import AbortController, Object, Promise, Uint8Array
from js import crypto as js_crypto
from js import fetch as js_fetch
from pyodide.ffi import create_once_callable, to_js
from workers import Request, Response, WorkerEntrypoint

from handler.contract import GITHUB_API_URL_BINDING, GITHUB_READ_TOKEN_BINDING, LEDGER_BINDING
from handler.forks import GitHubRead, RunOriginCache
from handler.github_auth import (
    GitHubAuthError,
    GitHubCredential,
    app_credentials_from_bindings,
)
from handler.nomad import HttpRequest
from handler.reconcile import (
    github_settings_from_bindings,
    interval_from_cron,
    reconcile,
    run_slot,
)
from handler.service import (
    LEDGER_PAGE_KEYS,
    ConfigurationError,
    IncomingRequest,
    LedgerPage,
    LedgerUnavailable,
    Ports,
    StatusCache,
    TransportError,
    declared_too_large,
    handle,
    settings_from_bindings,
    utc_now,
)

_JSON = "application/json"
# One per isolate: /status answers are reused for a while instead of listing KV each time.
_STATUS_CACHE = StatusCache()
# One per isolate: fork-check verdicts per run, shared by webhooks and the reconciler.
_RUN_ORIGINS = RunOriginCache()
# One per isolate: the GitHub read credential, with a GitHub App's minted installation token.
_GITHUB: dict[str, GitHubCredential] = {}
_RSASSA = {"name": "RSASSA-PKCS1-v1_5", "hash": "SHA-256"}


class WebCryptoSigner:
    """RS256 through the runtime's WebCrypto: the key is imported once (PKCS#8, not
    extractable, for signing only) and kept as a CryptoKey for the isolate's life."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Any] = {}

    async def sign_rs256(self, pkcs8_der: bytes, message: bytes) -> bytes:
        algorithm = to_js(_RSASSA, dict_converter=Object.fromEntries)
        key = self._keys.get(pkcs8_der)
        if key is None:
            key = await js_crypto.subtle.importKey(
                "pkcs8", Uint8Array.new(to_js(pkcs8_der)), algorithm, False, to_js(["sign"])
            )
            self._keys[pkcs8_der] = key
        signature = await js_crypto.subtle.sign(algorithm, key, Uint8Array.new(to_js(message)))
        return bytes(signature.to_bytes())


def github_credential(env: Any) -> GitHubCredential | None:
    """The isolate's GitHub read credential from the bindings (None without GITHUB_API_URL);
    a bad App binding is a ConfigurationError naming it."""
    api_url = getattr(env, GITHUB_API_URL_BINDING, None)
    if not isinstance(api_url, str) or not api_url.strip().startswith(("https://", "http://")):
        return None
    lookup = lambda name: getattr(env, name, None)  # noqa: E731 - read once per binding
    try:
        app = app_credentials_from_bindings(lookup)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    token = lookup(GITHUB_READ_TOKEN_BINDING)
    key = f"{api_url}|{app}|{hash(app.private_key) if app else hash(token)}"
    credential = _GITHUB.get(key)
    if credential is None:
        _GITHUB.clear()  # new bindings (a deploy): the old token goes with the old ones
        credential = GitHubCredential(
            api_url=api_url.strip().rstrip("/"),
            token=token.strip() if isinstance(token, str) and token.strip() else None,
            app=app,
            signer=WebCryptoSigner() if app is not None else None,
        )
        _GITHUB[key] = credential
    return credential


class FetchTransport:
    """Outbound HTTP through the runtime's ``fetch``, no redirects (Access login = error).

    The JS ``fetch`` is called directly: the SDK's wrapper (``workers.fetch`` over
    ``pyodide.http.pyfetch``) and its header conversion added ~0.5 ms of Pyodide work per
    request in the local runtime (bench/worker_runtime.py). As newer ``pyfetch`` does, a
    cancelled call (the per-attempt timeout) aborts the request instead of leaving it running.
    """

    async def send(self, request: HttpRequest) -> tuple[int, bytes]:
        status, _, body = await self._call(request, with_headers=False)
        return status, body

    async def exchange(self, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        """As :meth:`send`, with the answer's headers (lower-cased): the reconciler reads them."""
        return await self._call(request, with_headers=True)

    async def _call(
        self, request: HttpRequest, *, with_headers: bool
    ) -> tuple[int, dict[str, str], bytes]:
        controller = AbortController.new()
        options: dict[str, Any] = {
            "method": request.method,
            "headers": dict(request.headers),
            "redirect": "manual",
            "signal": controller.signal,
        }
        if request.body:  # fetch refuses any body, even an empty one, on GET and HEAD
            options["body"] = request.body.decode()
        try:
            response = await js_fetch(
                request.url, to_js(options, dict_converter=Object.fromEntries)
            )
            # A JS Headers object iterates as [name, value] pairs.
            headers = (
                {str(name).lower(): str(value) for name, value in response.headers}
                if with_headers
                else {}
            )
            body = bytes((await response.arrayBuffer()).to_bytes())
            return int(response.status), headers, body
        except asyncio.CancelledError:
            controller.abort()
            raise
        except Exception as error:  # the runtime raises JsException/OSError for network failures
            raise TransportError(type(error).__name__) from None


class KvLedger:
    """The ledger in Workers KV; KV failures (e.g. 429 on a hot key) become LedgerUnavailable."""

    def __init__(self, namespace: Any) -> None:
        self._namespace = namespace

    async def get(self, key: str) -> str | None:
        try:
            value = await self._namespace.get(key)
        except Exception as error:
            raise LedgerUnavailable(type(error).__name__) from None
        return value if isinstance(value, str) else None

    async def put(
        self, key: str, value: str, ttl_seconds: int, metadata: str | None = None
    ) -> None:
        options: dict[str, Any] = {"expirationTtl": ttl_seconds}
        if metadata is not None:
            options["metadata"] = metadata  # KV metadata may be any JSON value: keep the text
        try:
            await self._namespace.put(key, value, **options)
        except Exception as error:
            raise LedgerUnavailable(type(error).__name__) from None

    async def delete(self, key: str) -> None:
        try:
            await self._namespace.delete(key)
        except Exception as error:
            raise LedgerUnavailable(type(error).__name__) from None

    async def list(
        self, prefix: str, cursor: str | None, limit: int = LEDGER_PAGE_KEYS
    ) -> LedgerPage:
        options: dict[str, Any] = {"prefix": prefix, "limit": max(1, min(LEDGER_PAGE_KEYS, limit))}
        if cursor:
            options["cursor"] = cursor
        try:
            page = await self._namespace.list(**options)
            entries = tuple(
                (str(_field(key, "name")), _text_or_none(_field(key, "metadata")))
                for key in _field(page, "keys")
            )
            complete = bool(_field(page, "list_complete"))
            next_cursor = None if complete else _text_or_none(_field(page, "cursor"))
        except LedgerUnavailable:
            raise
        except Exception as error:
            raise LedgerUnavailable(type(error).__name__) from None
        return LedgerPage(entries=entries, cursor=next_cursor)


def _field(value: Any, name: str) -> Any:
    # KV results arrive as a converted dict or as a JS object proxy, depending on the runtime.
    if isinstance(value, dict):
        return value.get(name)
    return getattr(value, name, None)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def scheduled_slot(controller: Any, now: datetime) -> int:
    """The run's number from the ScheduledController: ``scheduledTime`` (milliseconds since the
    epoch) over the interval its ``cron`` schedule states. Without a usable time, ``now``; with
    a schedule of another shape, one slot per minute (the rotation then still moves, though
    not by one slice per run)."""
    scheduled = getattr(controller, "scheduledTime", None)
    if isinstance(scheduled, int | float) and not isinstance(scheduled, bool) and scheduled > 0:
        when = datetime.fromtimestamp(scheduled / 1000, UTC)
    else:
        when = now
    return run_slot(when, interval_from_cron(getattr(controller, "cron", None)) or 1)


def _reply(status: int, document: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(
        json.dumps(document), status=status, headers={"content-type": _JSON, **dict(headers)}
    )


class Default(WorkerEntrypoint):
    async def fetch(self, request: Any) -> Response:
        if not isinstance(request, Request):  # a bare JS Request: give it the SDK's Python face
            request = Request(request)
        try:
            return await self._answer(request)
        except Exception as error:
            # Only the type: an exception's text could quote a header or a binding.
            print(json.dumps({"msg": "unhandled", "error": type(error).__name__}))
            return _reply(500, {"outcome": "error", "reason": "internal error"})

    async def _answer(self, request: Any) -> Response:
        env = self.env
        try:
            settings = settings_from_bindings(lambda name: getattr(env, name, None))
        except ConfigurationError as error:
            print(json.dumps({"msg": "misconfigured", "error": str(error)}))
            return _reply(500, {"outcome": "error", "reason": "worker misconfigured"})
        try:
            github = github_credential(env)
        except ConfigurationError as error:
            # Webhooks work on without GitHub reads (fork-checked jobs wait for the reconciler,
            # whose runs fail naming the binding), as without a read token.
            print(json.dumps({"msg": "misconfigured", "error": str(error)}))
            github = None
        headers = {str(name).lower(): str(value) for name, value in request.headers.items()}
        # An announced oversize body is not read at all: 413 without spending CPU or memory on it.
        body = None if declared_too_large(headers) else bytes(await request.bytes())
        method = getattr(request.method, "value", request.method)
        incoming = IncomingRequest(
            method=str(method), path=urlsplit(request.url).path, headers=headers, body=body
        )
        transport = FetchTransport()
        if github is not None and github.app is not None and incoming.path.startswith("/webhook/"):
            # The fork check reads with the App's installation token (cached in the isolate);
            # without one, lookups fail and the reconciler serves the job later.
            try:
                token = await github.bearer(transport, time.time())
                settings = replace(settings, github_read=GitHubRead(github.api_url, token))
            except (GitHubAuthError, TransportError) as error:
                reason = error.reason if isinstance(error, GitHubAuthError) else "unreachable"
                print(json.dumps({"msg": "github app token", "error": reason}))
        ports = Ports(
            transport=transport,
            ledger=KvLedger(getattr(env, LEDGER_BINDING)),
            monotonic=time.monotonic,
            defer=self._after_reply if getattr(self, "ctx", None) is not None else None,
            status_cache=_STATUS_CACHE,
            run_origins=_RUN_ORIGINS,
            github_rate_limit=(
                None
                if github is None
                else lambda: github.rate_limit(transport, time.time(), time.monotonic())
            ),
        )
        reply = await handle(incoming, settings, ports, utc_now())
        print(json.dumps(reply.log, sort_keys=True))
        if reply.text is not None:  # GET /metrics: Prometheus text, not JSON
            headers = {"content-type": reply.content_type, **dict(reply.headers)}
            return Response(reply.text, status=reply.status, headers=headers)
        return _reply(reply.status, reply.document, reply.headers)

    def _after_reply(self, delivery: str | None, pending: Coroutine[Any, Any, str]) -> None:
        """Run ``pending`` (a ledger write, and after a completion the dispatch of deferred
        jobs into the freed slot) after the answer, kept alive by ``waitUntil``; its outcome is
        logged unless it is a plain "written" or "unchanged"."""

        async def finish() -> None:
            outcome = await pending
            if outcome not in ("written", "unchanged"):
                print(json.dumps({"msg": "ledger", "delivery": delivery, "ledger": outcome}))

        def start(resolve: Any, _reject: Any) -> None:
            task = asyncio.ensure_future(finish())  # finish() never raises: nothing to reject
            task.add_done_callback(lambda _done: resolve())

        # A real JS Promise: a Python task handed to JS directly is a borrowed proxy, destroyed
        # as soon as the call returns, long before the write finishes.
        self.ctx.waitUntil(Promise.new(create_once_callable(start)))

    async def scheduled(self, controller: Any, env: Any = None, ctx: Any = None) -> None:
        """Cron Trigger: one reconciler run (:func:`handler.reconcile.reconcile`), one log line.

        The runtime passes ``(controller, env, ctx)``; the bindings are read from ``self.env``
        as in :meth:`fetch`. Where the run starts among the repositories comes from the
        controller's ``scheduledTime`` and ``cron`` (:func:`scheduled_slot`), not from KV.
        A failure is logged by type only and raised again without its text,
        so the invocation shows as failed without quoting anything secret; a missing or bad
        binding fails it too (naming the binding), or a reconciler that never runs would look
        healthy every time.
        """
        bindings = self.env
        try:
            settings = settings_from_bindings(lambda name: getattr(bindings, name, None))
            github = github_settings_from_bindings(lambda name: getattr(bindings, name, None))
            credential = github_credential(bindings)
        except ConfigurationError as error:
            print(json.dumps({"msg": "misconfigured", "error": str(error)}))
            raise RuntimeError(f"reconciler misconfigured: {error}") from None
        transport = FetchTransport()
        if credential is not None and credential.app is not None:
            # The App's installation token, minted (one request) only when the isolate's has
            # gone stale; a refusal fails the run, naming what to fix.
            try:
                token = await credential.bearer(transport, time.time())
            except (GitHubAuthError, TransportError) as error:
                reason = error.reason if isinstance(error, GitHubAuthError) else "unreachable"
                print(json.dumps({"msg": "reconcile failed", "error": reason}))
                raise RuntimeError(f"reconciler has no GitHub token: {reason}") from None
            github = replace(github, token=token)
        ports = Ports(
            transport=transport,
            ledger=KvLedger(getattr(bindings, LEDGER_BINDING)),
            monotonic=time.monotonic,
            run_origins=_RUN_ORIGINS,
        )
        now = utc_now()
        try:
            report = await reconcile(
                settings, github, ports, transport, now, slot=scheduled_slot(controller, now)
            )
        except Exception as error:
            print(json.dumps({"msg": "reconcile failed", "error": type(error).__name__}))
            raise RuntimeError(f"reconciler failed: {type(error).__name__}") from None
        if report.stopped == "credentials" and credential is not None:
            credential.forget()  # GitHub refused the token (revoked): mint afresh next run
        print(json.dumps(report.to_log(), sort_keys=True))
