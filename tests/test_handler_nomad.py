"""handler.nomad: the dispatch request we build, and how Nomad's answers are read."""

import json
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from handler.nomad import (
    DispatchAccepted,
    NomadBadResponse,
    NomadCredentials,
    NomadDispatchRejected,
    NomadPermissionDenied,
    dispatch_request,
    interpret_children_response,
    interpret_dispatch_response,
    interpret_job_status,
    job_request,
    repository_children_request,
)

CREDENTIALS = NomadCredentials("nomad-secret", "access-id", "access-secret")
META = {"github_repository": "o/r", "github_job_id": "7", "github_run_id": "8", "runner_pool": "p"}


def build(**overrides):
    arguments = {
        "nomad_addr": "https://nomad-api.example.com/",
        "namespace": "github-runners",
        "nomad_job": "github-runner-linux",
        "meta": META,
        "idempotency_token": "7",
        "credentials": CREDENTIALS,
    }
    arguments.update(overrides)
    return dispatch_request(**arguments)


class TestDispatchRequest:
    def test_method_url_and_query(self):
        request = build()
        parts = urlsplit(request.url)
        assert request.method == "POST"
        assert (parts.scheme, parts.netloc) == ("https", "nomad-api.example.com")
        assert parts.path == "/v1/job/github-runner-linux/dispatch"
        assert parse_qs(parts.query) == {
            "namespace": ["github-runners"],
            "idempotency_token": ["7"],
        }

    def test_headers_carry_nomad_and_access_credentials(self):
        headers = dict(build().headers)
        assert headers["X-Nomad-Token"] == "nomad-secret"
        assert headers["CF-Access-Client-Id"] == "access-id"
        assert headers["CF-Access-Client-Secret"] == "access-secret"
        assert headers["Content-Type"] == "application/json"

    def test_body_is_meta_only_and_holds_no_secret(self):
        request = build(id_prefix="gh7")
        document = json.loads(request.body)
        assert document == {"Meta": META, "IdPrefixTemplate": "gh7"}
        for secret in ("nomad-secret", "access-secret"):
            assert secret.encode() not in request.body
            assert secret not in request.url

    def test_repr_hides_the_credentials(self):
        text = repr(build()) + repr(CREDENTIALS)
        assert "nomad-secret" not in text and "access-secret" not in text

    def test_job_id_is_path_escaped(self):
        assert "/v1/job/a%2Fb/dispatch" in build(nomad_job="a/b").url


class TestInterpretResponse:
    def test_new_child(self):
        body = json.dumps(
            {
                "Index": 9,
                "JobCreateIndex": 9,
                "EvalCreateIndex": 9,
                "EvalID": "e1",
                "DispatchedJobID": "job/dispatch-1700000000-0123abcd",
            }
        ).encode()
        assert interpret_dispatch_response(200, body) == DispatchAccepted(
            child_id="job/dispatch-1700000000-0123abcd", replay=False, eval_id="e1"
        )

    def test_idempotent_replay_has_an_empty_eval_id(self):
        body = b'{"EvalID": "", "EvalCreateIndex": 0, "DispatchedJobID": "job/dispatch-1-ab"}'
        accepted = interpret_dispatch_response(200, body)
        assert accepted.replay and accepted.child_id == "job/dispatch-1-ab"

    def test_permission_denied(self):
        with pytest.raises(NomadPermissionDenied) as caught:
            interpret_dispatch_response(403, b"Permission denied")
        assert caught.value.reason == "Permission denied" and not caught.value.retryable

    def test_plain_text_500_keeps_the_reason(self):
        reason = b"Dispatch did not provide required meta keys: [github_run_id]"
        with pytest.raises(NomadDispatchRejected) as caught:
            interpret_dispatch_response(500, reason)
        assert "github_run_id" in caught.value.reason and caught.value.retryable

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            (200, b"<html>"),
            (200, b"[]"),
            (200, b'{"EvalID": "x"}'),
            (502, b"Bad gateway"),
            (302, b""),
        ],
    )
    def test_answers_nomad_never_gives(self, status, body):
        with pytest.raises(NomadBadResponse):
            interpret_dispatch_response(status, body)

    def test_long_reasons_are_shortened(self):
        with pytest.raises(NomadDispatchRejected) as caught:
            interpret_dispatch_response(500, b"x" * 10000)
        assert len(caught.value.reason) <= 300


class TestChildStatus:
    def test_request_reads_the_child_in_the_namespace_with_both_credentials(self):
        request = job_request(
            nomad_addr="https://nomad-api.example.com/",
            namespace="github-runners",
            job_id="github-runner-linux/dispatch-gh7-1700000000-0a1b2c3d",
            credentials=CREDENTIALS,
        )
        assert (request.method, request.body) == ("GET", b"")
        assert request.url == (
            "https://nomad-api.example.com/v1/job/"
            "github-runner-linux%2Fdispatch-gh7-1700000000-0a1b2c3d?namespace=github-runners"
        )
        headers = dict(request.headers)
        assert headers["X-Nomad-Token"] == "nomad-secret"
        assert headers["CF-Access-Client-Secret"] == "access-secret"

    @pytest.mark.parametrize("state", ["pending", "running", "dead"])
    def test_status_of_a_known_child(self, state):
        body = json.dumps({"ID": "j/dispatch-1-ab", "Status": state}).encode()
        assert interpret_job_status(200, body) == state

    def test_unknown_child_is_none(self):
        assert interpret_job_status(404, b"job not found") is None

    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (403, b"Permission denied", NomadPermissionDenied),
            (500, b"rpc error: No cluster leader", NomadDispatchRejected),
            (200, b"{}", NomadBadResponse),
            (302, b"", NomadBadResponse),
        ],
    )
    def test_errors(self, status, body, kind):
        with pytest.raises(kind):
            interpret_job_status(status, body)


class TestRepositoryChildren:
    """The per-repository count: GET /v1/jobs/statuses (read-job), filtered on the dispatch meta."""

    def request(self, repository="Acme/App.js", limit=3):
        return repository_children_request(
            nomad_addr="https://nomad.example.com/",
            namespace="github-runners",
            repository=repository,
            limit=limit,
            credentials=CREDENTIALS_FOR_CHILDREN,
        )

    def test_url_query_and_credentials(self):
        request = self.request()
        parts = urlsplit(request.url)
        assert (request.method, parts.path) == ("GET", "/v1/jobs/statuses")
        query = dict(parse_qsl(parts.query))
        assert query["namespace"] == "github-runners" and query["include_children"] == "true"
        assert query["per_page"] == "3"
        assert query["filter"] == (
            'ParentID != "" and Status != "dead" and '
            'Meta.github_repository matches "(?i)^Acme/App[.]js$"'
        )
        headers = dict(request.headers)
        assert headers["X-Nomad-Token"] == "t" and headers["CF-Access-Client-Secret"] == "s"
        assert request.body == b""

    def test_count_is_the_length_of_the_list(self):
        assert interpret_children_response(200, b'[{"ID": "a"}, {"ID": "b"}]') == 2
        assert interpret_children_response(200, b"[]") == 0

    @pytest.mark.parametrize(
        ("status", "body", "kind"),
        [
            (200, b"{}", NomadBadResponse),
            (200, b"<html>", NomadBadResponse),
            (403, b"Permission denied", NomadPermissionDenied),
            (500, b"failed to create result paginator", NomadDispatchRejected),
        ],
    )
    def test_errors(self, status, body, kind):
        with pytest.raises(kind):
            interpret_children_response(status, body)


CREDENTIALS_FOR_CHILDREN = NomadCredentials(
    nomad_token="t", access_client_id="i", access_client_secret="s"
)
