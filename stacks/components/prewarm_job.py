"""One pool's prewarm job: the pool's images kept on every node its runners may be placed on.

The job is ``runner_job/prewarm.nomad.hcl`` (a ``system`` job, one small allocation per eligible
node) with the pool's placement (datacenters, node pool, constraints), task driver and images as
HCL2 variables: the same values its runner job gets. It reads no file and no Nomad Variable:
nothing secret reaches it, and it gets no filesystem access from the provider.
"""

from __future__ import annotations

from cdktf_cdktf_provider_nomad.job import Job, JobHcl2
from constructs import Construct

from config import ImagesConfig, NomadConfig, PoolConfig
from runner_job import PREWARM_JOBSPEC
from stacks.components.nomad_jobspec import hcl2_vars, jobspec_text


class PrewarmJob(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        pool: PoolConfig,
        nomad: NomadConfig,
        runner_image: str,
        images: ImagesConfig,
        namespace: str,
    ) -> None:
        """``runner_image``: the pool's, as its runner job gets it (a pin, or the expression of
        the newest release); ``namespace``: the namespace resource's name (a reference, so the
        job waits for the namespace)."""
        super().__init__(scope, id)
        docker_image = images.dind if pool.docker == "dind" else None
        self.job = Job(
            self,
            "job",
            jobspec=jobspec_text(PREWARM_JOBSPEC),
            hcl2=JobHcl2(
                allow_fs=False,
                vars=hcl2_vars(
                    {
                        "job_name": pool.prewarm_job,
                        "datacenters": list(nomad.datacenters),
                        "node_pool": pool.node_pool or nomad.node_pool,
                        "constraints": [
                            {
                                "attribute": constraint.attribute,
                                "operator": constraint.operator,
                                "value": constraint.value,
                            }
                            for constraint in pool.constraints
                        ],
                        "driver": pool.driver,
                        "helper_image": images.helper,
                        "docker_image": docker_image or "",
                    },
                    # The newest release's image is a Terraform expression (a pin needs no
                    # escaping: config refuses "${" and "%{" in images).
                    literal_tokens={"namespace": namespace, "runner_image": runner_image},
                ),
            ),
            # Terraform's apply does not wait for every node's pull.
            detach=True,
            purge_on_destroy=True,
        )
