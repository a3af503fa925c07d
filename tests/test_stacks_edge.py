"""stacks/edge.py: the tunnel to the Nomad API and the Access gate that admits only the Worker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from stacks.components.nomad_api_tunnel import CATCH_ALL_SERVICE
from tests.stack_synth import VARIANTS, masked, only, resources, synthesized


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("variant", VARIANTS)
def test_snapshot(variant: str, snapshot_json: SnapshotAssertion) -> None:
    assert masked(synthesized(variant).stacks["edge"]) == snapshot_json


def edge(variant: str = "example") -> dict[str, Any]:
    return synthesized(variant).stacks["edge"]


def address(kind: str, stack: dict[str, Any]) -> str:
    (name,) = resources(stack, kind)
    return f"{kind}.{name}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_tunnel_ingress_routes_one_hostname_then_404(variant: str) -> None:
    """Remotely managed ingress: the Nomad API hostname to the origin, everything else a 404."""
    config = synthesized(variant).config
    stack = edge(variant)
    assert only(stack, "cloudflare_zero_trust_tunnel_cloudflared")["config_src"] == "cloudflare"
    ingress = only(stack, "cloudflare_zero_trust_tunnel_cloudflared_config")["config"]["ingress"]
    assert ingress == [
        {"hostname": config.cloudflare.nomad_api_hostname, "service": config.nomad.tunnel_origin},
        {"service": CATCH_ALL_SERVICE},
    ]


def test_nomad_hostname_is_a_proxied_cname_to_the_tunnel() -> None:
    stack = edge()
    record = only(stack, "cloudflare_dns_record")
    tunnel = address("cloudflare_zero_trust_tunnel_cloudflared", stack)
    assert record["type"] == "CNAME"
    assert record["proxied"] is True
    assert record["name"] == "nomad-api.example.com"
    assert record["content"] == f"${{{tunnel}.id}}.cfargotunnel.com"


@pytest.mark.parametrize("variant", VARIANTS)
def test_access_admits_only_the_service_token(variant: str) -> None:
    """One self-hosted app, one non_identity policy, whose only include is the service token."""
    config = synthesized(variant).config
    stack = edge(variant)
    application = only(stack, "cloudflare_zero_trust_access_application")
    policy = only(stack, "cloudflare_zero_trust_access_policy")
    policy_address = address("cloudflare_zero_trust_access_policy", stack)
    token_address = address("cloudflare_zero_trust_access_service_token", stack)

    assert application["type"] == "self_hosted"
    assert application["domain"] == config.cloudflare.nomad_api_hostname
    assert application["destinations"] == [
        {"type": "public", "uri": config.cloudflare.nomad_api_hostname}
    ]
    assert application["policies"] == [{"id": f"${{{policy_address}.id}}", "precedence": 1}]
    assert policy["decision"] == "non_identity"
    assert policy["include"] == [{"service_token": {"token_id": f"${{{token_address}.id}}"}}]
    assert "require" not in policy and "exclude" not in policy
    text = json.dumps(stack)
    for loophole in ("bypass", "everyone", "any_valid_service_token", '"allow"', "email"):
        assert loophole not in text, loophole


def test_machine_caller_gets_401_not_a_login_page() -> None:
    application = only(edge(), "cloudflare_zero_trust_access_application")
    assert application["service_auth_401_redirect"] is True


def test_exported_credentials_are_sensitive_outputs() -> None:
    """The tunnel token and the service token leave this stack only as sensitive outputs."""
    outputs = edge()["output"]
    exported = {output["value"] for output in outputs.values()}
    tunnel_token = address(
        "cloudflare_zero_trust_tunnel_cloudflared_token", {"resource": edge()["data"]}
    )
    service_token = address("cloudflare_zero_trust_access_service_token", edge())
    assert exported == {
        f"${{data.{tunnel_token}.token}}",
        f"${{{service_token}.client_id}}",
        f"${{{service_token}.client_secret}}",
    }
    assert all(output["sensitive"] is True for output in outputs.values())
