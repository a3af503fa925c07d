"""The Nomad API published through a Cloudflare tunnel: tunnel, ingress rules and DNS name.

Ingress is managed remotely (``config_src = "cloudflare"``), so the cloudflared job needs only
the tunnel token: the one hostname goes to the Nomad API origin and everything else gets a 404.
Exposes ``token`` (sensitive, for the cloudflared job's Nomad Variable) and ``hostname``.
"""

from __future__ import annotations

from cdktf_cdktf_provider_cloudflare.data_cloudflare_zero_trust_tunnel_cloudflared_token import (
    DataCloudflareZeroTrustTunnelCloudflaredToken,
)
from cdktf_cdktf_provider_cloudflare.dns_record import DnsRecord
from cdktf_cdktf_provider_cloudflare.zero_trust_tunnel_cloudflared import (
    ZeroTrustTunnelCloudflared,
)
from cdktf_cdktf_provider_cloudflare.zero_trust_tunnel_cloudflared_config import (
    ZeroTrustTunnelCloudflaredConfigA,
    ZeroTrustTunnelCloudflaredConfigConfig,
    ZeroTrustTunnelCloudflaredConfigConfigIngress,
)
from constructs import Construct

# The last ingress rule must match everything; anything but the Nomad API hostname ends here.
CATCH_ALL_SERVICE = "http_status:404"


class NomadApiTunnel(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        account_id: str,
        zone_id: str,
        name: str,
        hostname: str,
        origin: str,
    ) -> None:
        super().__init__(scope, id)
        self.tunnel = ZeroTrustTunnelCloudflared(
            self, "tunnel", account_id=account_id, name=name, config_src="cloudflare"
        )
        self.ingress = ZeroTrustTunnelCloudflaredConfigA(
            self,
            "ingress",
            account_id=account_id,
            tunnel_id=self.tunnel.id,
            config=ZeroTrustTunnelCloudflaredConfigConfig(
                ingress=[
                    ZeroTrustTunnelCloudflaredConfigConfigIngress(
                        hostname=hostname, service=origin
                    ),
                    ZeroTrustTunnelCloudflaredConfigConfigIngress(service=CATCH_ALL_SERVICE),
                ]
            ),
        )
        DnsRecord(
            self,
            "dns",
            zone_id=zone_id,
            name=hostname,
            type="CNAME",
            content=f"{self.tunnel.id}.cfargotunnel.com",
            proxied=True,  # traffic must pass Cloudflare, where Access sits
            ttl=1,  # "automatic", the only value allowed for proxied records
            comment="Nomad API behind Cloudflare Access (nomad-github-runners)",
        )
        # The tunnel resource has no token attribute; the provider exposes it as a data source.
        self.token = DataCloudflareZeroTrustTunnelCloudflaredToken(
            self, "token", account_id=account_id, tunnel_id=self.tunnel.id
        ).token
        self.hostname = hostname
