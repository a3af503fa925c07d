"""The four cdktf stacks, one per external system boundary, deployed in this order.

``edge`` (Cloudflare: tunnel to the Nomad API and its Access gate) -> ``nomad`` (namespace,
dispatch-only token, credentials, runner and cloudflared jobs) -> ``dispatch`` (Cloudflare: the
Worker, its KV ledger and the webhook secret key) -> ``github`` (one webhook per repository).
Nomad needs the tunnel token and the Worker needs the Nomad token, so one Cloudflare stack would
form a cycle; splitting Cloudflare in two breaks it. Values cross stacks only as cdktf references
(outputs plus remote-state data sources), never copied by hand.

Stacks compose the constructs in ``stacks.components`` and wire them; they read nothing but the
validated ``config.AppConfig`` they are given.
"""

from stacks.dispatch import DispatchStack
from stacks.edge import EdgeStack
from stacks.github import GitHubStack
from stacks.nomad import NomadStack

DEPLOY_ORDER = ("edge", "nomad", "dispatch", "github")

__all__ = ["DEPLOY_ORDER", "DispatchStack", "EdgeStack", "GitHubStack", "NomadStack"]
