"""A stand-in for a Docker daemon's API endpoint as the dind runner's wait sees it, for tests.

Only ``GET /_ping`` matters, answered the way dockerd answers it: 200 with the body ``OK``
(``text/plain; charset=utf-8``) and the ``Api-Version``, ``Docker-Experimental`` and ``Ostype``
headers. Before the daemon is up its TCP port refuses connections (the port is held by a socket
that is bound but not listening, as when dockerd has not opened its listener yet). Behaviours a
test can pick: up after a delay, never up, up but never answering (a hung daemon), or answering
errors and then gone (a daemon dying while it starts).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "1.52"


class DockerDaemonStandIn:
    """``with DockerDaemonStandIn(...) as daemon:``; ``daemon.host`` is its ``tcp://`` address.

    ``up_after``: seconds until it listens (None: never). ``hang``: once up, accept connections
    and never answer. ``error_status``: once up, answer pings with this status for
    ``error_seconds``, then stop listening for good.
    """

    def __init__(
        self,
        *,
        up_after: float | None = 0.0,
        hang: bool = False,
        error_status: int | None = None,
        error_seconds: float = 1.0,
    ) -> None:
        self.up_after = up_after
        self.hang = hang
        self.error_status = error_status
        self.error_seconds = error_seconds
        self.pings: list[tuple[float, int]] = []  # (time, status) of every answered ping
        self._holder = socket.socket()
        self._holder.bind(("127.0.0.1", 0))
        self.port: int = self._holder.getsockname()[1]
        self._server: ThreadingHTTPServer | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def first_ok(self) -> float | None:
        return next((when for when, status in self.pings if status == 200), None)

    def __enter__(self) -> DockerDaemonStandIn:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)
        self._shutdown()
        self._holder.close()

    def _run(self) -> None:
        if self.up_after is None or self._stopped.wait(self.up_after):
            return  # never up: the bound, non-listening socket keeps refusing connections
        if self.hang:
            self._holder.listen(16)  # accepted by the kernel, never read or answered
            self._stopped.wait()
            return
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/_ping":
                    self._answer(404, b'{"message":"page not found"}', "application/json")
                    return
                if stand_in.error_status is not None:
                    body = b'{"message":"daemon is not ready"}'
                    self._answer(stand_in.error_status, body, "application/json")
                    return
                self._answer(200, b"OK", "text/plain; charset=utf-8")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                stand_in.pings.append((time.time(), status))
                self.send_response(status)
                self.send_header("Api-Version", API_VERSION)
                self.send_header("Docker-Experimental", "false")
                self.send_header("Ostype", "linux")
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        # The held socket becomes the server's: the port never changes hands.
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler, False)
        self._server.socket.close()
        self._server.socket = self._holder
        self._server.server_activate()
        serving = threading.Thread(target=self._server.serve_forever, daemon=True)
        serving.start()
        if self.error_status is not None:
            self._stopped.wait(self.error_seconds)
            self._shutdown()  # the daemon died: connections are refused from now on
            return
        self._stopped.wait()

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
