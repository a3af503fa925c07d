"""A GitHub App's Worker in the real Workers runtime (wrangler 3.92.0, workerd, Pyodide).

The Worker is bound to the App's id, installation id and PKCS#1 private key as GitHub hands it
out; it must convert the key, import it into WebCrypto, sign the JWT (RS256), buy an installation
token from the GitHub stand-in (which verifies the signature with the App's public key through
the openssl CLI), then read with that token: ``/status`` shows the installation's quota, a Cron
Trigger run and a webhook's fork check reuse the same token from the isolate's memory.
"""

import json
import urllib.request

import pytest

from tests.app_keys import app_key
from tests.standins.github import INSTALLATION_RATE_LIMIT, GitHubStandIn, Installation
from tests.standins.nomad import NomadStandIn
from tests.standins.webhooks import (
    REFUSING_FORKS,
    REPOSITORY,
    bindings,
    delivery,
    register_pools,
    status_headers,
    workflow_job,
)
from tests.worker_runtime.harness import WRANGLER, LocalWorker

APP_ID = 31337
INSTALLATION_ID = 5150


def get(worker, path, headers=None):
    request = urllib.request.Request(worker.url + path, headers=headers or {})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, response.read().decode()


def test_the_worker_signs_with_webcrypto_and_reads_with_its_installation_token(tmp_path):
    if not WRANGLER.exists():  # fail, not skip: `make test` always installs it
        pytest.fail("wrangler is not installed: run `make install` (make test does)")
    key = app_key()
    installation = Installation(APP_ID, {REPOSITORY.lower(): "actions_read"})
    with (
        GitHubStandIn(
            tokens={},
            apps={APP_ID: key.public_pem},
            installations={INSTALLATION_ID: installation},
        ) as github,
        NomadStandIn() as nomad,
    ):
        register_pools(nomad)
        github.queue_job(REPOSITORY, workflow_job(job_id=9301, run_id=9400)["workflow_job"])
        values = bindings(nomad.url) | {
            "ROUTING": REFUSING_FORKS.to_json(),  # webhooks look their run up
            "GITHUB_API_URL": github.url,
            "GITHUB_APP_ID": str(APP_ID),
            "GITHUB_APP_INSTALLATION_ID": str(INSTALLATION_ID),
            "GITHUB_APP_PRIVATE_KEY": key.private_pem.decode(),
        }
        with LocalWorker(values, tmp_path) as worker:
            status, text = get(worker, "/status", status_headers())
            assert status == 200, text
            quota = json.loads(text)["github_rate_limit"]
            assert quota["credential"] == "app", quota
            assert quota["limit"] == INSTALLATION_RATE_LIMIT
            [exchange] = github.calls("POST")
            assert exchange.path == f"/app/installations/{INSTALLATION_ID}/access_tokens"
            [jwt] = github.jwts
            assert jwt["header"]["alg"] == "RS256" and jwt["claims"]["iss"] == str(APP_ID)
            [token] = github.issued

            path = "/__test/scheduled?time=1796000100000&cron=%2A%2F5+%2A+%2A+%2A+%2A"
            assert get(worker, path)[0] == 200
            # The run read with the isolate's token: no second exchange.
            assert len(github.calls("POST")) == 1
            runs = [c for c in github.calls("GET") if "/actions/runs" in c.path]
            assert runs and {c.headers["authorization"] for c in runs} == {f"Bearer {token}"}
            children = nomad.children("github-runner-linux-x64")
            assert [child.idempotency_token for child in children] == ["9301"]

            # A webhook's fork check: one run lookup with the same token, then the dispatch.
            payload = workflow_job(job_id=9302, run_id=9401)
            github.queue_job(REPOSITORY, payload["workflow_job"])
            sent = delivery(payload)
            request = urllib.request.Request(
                worker.url + sent.path, data=sent.body, headers=sent.headers, method="POST"
            )
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 202
                assert json.loads(response.read())["outcome"] == "dispatched"
            [lookup] = [c for c in github.calls("GET") if c.path.endswith("/actions/runs/9401")]
            assert lookup.headers["authorization"] == f"Bearer {token}"
            assert len(github.calls("POST")) == 1
            tokens = sorted(
                child.idempotency_token for child in nomad.children("github-runner-linux-x64")
            )
            assert tokens == ["9301", "9302"]

            output = worker.output()
            assert token not in output
            for line in key.body_lines():
                assert line not in output
