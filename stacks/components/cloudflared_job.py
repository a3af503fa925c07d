"""The cloudflared job that connects the tunnel from inside the cluster, and its tunnel token.

``runner_job/cloudflared.nomad.hcl`` reads the token from the Nomad Variable that only its
cloudflared task can read (``runner_job.tunnel_token_variable_path``); the token comes from the
edge stack as a cdktf reference and appears in no file.
"""

from __future__ import annotations

from cdktf_cdktf_provider_nomad.job import Job, JobHcl2
from cdktf_cdktf_provider_nomad.variable import Variable
from constructs import Construct

from config import ImagesConfig, NomadConfig
from runner_job import (
    CLOUDFLARED_JOB,
    CLOUDFLARED_JOBSPEC,
    TUNNEL_TOKEN_ITEM,
    tunnel_token_variable_path,
)
from stacks.components.nomad_jobspec import hcl2_vars, jobspec_text


class CloudflaredJob(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        nomad: NomadConfig,
        images: ImagesConfig,
        namespace: str,
        tunnel_token: str,
    ) -> None:
        super().__init__(scope, id)
        token = Variable(
            self,
            "tunnel_token",
            namespace=namespace,
            path=tunnel_token_variable_path(CLOUDFLARED_JOB),
            items={TUNNEL_TOKEN_ITEM: tunnel_token},
        )
        self.job = Job(
            self,
            "job",
            jobspec=jobspec_text(CLOUDFLARED_JOBSPEC),
            hcl2=JobHcl2(
                # This jobspec reads no file: the provider gets no filesystem access for it.
                allow_fs=False,
                vars=hcl2_vars(
                    {
                        "job_name": CLOUDFLARED_JOB,
                        "namespace": nomad.namespace,
                        "datacenters": list(nomad.datacenters),
                        "node_pool": nomad.node_pool,
                        "image": images.cloudflared,
                    },
                    literal_tokens={},
                ),
            ),
            depends_on=[token],
            purge_on_destroy=True,
        )
