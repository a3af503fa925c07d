"""Each stack's Terraform backend, from ``config.BackendConfig``.

Declared explicitly on every stack: without it cdktf writes an absolute local state path of the
machine that synthesized, and the output would differ per checkout. A local path is relative to
the directory holding ``cdktf.out/`` (three levels above ``cdktf.out/stacks/<stack>/``, where
Terraform runs), so every stack and every remote-state reader agrees on it.
"""

from __future__ import annotations

from cdktf import LocalBackend, NamedRemoteWorkspace, RemoteBackend, S3Backend, TerraformStack

from config import BackendConfig

# From cdktf.out/stacks/<stack>/ back to the directory that holds cdktf.out/.
_TO_PROJECT = "../../.."


def declare_backend(stack: TerraformStack, backend: BackendConfig, stack_name: str) -> None:
    settings = backend.settings
    if backend.type == "local":
        LocalBackend(stack, path=f"{_TO_PROJECT}/{settings['path']}/{stack_name}.tfstate")
    elif backend.type == "s3":
        S3Backend(
            stack,
            bucket=settings["bucket"],
            key=f"{settings['key_prefix']}/{stack_name}.tfstate",
            region=settings["region"],
            encrypt=True,
            endpoint=settings.get("endpoint"),
            dynamodb_table=settings.get("dynamodb_table"),
        )
    else:
        RemoteBackend(
            stack,
            hostname=settings["hostname"],
            organization=settings["organization"],
            workspaces=NamedRemoteWorkspace(name=f"{settings['workspace_prefix']}{stack_name}"),
        )
