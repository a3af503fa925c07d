"""handler.bundle: the uploaded modules are complete, main module first at the bundle root, no
CPython adapter; and the checks that refuse, at synth time, what the Workers runtime refuses."""

import ast
import sys

import pytest

from handler.bundle import (
    COMPATIBILITY_DATE,
    COMPATIBILITY_FLAGS,
    EXTERNAL_SDK_DATE,
    MAIN_MODULE,
    UPLOADED_SDK_MODULE,
    BundleError,
    check_bundle,
    check_compatibility,
    check_main_module,
    external_sdk_enabled,
    worker_modules,
)

MODULES = dict(worker_modules())


def test_main_module_comes_first_at_the_bundle_root():
    assert next(iter(MODULES)) == MAIN_MODULE == "worker.py"


def test_the_main_module_exports_exactly_the_entry_class():
    tree = ast.parse(MODULES[MAIN_MODULE], filename=MAIN_MODULE)
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert [(node.module, [alias.name for alias in node.names]) for node in imports] == [
        ("handler.entry", ["Default"])
    ]
    exported = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "__all__"
    ]
    assert [ast.literal_eval(value) for value in exported] == [["Default"]]


def test_its_source_is_uploaded_only_at_the_root():
    assert "handler/worker.py" not in MODULES
    assert "handler/entry.py" in MODULES and "handler/__init__.py" in MODULES


def test_the_cpython_adapter_is_never_uploaded():
    assert "handler/local_server.py" not in MODULES


def test_the_uploaded_bundle_passes_its_own_checks():
    check_bundle(MAIN_MODULE, worker_modules(), COMPATIBILITY_DATE, COMPATIBILITY_FLAGS)


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
                    or (name == "handler/entry.py" and root in allowed_runtime)
                ), f"{name} imports {root}: not uploaded, not in the runtime"


# --- the main module's name ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker.py", "entry_point.py", "_main.py", "w2.py"])
def test_a_root_module_with_an_identifier_name_is_accepted(name):
    check_main_module(name)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("handler/entry.py", "must sit at the bundle root"),
        ("src/worker.py", "must sit at the bundle root"),
        ("/worker.py", "must sit at the bundle root"),
        ("handler\\entry.py", "must sit at the bundle root"),
        ("worker", "must end with .py"),
        ("worker.js", "must end with .py"),
        ("worker.pyc", "must end with .py"),
        ("handler.entry.py", "no dot before .py"),
        ("my-worker.py", "is not a Python module name"),
        ("2worker.py", "is not a Python module name"),
        ("class.py", "is not a Python module name"),
        (".py", "is not a Python module name"),
        ("json.py", "standard-library or runtime module"),
        ("workers.py", "standard-library or runtime module"),
        ("handler.py", "standard-library or runtime module"),
    ],
)
def test_a_main_module_the_runtime_cannot_load_is_refused_naming_it(name, problem):
    with pytest.raises(BundleError, match=problem) as refused:
        check_main_module(name)
    assert repr(name) in str(refused.value)


def test_the_bundle_check_refuses_a_main_module_that_is_not_uploaded():
    with pytest.raises(BundleError, match="not among the modules uploaded"):
        check_bundle("main.py", worker_modules(), COMPATIBILITY_DATE, COMPATIBILITY_FLAGS)


def test_the_bundle_check_refuses_the_layout_before_issue_8():
    layout = [(name, content) for name, content in worker_modules() if name != MAIN_MODULE]
    with pytest.raises(BundleError, match=r"'handler/entry\.py': must sit at the bundle root"):
        check_bundle("handler/entry.py", layout, COMPATIBILITY_DATE, COMPATIBILITY_FLAGS)


# --- compatibility date and the `workers` SDK ---------------------------------------------


def test_the_date_stays_before_the_one_that_removes_the_built_in_sdk():
    """Kept on purpose (see handler/bundle.py): the bundle does not upload the SDK."""
    assert UPLOADED_SDK_MODULE not in MODULES
    assert COMPATIBILITY_DATE < EXTERNAL_SDK_DATE == "2026-04-21"
    assert not external_sdk_enabled(COMPATIBILITY_DATE, COMPATIBILITY_FLAGS)


def test_class_style_entry_needs_a_2025_08_14_or_later_date():
    assert COMPATIBILITY_DATE >= "2025-08-14"
    assert "python_workers" in COMPATIBILITY_FLAGS
    with pytest.raises(BundleError, match="class-style entry"):
        check_compatibility("2025-08-13", COMPATIBILITY_FLAGS, MODULES)


@pytest.mark.parametrize(
    ("date", "flags", "enabled"),
    [
        ("2026-04-20", ["python_workers"], False),
        ("2026-04-21", ["python_workers"], True),
        ("2027-01-01", ["python_workers"], True),
        ("2026-04-21", ["python_workers", "disable_python_external_sdk"], False),
        ("2025-08-14", ["python_workers", "enable_python_external_sdk"], True),
    ],
)
def test_the_external_sdk_follows_its_date_and_flags(date, flags, enabled):
    assert external_sdk_enabled(date, flags) is enabled


@pytest.mark.parametrize(
    ("date", "flags"),
    [
        ("2026-04-21", ["python_workers"]),
        ("2026-09-01", ["python_workers"]),
        ("2025-08-14", ["python_workers", "enable_python_external_sdk"]),
    ],
)
def test_a_date_or_flag_without_the_built_in_sdk_is_refused_when_the_sdk_is_not_uploaded(
    date, flags
):
    with pytest.raises(BundleError, match=r"no\s+built-in `workers` module") as refused:
        check_compatibility(date, flags, MODULES)
    assert date in str(refused.value) and UPLOADED_SDK_MODULE in str(refused.value)


@pytest.mark.parametrize(
    ("date", "flags", "extra_modules"),
    [
        ("2026-04-20", ["python_workers"], []),
        ("2026-04-21", ["python_workers"], [UPLOADED_SDK_MODULE]),
        ("2026-04-21", ["python_workers", "disable_python_external_sdk"], []),
    ],
)
def test_a_date_is_accepted_when_the_sdk_is_built_in_or_uploaded(date, flags, extra_modules):
    check_compatibility(date, flags, [*MODULES, *extra_modules])


def test_the_sdk_at_the_bundle_root_does_not_count():
    # The runtime's refusing stub sits in site-packages, before the bundle root on sys.path.
    with pytest.raises(BundleError, match="built-in `workers` module"):
        check_compatibility("2026-04-21", ["python_workers"], [*MODULES, "workers/__init__.py"])


@pytest.mark.parametrize("date", ["2025-8-14", "20250814", "next week", ""])
def test_a_date_not_written_yyyy_mm_dd_is_refused(date):
    with pytest.raises(BundleError, match="compatibility date"):
        check_compatibility(date, COMPATIBILITY_FLAGS, MODULES)


def test_a_python_worker_without_the_python_workers_flag_is_refused():
    with pytest.raises(BundleError, match="python_workers flag"):
        check_compatibility(COMPATIBILITY_DATE, [], MODULES)
