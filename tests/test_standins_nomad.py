"""tests.standins.nomad: the Nomad stand-in itself follows the documented contract."""

import base64
import json
import urllib.error
import urllib.request

import pytest

from tests.standins.nomad import ACCESS_CLIENT_ID, ACCESS_CLIENT_SECRET, NOMAD_TOKEN, NomadStandIn

GOOD = {
    "X-Nomad-Token": NOMAD_TOKEN,
    "CF-Access-Client-Id": ACCESS_CLIENT_ID,
    "CF-Access-Client-Secret": ACCESS_CLIENT_SECRET,
}
META = {"a": "1", "b": "2"}


def call(nomad, method, path, body=None, headers=GOOD):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(nomad.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def nomad():
    with NomadStandIn() as stand_in:
        stand_in.register_job("runner", meta_required=("a", "b"), meta_optional=("c",))
        stand_in.register_job("with-payload", payload="optional")
        stand_in.register_job("service", parameterized=False)
        yield stand_in


DISPATCH = "/v1/job/runner/dispatch?namespace=github-runners"


def test_dispatch_creates_a_child_named_like_nomad(nomad):
    status, body = call(nomad, "POST", DISPATCH, {"Meta": META})
    answer = json.loads(body)
    assert status == 200 and answer["EvalID"] and answer["EvalCreateIndex"] > 0
    assert answer["DispatchedJobID"].startswith("runner/dispatch-")
    assert len(answer["DispatchedJobID"].rsplit("-", 1)[1]) == 8


def test_id_prefix_template_goes_into_the_child_id(nomad):
    status, body = call(nomad, "POST", DISPATCH, {"Meta": META, "IdPrefixTemplate": "gh9"})
    assert status == 200 and "/dispatch-gh9-" in json.loads(body)["DispatchedJobID"]


@pytest.mark.parametrize("where", ["query", "body"])
def test_idempotency_token_replays_the_same_child(nomad, where):
    token = f"token-{where}"
    path = DISPATCH + (f"&idempotency_token={token}" if where == "query" else "")
    body = {"Meta": META} | ({"IdempotencyToken": token} if where == "body" else {})
    first = json.loads(call(nomad, "POST", path, body)[1])
    second = json.loads(call(nomad, "POST", path, body)[1])
    assert second["DispatchedJobID"] == first["DispatchedJobID"]
    assert (second["EvalID"], second["EvalCreateIndex"]) == ("", 0)
    children = [c for c in nomad.children("runner") if c.idempotency_token == token]
    assert len(children) == 1


def test_token_stays_taken_while_the_child_is_dead_and_frees_after_purge(nomad):
    path = DISPATCH + "&idempotency_token=gc-me"
    child = json.loads(call(nomad, "POST", path, {"Meta": META})[1])["DispatchedJobID"]
    nomad.set_status(child, "dead")
    assert json.loads(call(nomad, "POST", path, {"Meta": META})[1])["DispatchedJobID"] == child
    assert call(nomad, "DELETE", f"/v1/job/{child}?namespace=github-runners&purge=true")[0] == 200
    assert json.loads(call(nomad, "POST", path, {"Meta": META})[1])["DispatchedJobID"] != child


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/v1/job/nope/dispatch?namespace=github-runners", {"Meta": META}, b"job not found"),
        ("/v1/job/service/dispatch?namespace=github-runners", {}, b"not a parameterized job"),
        ("/v1/job/runner/dispatch", {"Meta": META}, b"job not found"),  # default namespace
        (DISPATCH, {"Meta": {"a": "1"}}, b"required meta keys: ['b']"),
        (DISPATCH, {"Meta": META | {"zzz": "1"}}, b"unpermitted metadata keys: ['zzz']"),
        (DISPATCH, {"Meta": META, "Payload": base64.b64encode(b"x").decode()}, b"not allowed"),
        (
            "/v1/job/with-payload/dispatch?namespace=github-runners",
            {"Payload": base64.b64encode(b"x" * 16385).decode()},
            b"16385 > 16384",
        ),
    ],
)
def test_dispatch_errors_are_plain_text_500s(nomad, path, body, reason):
    status, answer = call(nomad, "POST", path, body)
    assert status == 500 and reason in answer


def test_payload_at_the_limit_is_accepted(nomad):
    path = "/v1/job/with-payload/dispatch?namespace=github-runners"
    body = {"Payload": base64.b64encode(b"x" * 16384).decode()}
    assert call(nomad, "POST", path, body)[0] == 200


def test_bad_nomad_token_is_permission_denied(nomad):
    status, body = call(nomad, "POST", DISPATCH, {"Meta": META}, GOOD | {"X-Nomad-Token": "x"})
    assert (status, body) == (403, b"Permission denied")


def test_bearer_token_is_accepted(nomad):
    headers = {k: v for k, v in GOOD.items() if k != "X-Nomad-Token"}
    headers["Authorization"] = f"Bearer {NOMAD_TOKEN}"
    assert call(nomad, "POST", DISPATCH, {"Meta": META}, headers)[0] == 200


@pytest.mark.parametrize("drop", ["CF-Access-Client-Id", "CF-Access-Client-Secret"])
def test_access_gate_refuses_without_service_token_headers(nomad, drop):
    before = len(nomad.children("runner"))
    headers = {k: v for k, v in GOOD.items() if k != drop}
    status, body = call(nomad, "POST", DISPATCH, {"Meta": META}, headers)
    assert status == 403 and b"Access" in body
    assert len(nomad.children("runner")) == before


def test_listing_reading_summary_and_stopping(nomad):
    child = json.loads(call(nomad, "POST", DISPATCH, {"Meta": META})[1])["DispatchedJobID"]
    status, body = call(nomad, "GET", "/v1/jobs?prefix=runner/dispatch-&namespace=github-runners")
    stubs = json.loads(body)
    assert status == 200 and child in [stub["ID"] for stub in stubs]
    assert all(stub["ParentID"] == "runner" and "Meta" not in stub for stub in stubs)
    status, body = call(nomad, "GET", f"/v1/job/{child}?namespace=github-runners")
    assert status == 200 and json.loads(body)["Meta"] == META
    assert call(nomad, "GET", "/v1/job/unknown?namespace=github-runners")[0] == 404
    summary = json.loads(call(nomad, "GET", "/v1/job/runner/summary?namespace=github-runners")[1])
    assert summary["Children"]["Pending"] >= 1
    status, body = call(nomad, "DELETE", f"/v1/job/{child}?namespace=github-runners")
    assert status == 200 and json.loads(body)["EvalID"]
    assert nomad.jobs[("github-runners", child)].status == "dead"
    status, body = call(nomad, "DELETE", "/v1/job/unknown?namespace=github-runners")
    assert status == 200 and json.loads(body)["EvalID"] == ""


def test_every_request_is_recorded(nomad):
    before = len(nomad.requests)
    call(nomad, "GET", "/v1/jobs?namespace=github-runners")
    assert len(nomad.requests) == before + 1 and nomad.requests[-1].path == "/v1/jobs"


def test_fault_switches(nomad):
    with nomad.faulty("500"):
        status, body = call(nomad, "POST", DISPATCH, {"Meta": META})
        assert status == 500 and body
    with nomad.faulty("403"):
        assert call(nomad, "POST", DISPATCH, {"Meta": META})[0] == 403
    nomad.one_shot_faults.append("down")
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        call(nomad, "POST", DISPATCH, {"Meta": META})
    assert call(nomad, "POST", DISPATCH, {"Meta": META})[0] == 200


def test_each_endpoint_needs_the_capability_nomad_checks_for_it():
    """A token with dispatch-job and read-job only (the Worker's policy): listing is refused."""
    with NomadStandIn(capabilities=("dispatch-job", "read-job")) as nomad:
        nomad.register_job("runner", meta_required=("a", "b"))
        status, body = call(nomad, "POST", DISPATCH, {"Meta": META})
        assert status == 200
        child = json.loads(body)["DispatchedJobID"]
        assert call(nomad, "GET", f"/v1/job/{child}?namespace=github-runners")[0] == 200
        assert call(nomad, "GET", "/v1/job/runner/summary?namespace=github-runners")[0] == 200
        listing = call(nomad, "GET", "/v1/jobs?prefix=runner&namespace=github-runners")
        assert listing == (403, b"Permission denied")
        # The per-repository count's list needs read-job only.
        statuses = "/v1/jobs/statuses?namespace=github-runners&include_children=true"
        assert call(nomad, "GET", statuses)[0] == 200
        assert call(nomad, "DELETE", f"/v1/job/{child}?namespace=github-runners")[0] == 403
    with NomadStandIn(capabilities=("read-job",)) as nomad:
        nomad.register_job("runner", meta_required=("a", "b"))
        assert call(nomad, "POST", DISPATCH, {"Meta": META}) == (403, b"Permission denied")


class TestJobStatuses:
    """GET /v1/jobs/statuses: children with include_children, the filter over Meta, per_page."""

    def dispatch(self, nomad, repository, token):
        meta = {"a": "1", "b": repository}
        path = DISPATCH + f"&idempotency_token={token}"
        return json.loads(call(nomad, "POST", path, {"Meta": meta})[1])["DispatchedJobID"]

    def statuses(self, nomad, **query):
        from urllib.parse import urlencode

        status, body = call(nomad, "GET", "/v1/jobs/statuses?" + urlencode(query))
        return status, json.loads(body) if status == 200 else body.decode()

    def test_children_only_when_asked_and_the_filter_sees_meta(self, nomad):
        mine = self.dispatch(nomad, "Acme/App.js", "st-1")
        self.dispatch(nomad, "acme/other", "st-2")
        status, listed = self.statuses(nomad, namespace="github-runners")
        assert status == 200 and all(job["ParentID"] == "" for job in listed)
        status, listed = self.statuses(
            nomad,
            namespace="github-runners",
            include_children="true",
            filter='ParentID != "" and Meta.b matches "(?i)^acme/app[.]js$"',
        )
        assert [job["ID"] for job in listed] == [mine]

    def test_dead_children_can_be_left_out_and_per_page_cuts_the_list(self, nomad):
        first = self.dispatch(nomad, "acme/many", "st-3")
        self.dispatch(nomad, "acme/many", "st-4")
        self.dispatch(nomad, "acme/many", "st-5")
        nomad.set_status(first, "dead")
        where = 'Status != "dead" and Meta.b == "acme/many"'
        query = {"namespace": "github-runners", "include_children": "true", "filter": where}
        assert len(self.statuses(nomad, **query)[1]) == 2
        assert len(self.statuses(nomad, **query, per_page="1")[1]) == 1

    def test_a_missing_meta_key_matches_nothing_and_a_bad_filter_is_a_500(self, nomad):
        query = {"namespace": "github-runners", "include_children": "true"}
        assert self.statuses(nomad, **query, filter='Meta.zzz == "x"')[1] == []
        status, reason = self.statuses(nomad, **query, filter="Meta.b ~~ 1")
        assert status == 500 and "failed to read filter expression" in reason
