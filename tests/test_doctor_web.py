"""doctor.web: GET only, every status is an answer, no redirect followed, a private CA added to
the system's (``NOMAD_CACERT``), and no answer at all is ``Unreachable``."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from doctor.web import Unreachable, UrllibHttp


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "https://team.cloudflareaccess.com/cdn-cgi/access/login")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"seen": "%s"}' % self.headers.get("X-Probe", "").encode()
        self.send_response(403 if self.path == "/refused" else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(context: ssl.SSLContext | None = None) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def plain() -> Iterator[str]:
    yield from _serve()


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl, as an operator would)."""
    directory = tmp_path_factory.mktemp("ca")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    new_key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *new_key, "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", *new_key, "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    signed_by_ca = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial")
    openssl("x509", "-req", "-in", "server.csr", *signed_by_ca, "-days", "2",
            "-extfile", "san.cnf", "-out", "server.pem")  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@pytest.fixture
def tls(private_ca) -> Iterator[str]:
    _, cert, key = private_ca
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from _serve(context)


def test_an_error_status_is_an_answer_with_its_body(plain):
    answer = UrllibHttp().get(f"{plain}/refused", {"X-Probe": "p"})
    assert answer.status == 403 and answer.json() == {"seen": "p"}
    assert answer.headers["content-type"] == "application/json"


def test_a_redirect_is_answered_not_followed(plain):
    answer = UrllibHttp().get(f"{plain}/redirect", {})
    assert answer.status == 302 and "cloudflareaccess.com" in answer.headers["location"]


def test_nothing_listening_is_unreachable():
    with pytest.raises(Unreachable, match=r"no answer from http://127\.0\.0\.1:9 "):
        UrllibHttp(timeout=2).get("http://127.0.0.1:9/v1/status/leader", {})


def test_a_private_ca_is_refused_without_ca_file(tls):
    with pytest.raises(Unreachable, match="CERTIFICATE_VERIFY_FAILED"):
        UrllibHttp(timeout=5).get(f"{tls}/ok", {})


def test_ca_file_adds_the_private_ca(tls, private_ca):
    ca, _, _ = private_ca
    assert UrllibHttp(timeout=5, ca_file=str(ca)).get(f"{tls}/ok", {}).status == 200


def test_ca_file_keeps_the_system_cas(private_ca):
    """Adding NOMAD_CACERT must not drop the public CAs GitHub and Cloudflare need: the store
    holds the system's CAs plus the private one."""
    ca, _, _ = private_ca
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    with_ca = UrllibHttp(ca_file=str(ca)).context.cert_store_stats()["x509_ca"]
    assert with_ca == system + 1


def test_the_text_of_an_answer_is_one_bounded_line(plain):
    answer = UrllibHttp().get(f"{plain}/ok", {"X-Probe": "x" * 500})
    assert len(answer.text(50)) == 50 and answer.text(50).endswith("...")
