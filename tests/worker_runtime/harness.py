"""Run the dispatch Worker in the real local Workers runtime (wrangler 3.92.0), for tests and bench.

``LocalWorker(bindings, workdir)`` lays out a bundle in ``workdir``: the test-only shim
(``adapter.py``, the local runtime's main module), its loader and stubs from this folder, the
pure-Python ``workers`` SDK (PyPI ``workers-runtime-sdk``, pinned in the Pipfile) and exactly the
modules ``handler.bundle.worker_modules()`` uploads, under their upload names, so what runs is
what is deployed. The shim reaches the Worker only through the uploaded main module, imported by
the name ``handler.bundle.MAIN_MODULE`` gives as production does (``main_module_loader.py``);
``modules``/``main_module`` replace the uploaded ones, so a test can show that a layout
production refuses fails here too. It writes a ``wrangler.toml`` with the bindings as ``[vars]``
and the ``LEDGER`` KV namespace persisted under ``workdir``, starts ``wrangler dev`` in its own
process group and waits for the first 200 on ``/healthz`` (Pyodide loads on the first request,
not at "Ready").
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from handler.bundle import MAIN_MODULE, worker_modules

REPO_ROOT = Path(__file__).resolve().parents[2]
WRANGLER = REPO_ROOT / "node_modules" / ".bin" / "wrangler"
HERE = Path(__file__).resolve().parent
SHIM = "adapter.py"
ADAPTER_FILES = (
    SHIM,
    "main_module_loader.py",
    "_cloudflare_compat_flags.py",
    "_pyodide_entrypoint_helper.py",
)
# Written by build(): the one value the shim needs from handler.bundle.
MAIN_MODULE_FILE = "_harness_main_module.py"
# workerd 2024-11-06 is the newest runtime the local wrangler ships; it caps the date there.
LOCAL_COMPATIBILITY_DATE = "2024-11-06"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class _PortTaken(Exception):
    """wrangler could not bind the port picked for it: another process took it meanwhile."""


class LocalWorker:
    def __init__(
        self,
        bindings: dict[str, str],
        workdir: Path,
        *,
        modules: list[tuple[str, bytes]] | None = None,
        main_module: str = MAIN_MODULE,
    ) -> None:
        """``modules``/``main_module``: what is uploaded; by default what production uploads."""
        self.bindings = bindings
        self.workdir = workdir
        self.modules = worker_modules() if modules is None else modules
        self.main_module = main_module
        self.bundle = workdir / "bundle"
        self.log_path = workdir / "wrangler-output.log"
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def build(self) -> None:
        harness_files = {*ADAPTER_FILES, MAIN_MODULE_FILE, "workers"}
        clashes = sorted(name for name, _ in self.modules if name.split("/")[0] in harness_files)
        if clashes:
            raise ValueError(f"uploaded modules clash with the harness's own files: {clashes}")
        self.bundle.mkdir(parents=True, exist_ok=True)
        for name in ADAPTER_FILES:
            shutil.copy(HERE / name, self.bundle / name)
        (self.bundle / MAIN_MODULE_FILE).write_text(f"MAIN_MODULE = {self.main_module!r}\n")
        # Located, not imported: the SDK imports runtime-only modules (js, pyodide).
        spec = importlib.util.find_spec("workers")
        assert spec is not None and spec.submodule_search_locations, "workers-runtime-sdk missing"
        sdk = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(
            sdk, self.bundle / "workers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        for name, content in self.modules:
            target = self.bundle / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        lines = [
            'name = "dispatch-worker-test"',
            f'main = "{SHIM}"',
            f'compatibility_date = "{LOCAL_COMPATIBILITY_DATE}"',
            'compatibility_flags = ["python_workers"]',
            "",
            "[vars]",
            *(f"{name} = {_toml_string(value)}" for name, value in sorted(self.bindings.items())),
            "",
            "[[kv_namespaces]]",
            'binding = "LEDGER"',
            'id = "ledger-local"',
        ]
        (self.bundle / "wrangler.toml").write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 90.0, attempts: int = 3) -> None:
        """Start wrangler and wait for the Worker; a port taken between our pick and wrangler's
        bind ("Address already in use") is picked again, up to ``attempts`` times."""
        self.build()
        for attempt in range(attempts):
            try:
                self._launch(timeout)
                return
            except _PortTaken:
                if attempt == attempts - 1:
                    raise RuntimeError(f"no free port after {attempts} tries") from None
                self.port = _free_port()

    def _launch(self, timeout: float) -> None:
        env = dict(os.environ)
        env.update(
            WRANGLER_SEND_METRICS="false",
            # Inside the bundle the log file would trigger a reload on every write, for ever.
            WRANGLER_LOG_PATH=str(self.workdir / "wrangler-logs"),
            NO_COLOR="1",
            CI="1",
        )
        command = [
            str(WRANGLER),
            "dev",
            "--local",
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--inspector-port",
            str(_free_port()),
            "--persist-to",
            str(self.workdir / "state"),
            "--show-interactive-dev-session=false",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.bundle,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        server_errors = 0
        while time.monotonic() < deadline and server_errors < 3:
            if self.process.poll() is not None:
                output = self.output()
                if "Address already in use" in output:
                    raise _PortTaken
                raise RuntimeError(f"wrangler exited early:\n{output[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=10) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                # The Worker answered but failed: waiting longer will not fix it.
                server_errors += error.code >= 500
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the Worker never answered /healthz:\n{self.output()[-3000:]}")

    def kv_entry(self, key: str) -> tuple[str, int] | None:
        """(blob id, expiration in ms) of ``key`` in the persisted local KV, or None.

        Every put stores a new blob under a new id and moves the expiration (put time + TTL),
        so an unchanged pair means no write reached the key: how tests count KV writes without
        touching the code that makes them.
        """
        for database in (self.workdir / "state" / "v3" / "kv").glob("*/*.sqlite"):
            with contextlib.closing(sqlite3.connect(database)) as connection:
                row = connection.execute(
                    "SELECT blob_id, expiration FROM _mf_entries WHERE key = ?", (key,)
                ).fetchone()
            if row is not None:
                return str(row[0]), int(row[1])
        return None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalWorker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
