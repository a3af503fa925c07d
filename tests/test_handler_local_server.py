"""handler.local_server: the CPython adapter answers over real HTTP exactly as the core does."""

import http.client
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from handler.local_server import (
    SOCKET_TIMEOUT_SECONDS,
    MemoryLedger,
    UrllibTransport,
    load_settings,
    main,
    make_server,
)
from handler.service import Ports, settings_from_bindings
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REPO_ROOT,
    bindings,
    delivery,
    register_pools,
    status_headers,
    workflow_job,
)


@pytest.fixture(scope="module")
def served():
    with NomadStandIn() as nomad:
        register_pools(nomad)
        settings = settings_from_bindings(bindings(nomad.url).get)
        ports = Ports(UrllibTransport(), MemoryLedger(), time.monotonic)
        log = io.StringIO()
        server = make_server(settings, ports, port=0, log=log)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1], nomad, log
        finally:
            server.shutdown()
            server.server_close()


def send(port, method, path, headers, body=b""):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def test_signed_delivery_dispatches_and_logs_one_json_line(served):
    port, nomad, log = served
    sent = delivery(workflow_job(job_id=424242))
    status, document = send(port, "POST", sent.path, sent.headers, sent.body)
    assert status == 202 and document["outcome"] == "dispatched"
    assert (
        len(
            [
                c
                for c in nomad.children("github-runner-linux-x64")
                if c.idempotency_token == "424242"
            ]
        )
        == 1
    )
    deadline = time.monotonic() + 5
    while sent.headers["x-github-delivery"] not in log.getvalue() and time.monotonic() < deadline:
        time.sleep(0.02)  # the server logs right after answering, on its own thread
    line = json.loads(log.getvalue().strip().splitlines()[-1])
    assert line["delivery"] == sent.headers["x-github-delivery"] and line["status"] == 202


def test_declared_oversize_body_is_413_without_reading_it(served):
    port, _, _ = served
    sent = delivery(workflow_job())
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("POST", sent.path)
        for name, value in sent.headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(50 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413
    finally:
        connection.close()


def test_health_and_forged_signature(served):
    port, _, _ = served
    assert send(port, "GET", "/healthz", {})[0] == 200
    sent = delivery(workflow_job(), signature="sha256=" + "1" * 64)
    assert send(port, "POST", sent.path, sent.headers, sent.body)[0] == 401


def test_settings_from_the_project_config_and_environment():
    environ = {k: v for k, v in bindings("http://127.0.0.1:4646").items() if k != "ROUTING"}
    settings = load_settings(environ, config=REPO_ROOT / "examples" / "config.toml", routing=None)
    assert [pool.name for pool in settings.routing.pools] == ["linux-x64"]


def test_settings_from_a_routing_file(tmp_path: Path):
    values = bindings("http://127.0.0.1:4646")
    routing_file = tmp_path / "routing.json"
    routing_file.write_text(values.pop("ROUTING"))
    settings = load_settings(values, config=None, routing=routing_file)
    assert settings.routing.namespace == "github-runners"


def test_missing_environment_is_a_clear_error(monkeypatch, capsys, tmp_path):
    for name in ("NOMAD_ADDR", "NOMAD_TOKEN", "WEBHOOK_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    routing_file = tmp_path / "routing.json"
    routing_file.write_text(bindings("http://x")["ROUTING"])
    assert main(["--routing", str(routing_file)]) == 2
    assert "NOMAD_ADDR" in capsys.readouterr().err


def raw_exchange(port, head: bytes, body: bytes = b"", *, timeout=15.0):
    """Send bytes as they are (http.client would refuse or fix them) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head + body)
        chunks = []
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer = b"".join(chunks)
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def signed_head(sent, *, extra: list[tuple[str, str]], length: str | None = None) -> bytes:
    lines = [f"POST {sent.path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in sent.headers.items()]
    lines.append(f"Content-Length: {len(sent.body) if length is None else length}")
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class TestHostileHeaders:
    """What http.server would let the last header win on, or misread, is refused with a 400."""

    @pytest.mark.parametrize(
        "name", ["X-Hub-Signature-256", "X-GitHub-Event", "X-GitHub-Delivery", "Authorization"]
    )
    def test_a_repeated_security_header_is_refused(self, served, name):
        port, nomad, _ = served
        job_id = 434343 + len(name)
        sent = delivery(workflow_job(job_id=job_id))
        # The delivery carries one of each GitHub header; Authorization is sent twice here.
        extra = [(name, sent.headers[name.lower()])] if name.lower() in sent.headers else []
        extra += [] if extra else [(name, "Bearer one"), (name, "Bearer two")]
        before = len(nomad.dispatch_requests())
        status, body = raw_exchange(port, signed_head(sent, extra=extra), sent.body)
        assert status == 400 and json.loads(body)["reason"] == f"duplicate {name} header"
        assert len(nomad.dispatch_requests()) == before

    def test_two_content_lengths_are_refused(self, served):
        port, _, _ = served
        sent = delivery(workflow_job(job_id=454545))
        head = signed_head(sent, extra=[("Content-Length", "2")])
        status, body = raw_exchange(port, head, sent.body)
        assert status == 400 and "Content-Length" in json.loads(body)["reason"]

    @pytest.mark.parametrize("length", ["\u0661\u0662", "+12", "1_0", "12 3", "-1"])
    def test_a_content_length_of_anything_but_ascii_digits_is_refused(self, served, length):
        port, _, _ = served
        sent = delivery(workflow_job(job_id=464646))
        head = signed_head(sent, extra=[], length=length)
        status, body = raw_exchange(port, head, sent.body)
        assert status == 400 and "ASCII digits" in json.loads(body)["reason"]

    def test_a_client_that_goes_silent_is_dropped(self, served, monkeypatch):
        port, _, _ = served
        sent = delivery(workflow_job(job_id=474747))
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
            # Announce a body, then send none of it: the server's read would wait for ever.
            connection.sendall(signed_head(sent, extra=[]))
            assert connection.recv(65536) == b""  # closed by the server, no answer
        waited = time.monotonic() - started
        assert SOCKET_TIMEOUT_SECONDS - 1 < waited < SOCKET_TIMEOUT_SECONDS + 5


def test_status_needs_the_bearer_token_over_http(served):
    port, _, _ = served
    assert send(port, "GET", "/status", {})[0] == 401
    assert send(port, "GET", "/status", {"Authorization": "Bearer nope"})[0] == 401
    status, document = send(port, "GET", "/status", status_headers())
    assert status == 200 and "linux-x64" in document["pools"]
