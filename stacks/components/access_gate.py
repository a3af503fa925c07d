"""Cloudflare Access in front of one hostname, admitting exactly one service token.

A self-hosted application on the hostname with a single ``non_identity`` policy whose only
include rule is the service token: no user login, no bypass, no "everyone". Callers present
``CF-Access-Client-Id`` / ``CF-Access-Client-Secret``; anything else gets 401 (not a login
redirect, since the only caller is a machine). Exposes ``client_id`` and ``client_secret``.
"""

from __future__ import annotations

from cdktf_cdktf_provider_cloudflare.zero_trust_access_application import (
    ZeroTrustAccessApplication,
    ZeroTrustAccessApplicationDestinations,
    ZeroTrustAccessApplicationPolicies,
)
from cdktf_cdktf_provider_cloudflare.zero_trust_access_policy import (
    ZeroTrustAccessPolicy,
    ZeroTrustAccessPolicyInclude,
    ZeroTrustAccessPolicyIncludeServiceToken,
)
from cdktf_cdktf_provider_cloudflare.zero_trust_access_service_token import (
    ZeroTrustAccessServiceToken,
)
from constructs import Construct


class ServiceTokenGate(Construct):
    def __init__(
        self, scope: Construct, id: str, *, account_id: str, name: str, hostname: str
    ) -> None:
        super().__init__(scope, id)
        self.service_token = ZeroTrustAccessServiceToken(
            self,
            "service_token",
            account_id=account_id,
            name=f"{name} (dispatch Worker)",
            duration="8760h",  # one year; replace it before then (README, Limits)
        )
        self.policy = ZeroTrustAccessPolicy(
            self,
            "policy",
            account_id=account_id,
            name=f"{name}: dispatch Worker service token only",
            decision="non_identity",
            include=[
                ZeroTrustAccessPolicyInclude(
                    service_token=ZeroTrustAccessPolicyIncludeServiceToken(
                        token_id=self.service_token.id
                    )
                )
            ],
        )
        self.application = ZeroTrustAccessApplication(
            self,
            "application",
            account_id=account_id,
            name=f"{name}: Nomad API",
            type="self_hosted",
            # The API still wants the primary hostname of a self-hosted app; the same one.
            domain=hostname,
            destinations=[ZeroTrustAccessApplicationDestinations(type="public", uri=hostname)],
            policies=[ZeroTrustAccessApplicationPolicies(id=self.policy.id, precedence=1)],
            app_launcher_visible=False,
            service_auth401_redirect=True,
            session_duration="24h",
        )
        self.client_id = self.service_token.client_id
        self.client_secret = self.service_token.client_secret
