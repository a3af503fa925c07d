"""handler.bundle: the uploaded modules are complete, main module first, no CPython adapter."""

import ast

from handler.bundle import COMPATIBILITY_DATE, COMPATIBILITY_FLAGS, MAIN_MODULE, worker_modules

MODULES = dict(worker_modules())


def test_main_module_comes_first():
    assert next(iter(MODULES)) == MAIN_MODULE == "handler/entry.py"


def test_the_cpython_adapter_is_never_uploaded():
    assert "handler/local_server.py" not in MODULES


def test_every_handler_import_of_an_uploaded_module_is_uploaded():
    """What the runtime tests run is what is deployed: nothing imported is left behind."""
    for name, content in MODULES.items():
        tree = ast.parse(content, filename=name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("handler")
            ):
                target = node.module.replace(".", "/")
                assert f"{target}.py" in MODULES or f"{target}/__init__.py" in MODULES, (
                    f"{name} imports {node.module}, which is not uploaded"
                )


def test_uploaded_modules_import_only_the_standard_library_and_the_runtime():
    allowed_runtime = {"workers", "js", "pyodide"}
    import sys

    for name, content in MODULES.items():
        for node in ast.walk(ast.parse(content, filename=name)):
            roots = []
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots = [node.module.split(".")[0]]
            for root in roots:
                assert (
                    root == "handler"
                    or root in sys.stdlib_module_names
                    or (name == MAIN_MODULE and root in allowed_runtime)
                ), f"{name} imports {root}: not uploaded, not in the runtime"


def test_class_style_entry_needs_a_2025_08_14_or_later_date():
    assert COMPATIBILITY_DATE >= "2025-08-14"
    assert "python_workers" in COMPATIBILITY_FLAGS
