"""Test-only stand-in for a module the production Python Workers runtime injects.

The vendored ``workers`` SDK calls into it for JS module imports and ``waitUntil`` patching,
neither of which the dispatch Worker uses.
"""

from collections.abc import Generator
from typing import Any

cloudflareWorkersModule: Any = None
cloudflareSocketsModule: Any = None


def doAnImport(module_name: str) -> Any:
    raise ImportError(f"{module_name}: JS module imports are not available in the local adapter")


def patch_env_helper(kwds: Any) -> Generator[None]:
    yield


def patchWaitUntil(ctx: Any) -> None:
    return None
