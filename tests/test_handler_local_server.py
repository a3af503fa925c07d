"""handler.local_server: the CPython adapter answers over real HTTP exactly as the core does."""

import http.client
import io
import json
import threading
import time
from pathlib import Path

import pytest

from handler.local_server import MemoryLedger, UrllibTransport, load_settings, main, make_server
from handler.service import Ports, settings_from_bindings
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import REPO_ROOT, bindings, delivery, register_pools, workflow_job


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
