"""What the Worker consists of when deployed: its modules and runtime settings, and their rules.

The Cloudflare stack uploads exactly ``worker_modules()`` (main module first) with these
settings; the local Workers-runtime tests run the same files, loading the main module by its
name as production does. ``local_server.py`` is the CPython adapter and is never uploaded.

Layout: the main module ``worker.py`` sits at the bundle root (its source is ``handler/worker.py``)
and imports the entry class from the ``handler`` package, uploaded as ``handler/*.py`` beside it.
``check_bundle`` refuses, at synth time, what the Python Workers runtime refuses at upload. Read
in workerd's source (github.com/cloudflare/workerd at 6552d999, 2026-08-22):

- ``src/workerd/io/worker-modules.h`` (registerPythonWorkerdModules): the runtime's JS start-up
  shim is registered under the main module's own path, and it imports
  ``pyodide:python-entrypoint-helper``. ``src/workerd/jsg/modules.c++`` resolves a specifier
  without a ``node:``/``cloudflare:``/``workerd:`` prefix relative to the importing module's
  directory, so a main module ``handler/entry.py`` looks for
  ``handler/pyodide:python-entrypoint-helper``, which does not exist.
- ``src/pyodide/python-entrypoint-helper.ts`` (pyimportMainModule): the main module must end
  in ``.py`` and is imported by the name ``main_module[:-3]`` (Pyodide's ``pyimport``, which
  splits on the last dot), so ``handler/entry`` is no importable name.
- ``src/pyodide/internal/introspection.py`` (collect_classes): the ``WorkerEntrypoint``
  subclasses served are those in the main module's namespace (its ``__all__`` if it has one);
  ``handleDefaultClass`` in the helper serves the one named ``Default``.
- ``src/workerd/io/compatibility-date.capnp``: ``enable_python_external_sdk`` is on from
  2026-04-21 (``disable_python_external_sdk`` turns it off); with it the runtime no longer
  provides the ``workers`` module (python-entrypoint-helper.ts, injectWorkersApi, writes a stub
  that raises ``ModuleNotFoundError``) unless the SDK is uploaded under ``python_modules/``,
  which ``src/pyodide/internal/setup_python_search_path.py`` puts before site-packages.
"""

from __future__ import annotations

import keyword
import sys
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Final

HANDLER_DIR: Final = Path(__file__).resolve().parent
MAIN_MODULE: Final = "worker.py"
_MAIN_MODULE_SOURCE: Final = HANDLER_DIR / "worker.py"
# Kept before EXTERNAL_SDK_DATE on purpose: the runtime's built-in `workers` module is what
# handler/entry.py imports, and it is gone from that date unless the SDK is uploaded too.
# Class-style entry (WorkerEntrypoint) is what dates from 2025-08-14 on require
# (python_no_global_handlers). At this date production runs Pyodide 0.26.0a2, Python 3.12
# (python_workers_20250116, Pyodide 0.28.2 / Python 3.13, is implied only from 2025-09-29).
COMPATIBILITY_DATE: Final = "2025-08-14"
COMPATIBILITY_FLAGS: Final[tuple[str, ...]] = ("python_workers",)
# Upload rules of the Python Workers runtime (compatibility-date.capnp).
CLASS_ENTRY_DATE: Final = "2025-08-14"
EXTERNAL_SDK_DATE: Final = "2026-04-21"
EXTERNAL_SDK_ON: Final = "enable_python_external_sdk"
EXTERNAL_SDK_OFF: Final = "disable_python_external_sdk"
# Where an uploaded SDK shadows the runtime's refusing stub (setup_python_search_path.py).
UPLOADED_SDK_MODULE: Final = "python_modules/workers/__init__.py"
# Names the main module may not take: the runtime's own modules and the package beside it.
# A standard-library name would be found first on the runtime's sys.path.
_RESERVED_NAMES: Final = frozenset({"handler", "workers", "js", "pyodide", "asgi"})
# worker.py is uploaded at the bundle root, under MAIN_MODULE, not as handler/worker.py.
_NOT_IN_PACKAGE: Final = frozenset({"local_server.py", _MAIN_MODULE_SOURCE.name})


class BundleError(ValueError):
    """A bundle the Python Workers runtime would refuse; the message names what and why."""


def worker_modules() -> list[tuple[str, bytes]]:
    """(module name, content) of every module the Worker needs, main module first."""
    files = sorted(path for path in HANDLER_DIR.glob("*.py") if path.name not in _NOT_IN_PACKAGE)
    return [(MAIN_MODULE, _MAIN_MODULE_SOURCE.read_bytes())] + [
        (f"handler/{path.name}", path.read_bytes()) for path in files
    ]


def check_main_module(name: str) -> None:
    """Refuse a main module name the runtime cannot load: it must be ``<identifier>.py``.

    A ``/`` (a directory), a missing ``.py`` and a dot in the name (``pyimport`` would import a
    package) fail in the runtime. Any other non-identifier (``my-worker.py``) imports there, by
    ``importlib``, but no ``import`` statement, tool or test can name it: refused too.
    """
    where = f"main module {name!r}"
    if "/" in name or "\\" in name:
        raise BundleError(
            f"{where}: must sit at the bundle root, not in a directory: the runtime resolves "
            "its start-up shim's imports relative to the main module's directory and imports "
            "the main module by its name (e.g. worker.py importing the entry class from a package)"
        )
    if not name.endswith(".py"):
        raise BundleError(f"{where}: must end with .py (the runtime imports name[:-3])")
    stem = name[:-3]
    if "." in stem:
        raise BundleError(
            f"{where}: no dot before .py: the runtime would import {stem.rpartition('.')[0]!r} "
            "as a package and look for the rest inside it"
        )
    if not stem.isidentifier() or keyword.iskeyword(stem):
        raise BundleError(
            f"{where}: {stem!r} is not a Python module name (letters, digits and _, not "
            "starting with a digit, not a keyword)"
        )
    if stem in _RESERVED_NAMES or stem in sys.stdlib_module_names:
        raise BundleError(
            f"{where}: {stem!r} is the name of a standard-library or runtime module or of the "
            "handler package, which the runtime would import instead of the main module"
        )


def external_sdk_enabled(compatibility_date: str, flags: Iterable[str]) -> bool:
    """Whether ``enable_python_external_sdk`` is on: the runtime then has no ``workers`` module."""
    flag_set = set(flags)
    if EXTERNAL_SDK_ON in flag_set:
        return True
    return compatibility_date >= EXTERNAL_SDK_DATE and EXTERNAL_SDK_OFF not in flag_set


def check_compatibility(
    compatibility_date: str, flags: Iterable[str], module_names: Iterable[str]
) -> None:
    """Refuse a compatibility date and flags under which this bundle cannot load."""
    try:
        parsed = date.fromisoformat(compatibility_date)
    except ValueError:
        raise BundleError(
            f"compatibility date {compatibility_date!r}: not a date in the form YYYY-MM-DD"
        ) from None
    if parsed.isoformat() != compatibility_date:
        raise BundleError(f"compatibility date {compatibility_date!r}: write it as YYYY-MM-DD")
    flag_list = list(flags)
    if "python_workers" not in flag_list:
        raise BundleError("compatibility flags: a Python Worker needs the python_workers flag")
    if compatibility_date < CLASS_ENTRY_DATE:
        raise BundleError(
            f"compatibility date {compatibility_date}: the class-style entry (Default, a "
            f"WorkerEntrypoint) needs {CLASS_ENTRY_DATE} or later"
        )
    if external_sdk_enabled(compatibility_date, flag_list) and (
        UPLOADED_SDK_MODULE not in set(module_names)
    ):
        raise BundleError(
            f"compatibility date {compatibility_date} with flags {flag_list}: "
            f"{EXTERNAL_SDK_ON} is on (from {EXTERNAL_SDK_DATE}, or set), so the runtime has no "
            f"built-in `workers` module, and the bundle does not upload the SDK "
            f"({UPLOADED_SDK_MODULE}): keep the date before {EXTERNAL_SDK_DATE}, add "
            f"{EXTERNAL_SDK_OFF}, or upload the SDK"
        )


def check_bundle(
    main_module: str,
    modules: Iterable[tuple[str, bytes]],
    compatibility_date: str,
    flags: Iterable[str],
) -> None:
    """Everything above for one upload: the main module's name, that it is uploaded, and the
    date and flags against the modules."""
    check_main_module(main_module)
    names = [name for name, _ in modules]
    if main_module not in names:
        raise BundleError(f"main module {main_module!r}: not among the modules uploaded")
    check_compatibility(compatibility_date, flags, names)
