"""Test-only: find the Worker's entry class the way the production Python Workers runtime does.

The local runtime (wrangler 3.92.0) calls only a top-level ``on_fetch``, so the harness's
``adapter.py`` is its main module; this is how that adapter reaches the Worker, and it must
reach it only as production would, or a layout production refuses would pass the tests. The
rule, read in workerd's source (github.com/cloudflare/workerd at 6552d999, 2026-08-22):

1. ``src/pyodide/python-entrypoint-helper.ts``, ``pyimportMainModule``: a main module name not
   ending in ``.py`` is refused; otherwise ``pyodide.pyimport(main_module[:-3])`` imports it by
   that name (Pyodide's ``pyimport`` imports the part before the last dot, then takes the last
   part as an attribute or submodule). ``handler/entry`` is no module name: ModuleNotFoundError.
2. ``src/pyodide/internal/introspection.py``, ``collect_classes``: the names the module exports
   (its ``__all__``, else every public name in ``dir()``) that are classes deriving from, and not
   being, ``WorkerEntrypoint``.
3. ``handleDefaultClass`` in the same helper: the one named ``Default`` is the Worker's default
   export; with none the runtime has no handler to call.

Plain Python, no runtime-only import: the adapter runs it in Pyodide, the unit tests under CPython.
"""

from __future__ import annotations

import importlib
from inspect import isclass
from types import ModuleType
from typing import Any

DEFAULT_CLASS_NAME = "Default"


def import_main_module(main_module: str) -> ModuleType:
    """Step 1: import the main module by the name the runtime derives from its file name."""
    if not main_module.endswith(".py"):
        raise ImportError(f"main module {main_module!r}: needs to end with a .py file extension")
    name = main_module[:-3]
    parent, dot, last = name.rpartition(".")
    if dot:
        found = getattr(importlib.import_module(parent), last, None)
        if isinstance(found, ModuleType):
            return found
    return importlib.import_module(name)


def entrypoint_classes(module: ModuleType, entrypoint_base: type) -> list[type]:
    """Step 2: the ``entrypoint_base`` subclasses the module exports."""
    names: Any = getattr(module, "__all__", None)
    if names is None:
        names = [name for name in dir(module) if not name.startswith("_")]
    exported = [getattr(module, name) for name in names]
    return [
        value
        for value in exported
        if isclass(value) and issubclass(value, entrypoint_base) and value is not entrypoint_base
    ]


def load_entry_class(main_module: str, entrypoint_base: type) -> type:
    """Steps 1-3: the class the runtime would serve as the Worker, or the error it would raise."""
    module = import_main_module(main_module)
    for cls in entrypoint_classes(module, entrypoint_base):
        if cls.__name__ == DEFAULT_CLASS_NAME:
            return cls
    raise TypeError(
        f"main module {main_module!r} exports no {entrypoint_base.__name__} subclass named "
        f"{DEFAULT_CLASS_NAME!r}: the runtime would have no default handler"
    )
