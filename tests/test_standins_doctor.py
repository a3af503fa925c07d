"""The stand-ins' read-only endpoints doctor relies on answer as the real services do.

Nomad (read from its source at 2.0.x): ``/v1/status/leader`` checks no ACL; a Variable read is
refused before the lookup; a Variables listing is silently filtered; a client token lists and
reads only its own policies; the origin address has no Access gate. GitHub: hooks and their
deliveries need "Webhooks: read"; the releases list is public. GitHub Apps: the token answer's
``permissions`` in GitHub's names, the installation's repositories, organization runner groups
and their repository lists (GitHub's REST docs for Apps and for self-hosted runner groups).
"""

import json
import time
import urllib.error
import urllib.request

import pytest

from doctor.github_app import app_jwt
from tests.app_keys import app_key
from tests.standins.github import GitHubStandIn, Installation
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


APP_ID = 4242
INSTALLATION_ID = 777


@pytest.fixture
def app_github():
    """An App installed on o/r and o/s with Actions and Webhooks, and Self-hosted runners on o."""
    grants = {"o/r": frozenset({"actions_read", "hooks"}), "o/s": "actions_read"}
    grants["org:o"] = "org_runners"
    with GitHubStandIn(
        tokens={"pat": {"o/r": "admin"}},
        apps={APP_ID: app_key().public_pem},
        installations={INSTALLATION_ID: Installation(APP_ID, grants)},
        runner_groups=frozenset({1}),
    ) as stand_in:
        yield stand_in


def mint(github):
    """An installation token, the way the Worker and doctor ask for one."""

    jwt = app_jwt(str(APP_ID), app_key().private_pem.decode(), time.time())
    request = urllib.request.Request(
        f"{github.url}/app/installations/{INSTALLATION_ID}/access_tokens",
        data=b"",
        method="POST",
        headers={"Authorization": f"Bearer {jwt}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 201
        return json.loads(response.read())


class TestGitHubApp:
    def test_the_token_answer_reports_the_installations_permissions(self, app_github):
        answer = mint(app_github)
        assert answer["permissions"] == {
            "metadata": "read",
            "actions": "read",
            "repository_hooks": "write",
            "organization_self_hosted_runners": "write",
        }
        assert answer["repository_selection"] == "selected"

    def test_an_installation_may_set_the_permissions_it_reports(self, app_github):
        app_github.installations[INSTALLATION_ID].permissions = {"administration": "read"}
        assert mint(app_github)["permissions"] == {"administration": "read"}

    def test_a_repository_may_hold_several_permissions(self, app_github):
        token = mint(app_github)["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        assert get(f"{app_github.url}/repos/o/r/hooks", bearer)[0] == 200
        assert get(f"{app_github.url}/repos/o/r/actions/runs", bearer)[0] == 200
        assert get(f"{app_github.url}/repos/o/s/hooks", bearer)[0] == 403
        assert get(f"{app_github.url}/repos/o/r/actions/runners", bearer)[0] == 403

    def test_installation_repositories_are_paginated_and_carry_visibility(self, app_github):
        app_github.public_repositories.add("o/s")
        bearer = {"Authorization": f"Bearer {mint(app_github)['token']}"}
        status, body = get(f"{app_github.url}/installation/repositories?per_page=1", bearer)
        document = json.loads(body)
        assert status == 200 and document["total_count"] == 2
        assert document["repository_selection"] == "selected"
        assert [(r["full_name"], r["private"]) for r in document["repositories"]] == [("o/r", True)]
        _, body = get(f"{app_github.url}/installation/repositories?per_page=1&page=2", bearer)
        (second,) = json.loads(body)["repositories"]
        assert second["full_name"] == "o/s" and second["visibility"] == "public"

    def test_installation_repositories_refuse_other_credentials(self, app_github):
        url = f"{app_github.url}/installation/repositories"
        assert get(url, {"Authorization": "Bearer pat"})[0] == 403
        assert get(url, {"Authorization": "Bearer nope"})[0] == 401
        assert get(url)[0] == 401


class TestRunnerGroups:
    def test_the_default_group_is_open_to_all(self, app_github):
        bearer = {"Authorization": f"Bearer {mint(app_github)['token']}"}
        status, body = get(f"{app_github.url}/orgs/o/actions/runner-groups/1", bearer)
        group = json.loads(body)
        assert status == 200 and group["default"] is True and group["visibility"] == "all"
        assert "selected_repositories_url" not in group
        assert group["allows_public_repositories"] is False

    def test_a_selected_group_lists_its_repositories(self, app_github):
        app_github.add_runner_group(4, "gpu", repositories=("o/r",))
        bearer = {"Authorization": f"Bearer {mint(app_github)['token']}"}
        _, body = get(f"{app_github.url}/orgs/o/actions/runner-groups/4", bearer)
        group = json.loads(body)
        assert group["visibility"] == "selected" and group["name"] == "gpu"
        assert group["selected_repositories_url"].endswith(
            "/orgs/o/actions/runner-groups/4/repositories"
        )
        status, body = get(f"{app_github.url}/orgs/o/actions/runner-groups/4/repositories", bearer)
        document = json.loads(body)
        assert status == 200 and document["total_count"] == 1
        assert document["repositories"][0]["full_name"] == "o/r"
        # A group set up here is one the runner endpoints accept too.
        assert 4 in app_github.runner_groups

    def test_an_unknown_group_and_a_credential_without_the_organization_permission(
        self, app_github
    ):
        bearer = {"Authorization": f"Bearer {mint(app_github)['token']}"}
        assert get(f"{app_github.url}/orgs/o/actions/runner-groups/9", bearer)[0] == 404
        # A token of one of the organization's repositories, without "Self-hosted runners".
        assert (
            get(
                f"{app_github.url}/orgs/o/actions/runner-groups/1", {"Authorization": "Bearer pat"}
            )[0]
            == 403
        )
