"""The dispatch Worker: the ``handler/`` package as a Python Worker, its KV ledger and its domain.

The package is several modules, which ``workers_script`` cannot upload (it takes exactly one),
so this uses the newer trio: ``worker`` (the named script), ``worker_version`` (modules, bindings,
compatibility settings; immutable) and ``workers_deployment`` (sends 100 % of traffic to that
version). Modules travel base64-encoded, so no character of the Python source can be read as
Terraform template syntax. The bindings are exactly ``handler.contract.WORKER_BINDINGS``: a
binding the contract names but the caller gives no value for, or a value for a binding the
contract does not name, is an error at synth time. A cron trigger runs the Worker's scheduled
handler (the reconciler) on the given schedules. The upload is checked against the Python
Workers runtime's rules first (``handler.bundle.check_bundle``): a main module outside the bundle
root, or a compatibility date that removes the built-in ``workers`` module, fails the synth.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence

from cdktf_cdktf_provider_cloudflare.worker import Worker, WorkerObservability, WorkerSubdomain
from cdktf_cdktf_provider_cloudflare.worker_version import (
    WorkerVersion,
    WorkerVersionBindings,
    WorkerVersionModules,
)
from cdktf_cdktf_provider_cloudflare.workers_cron_trigger import (
    WorkersCronTrigger,
    WorkersCronTriggerSchedules,
)
from cdktf_cdktf_provider_cloudflare.workers_custom_domain import WorkersCustomDomain
from cdktf_cdktf_provider_cloudflare.workers_deployment import (
    WorkersDeployment,
    WorkersDeploymentVersions,
)
from cdktf_cdktf_provider_cloudflare.workers_kv_namespace import WorkersKvNamespace
from constructs import Construct

from handler.bundle import (
    COMPATIBILITY_DATE,
    COMPATIBILITY_FLAGS,
    MAIN_MODULE,
    check_bundle,
    worker_modules,
)
from handler.contract import WORKER_BINDINGS, BindingSpec

PYTHON_MODULE_TYPE = "text/x-python"


def _module_base64(content: bytes) -> str:
    # An empty module (a package's __init__.py) would be an empty string, which Terraform
    # treats as "not set"; a lone newline is the same Python module.
    return base64.b64encode(content or b"\n").decode("ascii")


class DispatchWorker(Construct):
    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        account_id: str,
        zone_id: str,
        name: str,
        hostname: str,
        text_bindings: Mapping[str, str],
        cron_schedules: Sequence[str] = (),
        binding_specs: Sequence[BindingSpec] = WORKER_BINDINGS,
    ) -> None:
        """``text_bindings``: value of every plain_text/secret_text binding, by binding name;
        ``cron_schedules``: when the runtime calls the Worker's scheduled handler;
        ``binding_specs``: the contract's bindings (``handler.contract.worker_bindings``)."""
        super().__init__(scope, id)
        self._specs = tuple(binding_specs)
        modules = worker_modules()
        # What the runtime would refuse at upload (a main module outside the bundle root, a
        # date without the built-in `workers` module) fails here, at synth, instead.
        check_bundle(MAIN_MODULE, modules, COMPATIBILITY_DATE, COMPATIBILITY_FLAGS)
        self.ledger = WorkersKvNamespace(
            self, "ledger", account_id=account_id, title=f"{name}-ledger"
        )
        self.worker = Worker(
            self,
            "worker",
            account_id=account_id,
            name=name,
            observability=WorkerObservability(enabled=True),
            # Reachable only on the webhook hostname: no *.workers.dev address, and no preview
            # URL that would keep serving an older version's code with the current secrets.
            subdomain=WorkerSubdomain(enabled=False, previews_enabled=False),
        )
        self.version = WorkerVersion(
            self,
            "version",
            account_id=account_id,
            worker_id=self.worker.id,
            main_module=MAIN_MODULE,
            compatibility_date=COMPATIBILITY_DATE,
            compatibility_flags=list(COMPATIBILITY_FLAGS),
            modules=[
                WorkerVersionModules(
                    name=module_name,
                    content_type=PYTHON_MODULE_TYPE,
                    content_base64=_module_base64(content),
                )
                for module_name, content in modules
            ],
            bindings=self._bindings(text_bindings),
        )
        self.deployment = WorkersDeployment(
            self,
            "deployment",
            account_id=account_id,
            script_name=self.worker.name,
            strategy="percentage",
            versions=[WorkersDeploymentVersions(percentage=100, version_id=self.version.id)],
        )
        self.custom_domain = WorkersCustomDomain(
            self,
            "custom_domain",
            account_id=account_id,
            zone_id=zone_id,
            hostname=hostname,
            service=self.worker.name,
            # GitHub pings a hook as soon as it exists: serve the code before the name resolves.
            depends_on=[self.deployment],
        )
        self.hostname = self.custom_domain.hostname
        if cron_schedules:
            WorkersCronTrigger(
                self,
                "cron_trigger",
                account_id=account_id,
                script_name=self.worker.name,
                schedules=[WorkersCronTriggerSchedules(cron=cron) for cron in cron_schedules],
                depends_on=[self.deployment],
            )

    def _bindings(self, text_bindings: Mapping[str, str]) -> list[WorkerVersionBindings]:
        declared = {spec.name for spec in self._specs if spec.type != "kv_namespace"}
        given = set(text_bindings)
        if declared != given:
            missing = ", ".join(sorted(declared - given)) or "none"
            extra = ", ".join(sorted(given - declared)) or "none"
            raise ValueError(
                f"Worker bindings differ from handler.contract.WORKER_BINDINGS: "
                f"missing {missing}; not in the contract {extra}"
            )
        bindings = []
        for spec in self._specs:
            if spec.type == "kv_namespace":
                bindings.append(
                    WorkerVersionBindings(
                        name=spec.name, type=spec.type, namespace_id=self.ledger.id
                    )
                )
            else:
                bindings.append(
                    WorkerVersionBindings(
                        name=spec.name, type=spec.type, text=text_bindings[spec.name]
                    )
                )
        return bindings
