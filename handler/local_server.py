"""The dispatch Worker's core served by CPython on 127.0.0.1: for trying it by hand and for tests.

``python -m handler.local_server --config examples/config.toml`` (what ``make serve-handler``
runs) answers exactly as the Worker does, because it calls the same :func:`handler.service.handle`;
only the transport differs: ``http.server`` in, ``urllib`` out, and an in-memory ledger instead of
KV. Settings come from the environment under the Worker's binding names (``NOMAD_ADDR``,
``NOMAD_TOKEN``, ``CF_ACCESS_CLIENT_ID``, ``CF_ACCESS_CLIENT_SECRET``, ``WEBHOOK_SECRET_KEY``;
``PORT`` optional, default 8787; ``STATUS_TOKEN`` optional: without it ``GET /status`` answers
401 to everyone) and the routing from the project's config file (or from a routing JSON document
with ``--routing``). ``--reconcile-once`` runs the reconciler once instead (with
``GITHUB_API_URL``, ``GITHUB_READ_TOKEN`` and optionally ``RECONCILE_PLAN``, default ``free``, and
``RECONCILE_REQUEST_BUDGET``, default the plan's: 10 free, 40 paid)
and prints its report; ``--reconcile-every N`` runs it every N seconds beside the server, as the
Worker's Cron Trigger does. With ``GITHUB_API_URL`` and ``GITHUB_READ_TOKEN`` set, webhooks of
repositories that refuse fork runs are checked as in the Worker (without them, such jobs are not
dispatched). ``GET /status`` answers per-pool counts to ``Authorization: Bearer $STATUS_TOKEN``.
It refuses (400) a repeated security header (two signatures, two event names, two
Content-Lengths, two Authorizations...) and a Content-Length that is not ASCII digits, and drops
a client silent for 10 s. Never uploaded to Cloudflare (see ``handler.bundle``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from handler import contract
from handler.forks import RunOriginCache
from handler.github_auth import GitHubCredential
from handler.nomad import HttpRequest
from handler.reconcile import (
    GitHubReadSettings,
    ReconcileReport,
    github_settings_from_bindings,
    reconcile,
    run_slot,
)
from handler.service import (
    ATTEMPT_TIMEOUT_SECONDS,
    ConfigurationError,
    IncomingRequest,
    LedgerPage,
    Ports,
    Settings,
    TransportError,
    declared_too_large,
    handle,
    settings_from_bindings,
    utc_now,
)

DEFAULT_PORT = 8787
# A client that stops sending mid-request holds a thread no longer than this.
SOCKET_TIMEOUT_SECONDS = 10.0
# Headers a request must not carry twice: with two, which one counts would depend on the parser
# (http.server keeps the last); GitHub sends each once.
SINGLE_VALUED_HEADERS = (
    "Content-Length",
    "Transfer-Encoding",
    "Authorization",
    "X-Hub-Signature-256",
    "X-Hub-Signature",
    "X-GitHub-Event",
    "X-GitHub-Delivery",
)


def header_problem(headers: Any) -> str | None:
    """Why a request's headers (an ``http.client.HTTPMessage``) cannot be served, or None.

    A repeated security header, or a Content-Length that is not a plain ASCII decimal number
    (``str.isdigit`` and ``int`` take Unicode digits too), is refused with a 400 before anything
    else is read.
    """
    for name in SINGLE_VALUED_HEADERS:
        if len(headers.get_all(name) or ()) > 1:
            return f"duplicate {name} header"
    length = headers.get("Content-Length")
    if length is not None:
        text = length.strip()
        if not (text.isascii() and text.isdigit()):
            return "Content-Length must be a decimal number of ASCII digits"
    return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect from the Nomad side means a login page (Access) or a misrouted host: report it.
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class UrllibTransport:
    """Outbound HTTP with urllib in a worker thread; connection failures become TransportError."""

    def __init__(self, timeout: float = ATTEMPT_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout

    def _exchange(self, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        # The URL is a configured Nomad or GitHub API address, never caller input.
        outbound = urllib.request.Request(  # noqa: S310
            request.url,
            data=request.body or None,
            headers=dict(request.headers),
            method=request.method,
        )
        try:
            with _OPENER.open(outbound, timeout=self._timeout) as response:
                headers = {name.lower(): value for name, value in response.headers.items()}
                return int(response.status), headers, bytes(response.read())
        except urllib.error.HTTPError as error:
            headers = {name.lower(): value for name, value in error.headers.items()}
            return int(error.code), headers, bytes(error.read())
        except (urllib.error.URLError, OSError) as error:
            raise TransportError(type(error).__name__) from None

    async def send(self, request: HttpRequest) -> tuple[int, bytes]:
        status, _, body = await asyncio.to_thread(self._exchange, request)
        return status, body

    async def exchange(self, request: HttpRequest) -> tuple[int, dict[str, str], bytes]:
        """As :meth:`send`, with the answer's headers (lower-cased): the reconciler reads them."""
        return await asyncio.to_thread(self._exchange, request)


class MemoryLedger:
    """The ledger in a dict, with KV's expiry honoured on read and KV's list pages."""

    PAGE_SIZE = 1000  # KV's maximum keys per list call

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, float, str | None]] = {}
        self._lock = threading.Lock()

    async def get(self, key: str) -> str | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[1] < time.time():
            return None
        return entry[0]

    async def put(
        self, key: str, value: str, ttl_seconds: int, metadata: str | None = None
    ) -> None:
        with self._lock:
            self._entries[key] = (value, time.time() + ttl_seconds, metadata)

    async def list(self, prefix: str, cursor: str | None, limit: int = PAGE_SIZE) -> LedgerPage:
        # KV lists keys in lexicographic order; the cursor here is the last key returned.
        now = time.time()
        with self._lock:
            keys = sorted(
                key
                for key, (_, expires, _) in self._entries.items()
                if key.startswith(prefix) and expires >= now and (cursor is None or key > cursor)
            )
            size = max(1, min(self.PAGE_SIZE, limit))
            page = keys[:size]
            entries = tuple((key, self._entries[key][2]) for key in page)
        more = len(keys) > size
        return LedgerPage(entries=entries, cursor=page[-1] if more else None)

    async def delete(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def snapshot(self) -> dict[str, str]:
        with self._lock:
            return {key: value for key, (value, _, _) in self._entries.items()}


def make_server(
    settings: Settings,
    ports: Ports,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    log: Any = None,
) -> ThreadingHTTPServer:
    """An HTTP server answering with :func:`handle`; call ``serve_forever()`` on it."""
    log_stream = log if log is not None else sys.stdout

    class Handler(BaseHTTPRequestHandler):
        # The socket timeout (StreamRequestHandler.setup applies it): a slow or silent client
        # is dropped instead of holding its thread for ever.
        timeout = SOCKET_TIMEOUT_SECONDS

        def log_message(self, format: str, *args: Any) -> None:
            return  # one structured line per delivery is logged below instead

        def _serve(self) -> None:
            problem = header_problem(self.headers)
            if problem is not None:
                # The body's length is in doubt: answer and close, never parse what follows.
                self.close_connection = True
                document = {"outcome": "rejected", "reason": problem}
                log = {"msg": "delivery", "path": self.path[:100], "status": 400, "reason": problem}
                self._answer(400, document, log, ())
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            body: bytes | None = None
            if declared_too_large(headers):
                self.close_connection = True  # the unread body must not be parsed as a request
            else:
                length = headers.get("content-length", "0").strip()
                body = self.rfile.read(int(length)) if length else b""
            request = IncomingRequest(
                method=self.command, path=urlsplit(self.path).path, headers=headers, body=body
            )
            reply = asyncio.run(handle(request, settings, ports, utc_now()))
            self._answer(
                reply.status,
                reply.document,
                reply.log,
                reply.headers,
                reply.text,
                reply.content_type,
            )

        def _answer(
            self,
            status: int,
            document: Mapping[str, Any],
            log: Mapping[str, Any],
            extra_headers: tuple[tuple[str, str], ...],
            text: str | None = None,
            content_type: str = "application/json",
        ) -> None:
            # Log before answering: whoever reads the log after the answer finds the line there.
            print(json.dumps(log, sort_keys=True), file=log_stream, flush=True)
            payload = text.encode() if text is not None else json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra_headers:
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def load_settings(
    environ: Mapping[str, str], *, config: Path | None, routing: Path | None
) -> Settings:
    """Settings from environment variables plus the routing from a config or routing file."""
    if routing is not None:
        routing_text = routing.read_text()
    elif config is not None:
        from config import load_config  # the project's typed configuration (repo root)

        routing_text = load_config(config).routing().to_json()
    else:
        raise ConfigurationError("give --config FILE or --routing FILE")

    def lookup(name: str) -> str | None:
        return routing_text if name == contract.ROUTING_BINDING else environ.get(name)

    return settings_from_bindings(lookup)


def reconcile_once(
    settings: Settings, github: GitHubReadSettings, ports: Ports, *, slot: int | None = None
) -> ReconcileReport:
    """One reconciler run, as the Worker's Cron Trigger does it, through urllib. ``slot`` is
    the run's number (the rotation's place); by default the current minute's."""
    transport = ports.transport
    assert isinstance(transport, UrllibTransport)
    now = utc_now()
    slot = run_slot(now) if slot is None else slot
    return asyncio.run(reconcile(settings, github, ports, transport, now, slot=slot))


def _reconcile_forever(
    settings: Settings, github: GitHubReadSettings, ports: Ports, every: float, log: Any
) -> None:
    while True:
        time.sleep(every)
        try:
            # As a Cron Trigger's scheduled time does: consecutive runs, consecutive slots.
            report = reconcile_once(settings, github, ports, slot=int(time.time() // every))
        except Exception as error:  # keep the loop alive; the type says enough
            print(json.dumps({"msg": "reconcile failed", "error": type(error).__name__}), file=log)
            continue
        print(json.dumps(report.to_log(), sort_keys=True), file=log, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="project config file (TOML)")
    source.add_argument("--routing", type=Path, help="routing JSON document instead of a config")
    parser.add_argument("--host", default="127.0.0.1")
    reconciling = parser.add_mutually_exclusive_group()
    reconciling.add_argument(
        "--reconcile-once",
        action="store_true",
        help="run the reconciler once (GITHUB_API_URL, GITHUB_READ_TOKEN), print its report, exit",
    )
    reconciling.add_argument(
        "--reconcile-every",
        type=float,
        metavar="SECONDS",
        help="while serving, also run the reconciler every SECONDS (as the Cron Trigger does)",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings(os.environ, config=args.config, routing=args.routing)
        port = int(os.environ.get("PORT", DEFAULT_PORT))
        github = (
            github_settings_from_bindings(os.environ.get)
            if args.reconcile_once or args.reconcile_every
            else None
        )
    except (ConfigurationError, ValueError, OSError) as error:
        print(f"serve-handler: {error}", file=sys.stderr)
        return 2
    transport = UrllibTransport()
    read = settings.github_read  # GITHUB_API_URL + GITHUB_READ_TOKEN, when both are set
    credential = None if read is None else GitHubCredential(api_url=read.api_url, token=read.token)
    ports = Ports(
        transport=transport,
        ledger=MemoryLedger(),
        monotonic=time.monotonic,
        run_origins=RunOriginCache(),
        # /status shows the read token's quota, as the Worker does.
        github_rate_limit=(
            None
            if credential is None
            else lambda: credential.rate_limit(transport, time.time(), time.monotonic())
        ),
    )
    if args.reconcile_once:
        assert github is not None
        report = reconcile_once(settings, github, ports)
        print(json.dumps(report.to_log(), sort_keys=True), flush=True)
        return 1 if report.stopped == "credentials" else 0
    if args.reconcile_every:
        assert github is not None
        threading.Thread(
            target=_reconcile_forever,
            args=(settings, github, ports, max(args.reconcile_every, 1.0), sys.stdout),
            daemon=True,
        ).start()
    server = make_server(settings, ports, host=args.host, port=port)
    bound = server.server_address[1]
    print(
        f"serving the dispatch handler on http://{args.host}:{bound}", file=sys.stderr, flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
