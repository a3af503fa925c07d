"""The stand-ins' read-only endpoints doctor relies on answer as the real services do.

Nomad (read from its source at 2.0.x): ``/v1/status/leader`` checks no ACL; a Variable read is
refused before the lookup; a Variables listing is silently filtered; a client token lists and
reads only its own policies; the origin address has no Access gate. GitHub: hooks and their
deliveries need "Webhooks: read"; the releases list is public.
"""

import json
import urllib.error
import urllib.request

import pytest

from tests.standins.github import GitHubStandIn
from tests.standins.nomad import ACCESS_CLIENT_ID, ACCESS_CLIENT_SECRET, AclPolicy, NomadStandIn

MANAGEMENT = "management-token-for-standin-tests"
CLIENT = "client-token-for-standin-tests"
ACCESS = {"CF-Access-Client-Id": ACCESS_CLIENT_ID, "CF-Access-Client-Secret": ACCESS_CLIENT_SECRET}
PATH = "nomad/jobs/runner/runner/register"


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def nomad():
    with NomadStandIn(token=MANAGEMENT) as stand_in:
        stand_in.add_policy(
            AclPolicy(
                "dispatch",
                namespaces={"github-runners": ("dispatch-job", "read-job")},
                variables={"github-runners": {"nomad/jobs/other/*": ("list",)}},
            )
        )
        stand_in.add_policy(AclPolicy("someone-elses", namespaces={"*": ("submit-job",)}))
        stand_in.add_acl_token(CLIENT, policies=("dispatch",))
        stand_in.put_variable(PATH, {"github_token": "secret-value"})
        stand_in.put_variable("nomad/jobs/other/x", {"k": "v"})
        stand_in.register_job("runner")
        yield stand_in


def as_client(nomad, path):
    return get(f"{nomad.origin_url}{path}", {"X-Nomad-Token": CLIENT})


class TestNomad:
    def test_status_leader_needs_no_token(self, nomad):
        assert get(f"{nomad.origin_url}/v1/status/leader") == (200, b'"10.0.0.1:4647"')

    def test_without_a_leader_status_leader_is_a_plain_text_500(self, nomad):
        """Nomad forwards Status.Leader to the leader: none gives structs.ErrNoLeader, not ""."""
        leader, nomad.leader = nomad.leader, ""
        try:
            assert get(f"{nomad.origin_url}/v1/status/leader") == (500, b"No cluster leader")
        finally:
            nomad.leader = leader

    def test_the_api_hostname_is_gated_and_the_origin_is_not(self, nomad):
        assert get(f"{nomad.url}/v1/status/leader")[0] == 403
        assert get(f"{nomad.url}/v1/status/leader", ACCESS)[0] == 200

    def test_a_variable_read_is_refused_before_the_lookup(self, nomad):
        assert as_client(nomad, f"/v1/var/{PATH}?namespace=github-runners") == (
            403,
            b"Permission denied",
        )
        assert as_client(nomad, "/v1/var/nope?namespace=github-runners")[0] == 403

    def test_management_reads_a_variable_or_gets_404(self, nomad):
        headers = {"X-Nomad-Token": MANAGEMENT}
        status, body = get(f"{nomad.origin_url}/v1/var/{PATH}?namespace=github-runners", headers)
        assert status == 200 and json.loads(body)["Items"] == {"github_token": "secret-value"}
        missing = get(f"{nomad.origin_url}/v1/var/nope?namespace=github-runners", headers)
        assert missing == (404, b"variable not found")

    def test_a_listing_is_filtered_and_carries_no_items(self, nomad):
        status, body = as_client(nomad, "/v1/vars?namespace=github-runners&prefix=nomad/jobs/")
        assert status == 200 and [item["Path"] for item in json.loads(body)] == [
            "nomad/jobs/other/x"
        ]
        assert "Items" not in json.loads(body)[0]

    def test_job_capabilities_are_enforced(self, nomad):
        assert as_client(nomad, "/v1/job/runner?namespace=github-runners")[0] == 200
        assert as_client(nomad, "/v1/jobs?namespace=github-runners")[0] == 403  # no list-jobs
        assert as_client(nomad, "/v1/job/runner?namespace=default")[0] == 403

    def test_a_client_token_sees_only_its_own_policies(self, nomad):
        status, body = as_client(nomad, "/v1/acl/policies")
        assert status == 200 and [stub["Name"] for stub in json.loads(body)] == ["dispatch"]
        status, body = as_client(nomad, "/v1/acl/policy/dispatch")
        rules = json.loads(body)["RulesJSON"]["Namespaces"][0]
        assert rules["Name"] == "github-runners"
        assert rules["Capabilities"] == ["dispatch-job", "read-job"]
        assert as_client(nomad, "/v1/acl/policy/someone-elses")[0] == 403

    def test_token_self(self, nomad):
        status, body = as_client(nomad, "/v1/acl/token/self")
        assert status == 200
        assert json.loads(body)["Type"] == "client"
        assert json.loads(body)["Policies"] == ["dispatch"]

    def test_members_and_nodes_need_node_read(self, nomad):
        assert as_client(nomad, "/v1/agent/members")[0] == 403
        assert as_client(nomad, "/v1/nodes")[0] == 403
        headers = {"X-Nomad-Token": MANAGEMENT}
        assert get(f"{nomad.origin_url}/v1/agent/members", headers)[0] == 200


@pytest.fixture(scope="module")
def github():
    tokens = {"hooks": {"o/r": "hooks"}, "runner": {"o/r": "admin"}}
    with GitHubStandIn(tokens=tokens) as stand_in:
        hook = stand_in.add_hook("o/r", "https://hooks.example.com/webhook/o/r")
        stand_in.add_delivery(hook, 202, delivered_at="2026-11-30T10:00:00Z")
        stand_in.add_delivery(hook, 503, delivered_at="2026-11-30T11:00:00Z")
        stand_in.add_release("v2.330.0", "2026-11-20T10:00:00Z")
        stand_in.hook = hook
        yield stand_in


class TestGitHub:
    def test_hooks_need_webhooks_permission(self, github):
        assert get(f"{github.url}/repos/o/r/hooks", {"Authorization": "Bearer runner"})[0] == 403
        status, body = get(f"{github.url}/repos/o/r/hooks", {"Authorization": "Bearer hooks"})
        hook = json.loads(body)[0]
        assert status == 200 and hook["config"]["secret"] == "********"
        assert hook["events"] == ["workflow_job"] and hook["config"]["insecure_ssl"] == "0"

    def test_deliveries_are_newest_first(self, github):
        url = f"{github.url}/repos/o/r/hooks/{github.hook}/deliveries"
        status, body = get(url, {"Authorization": "Bearer hooks"})
        assert status == 200
        assert [item["status_code"] for item in json.loads(body)] == [503, 202]
        assert (
            get(f"{github.url}/repos/o/r/hooks/999/deliveries", {"Authorization": "Bearer hooks"})[
                0
            ]
            == 404
        )

    def test_releases_are_public_but_refuse_a_bad_token(self, github):
        status, body = get(f"{github.url}/repos/actions/runner/releases")
        assert status == 200 and json.loads(body)[0]["tag_name"] == "v2.330.0"
        bad = {"Authorization": "Bearer nope"}
        assert get(f"{github.url}/repos/actions/runner/releases", bad)[0] == 401
