"""One runner pool on Nomad: its parameterized job and the GitHub credential its tasks read.

The job is ``runner_job/runner.nomad.hcl`` with the pool's values as HCL2 variables, or, for a
pool with ``docker = "dind"``, ``runner_job/runner-dind.nomad.hcl`` (the same job plus the
allocation's Docker daemon, which takes half of the pool's cpu and memory); the runner image is
given (a pinned reference, or the stack's expression for the newest release). The task scripts
ship beside the stack as a Terraform asset, which the jobspec reads with ``file()`` (hence
``allow_fs``). The GitHub credential (the runner token, or with ``auth = "app"`` the App's
private key, item ``github_app_private_key``) goes into two Nomad Variables, one per task that
needs it (register, deregister: ``runner_job.credential_variable_paths``), and into no other
place: the runner task, where workflow code runs, can read neither. The App's id and
installation id, the runner scope and the owner are settings, passed as jobspec variables.
"""

from __future__ import annotations

from cdktf_cdktf_provider_nomad.job import Job, JobHcl2
from cdktf_cdktf_provider_nomad.variable import Variable
from constructs import Construct

from config import GitHubConfig, ImagesConfig, NomadConfig, PoolConfig
from runner_job import (
    GITHUB_APP_KEY_ITEM,
    GITHUB_TOKEN_ITEM,
    RUNNER_DIND_JOBSPEC,
    RUNNER_JOBSPEC,
    credential_variable_paths,
)
from stacks.components.nomad_jobspec import hcl2_vars, jobspec_text


class RunnerPoolJob(Construct):
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
        scripts_dir: str,
        github: GitHubConfig,
        credential: str,
    ) -> None:
        super().__init__(scope, id)
        job_name = pool.nomad_job
        item = GITHUB_APP_KEY_ITEM if github.auth == "app" else GITHUB_TOKEN_ITEM
        credentials = [
            Variable(
                self,
                f"credential_{task_path.rsplit('/', 1)[1]}",
                namespace=namespace,
                path=task_path,
                items={item: credential},
            )
            for task_path in credential_variable_paths(job_name)
        ]
        docker_cpu, docker_memory = pool.docker_share
        dind: dict[str, str | int] = {}
        if pool.docker == "dind":
            assert images.dind is not None, "config validation requires images.dind"
            dind = {
                "docker_image": images.dind,
                "docker_cpu": docker_cpu,
                "docker_memory": docker_memory,
                "registry_mirror": pool.registry_mirror or "",
            }
        self.job = Job(
            self,
            "job",
            jobspec=jobspec_text(RUNNER_DIND_JOBSPEC if dind else RUNNER_JOBSPEC),
            hcl2=JobHcl2(
                allow_fs=True,
                vars=hcl2_vars(
                    {
                        "job_name": job_name,
                        "namespace": nomad.namespace,
                        "datacenters": list(nomad.datacenters),
                        "node_pool": pool.node_pool or nomad.node_pool,
                        "pool": pool.name,
                        "runner_labels": list(pool.labels),
                        "runner_group_id": pool.runner_group_id,
                        "helper_image": images.helper,
                        "driver": pool.driver,
                        "cpu": pool.cpu - docker_cpu,
                        "memory": pool.memory - docker_memory,
                        "pids_limit": pool.pids_limit,
                        "disk": pool.disk,
                        "runner_sudo": "image" if pool.sudo else "none",
                        "constraints": [
                            {
                                "attribute": constraint.attribute,
                                "operator": constraint.operator,
                                "value": constraint.value,
                            }
                            for constraint in pool.constraints
                        ],
                        "idle_timeout_seconds": pool.idle_timeout_seconds,
                        "max_job_seconds": pool.max_duration_seconds,
                        "github_api_url": github.api_url,
                        "github_auth": github.auth,
                        "github_app_id": str(github.app_id or ""),
                        "github_app_installation_id": str(github.installation_id or ""),
                        "runner_scope": github.runner_scope,
                        "github_owner": github.owner,
                        **dind,
                    },
                    # A pinned image has no "${" or "%{" (config refuses them), so it needs no
                    # escaping; the newest release's image is a Terraform expression.
                    literal_tokens={"scripts_dir": scripts_dir, "runner_image": runner_image},
                ),
            ),
            # A runner must find its credential when it starts.
            depends_on=credentials,
            purge_on_destroy=True,
        )
