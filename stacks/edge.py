"""Cloudflare edge in front of Nomad: the tunnel to the Nomad API and its Access gate.

Exposes ``tunnel_token`` (to the nomad stack) and ``access_client_id`` /
``access_client_secret`` (to the dispatch stack) as cdktf references, and records the Access
service token as two sensitive outputs with stable names (``doctor.state``) for ``doctor`` to
read with ``terraform output``. The Cloudflare provider reads its credential from
``CLOUDFLARE_API_TOKEN``.
"""

from __future__ import annotations

from cdktf import TerraformOutput, TerraformStack
from cdktf_cdktf_provider_cloudflare.provider import CloudflareProvider
from constructs import Construct

from config import AppConfig
from doctor.state import ACCESS_CLIENT_ID_OUTPUT, ACCESS_CLIENT_SECRET_OUTPUT
from stacks.backend import declare_backend
from stacks.components.access_gate import ServiceTokenGate
from stacks.components.nomad_api_tunnel import NomadApiTunnel


class EdgeStack(TerraformStack):
    def __init__(self, scope: Construct, id: str, *, config: AppConfig) -> None:
        super().__init__(scope, id)
        declare_backend(self, config.backend, id)
        CloudflareProvider(self, "cloudflare")
        cloudflare = config.cloudflare
        tunnel = NomadApiTunnel(
            self,
            "nomad_api_tunnel",
            account_id=cloudflare.account_id,
            zone_id=cloudflare.zone_id,
            name=f"{cloudflare.resource_prefix}-nomad-api",
            hostname=cloudflare.nomad_api_hostname,
            origin=config.nomad.tunnel_origin,
        )
        gate = ServiceTokenGate(
            self,
            "nomad_api_access",
            account_id=cloudflare.account_id,
            name=cloudflare.resource_prefix,
            hostname=cloudflare.nomad_api_hostname,
        )
        self.tunnel_token = tunnel.token
        self.nomad_api_url = f"https://{cloudflare.nomad_api_hostname}"
        self.access_client_id = gate.client_id
        self.access_client_secret = gate.client_secret
        for name, value in (
            (ACCESS_CLIENT_ID_OUTPUT, gate.client_id),
            (ACCESS_CLIENT_SECRET_OUTPUT, gate.client_secret),
        ):
            TerraformOutput(
                self,
                name,
                value=value,
                sensitive=True,
                description="Read by doctor (python -m doctor) to probe the Nomad API hostname.",
            )
