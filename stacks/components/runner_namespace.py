"""The Nomad namespace runner jobs live in, and the only token the Worker holds.

Nomad cannot scope a policy to one job: ``dispatch-job`` in a namespace allows dispatching any
parameterized job there. So the runner jobs get a namespace of their own and the Worker's token
may, in that namespace only, dispatch (``dispatch-job``) and read jobs (``read-job``): nothing
to submit, stop or alter a job, nothing in any other namespace, no node or agent access.
Exposes ``name`` and ``dispatch_token_secret``.

What the Worker calls, and the capability Nomad checks for it (nomad/job_endpoint.go):
``POST /v1/job/{id}/dispatch`` (Job.Dispatch: ``dispatch-job``), ``GET /v1/job/{id}/summary``
(Job.Summary: ``read-job``), the reconciler's ``GET /v1/job/{child id}`` (Job.GetJob:
``read-job``) and, for a repository's cap, ``GET /v1/jobs/statuses`` (Job.Statuses:
``read-job`` only). ``list-jobs`` is checked by ``GET /v1/jobs`` (Job.List), which the Worker
never calls.
"""

from __future__ import annotations

from cdktf_cdktf_provider_nomad.acl_policy import AclPolicy
from cdktf_cdktf_provider_nomad.acl_token import AclToken
from cdktf_cdktf_provider_nomad.namespace import Namespace
from constructs import Construct

from handler.contract import WORKER_NOMAD_CAPABILITIES

DISPATCH_CAPABILITIES = WORKER_NOMAD_CAPABILITIES


def dispatch_policy_rules(namespace: str) -> str:
    capabilities = ", ".join(f'"{capability}"' for capability in DISPATCH_CAPABILITIES)
    return f'namespace "{namespace}" {{\n  capabilities = [{capabilities}]\n}}\n'


class RunnerNamespace(Construct):
    def __init__(self, scope: Construct, id: str, *, namespace: str, name_prefix: str) -> None:
        super().__init__(scope, id)
        self.namespace = Namespace(
            self,
            "namespace",
            name=namespace,
            description="Ephemeral GitHub Actions runners, one per job (nomad-github-runners)",
        )
        # The resource's attribute, not the literal, so everything below waits for the namespace.
        self.name = self.namespace.name
        self.policy = AclPolicy(
            self,
            "dispatch_policy",
            name=f"{name_prefix}-dispatch",
            description="Dispatch runner jobs and read their state; nothing else",
            rules_hcl=dispatch_policy_rules(namespace),
        )
        self.token = AclToken(
            self,
            "dispatch_token",
            type="client",
            name=f"{name_prefix} dispatch Worker",
            policies=[self.policy.name],
        )
        self.dispatch_token_secret = self.token.secret_id
