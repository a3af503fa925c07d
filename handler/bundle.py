"""What the Worker consists of when deployed: its modules and runtime settings.

The Cloudflare stack uploads exactly these modules (main module first) with these settings; the
local Workers-runtime tests run the same files. ``local_server.py`` is the CPython adapter and is
never uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

HANDLER_DIR: Final = Path(__file__).resolve().parent
MAIN_MODULE: Final = "handler/entry.py"
# Class-style entry (WorkerEntrypoint) is what compatibility dates from 2025-08-14 on expect.
COMPATIBILITY_DATE: Final = "2025-08-14"
COMPATIBILITY_FLAGS: Final[tuple[str, ...]] = ("python_workers",)
_NOT_UPLOADED: Final = frozenset({"local_server.py"})


def worker_modules() -> list[tuple[str, bytes]]:
    """(module name, content) of every module the Worker needs, main module first."""
    files = sorted(path for path in HANDLER_DIR.glob("*.py") if path.name not in _NOT_UPLOADED)
    modules = [(f"handler/{path.name}", path.read_bytes()) for path in files]
    modules.sort(key=lambda module: module[0] != MAIN_MODULE)
    return modules
