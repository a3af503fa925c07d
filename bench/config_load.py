"""What reading the configuration costs a process: importing ``config`` (and pydantic, and
building the models), then validating the example and a 1,000-repository variant of it.

Each import is timed in a fresh interpreter (``python -c``), as ``make synth`` pays it once per
run; the loads are timed in one process after a first, untimed load.

    python bench/config_load.py [--runs 7]

Prints medians in milliseconds.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "config.toml"
IMPORT_PROBE = (
    "import time; start = time.perf_counter(); import config; print(time.perf_counter() - start)"
)


def with_repositories(count: int, directory: Path) -> Path:
    names = ", ".join(f'"service-{index:04d}"' for index in range(count))
    text, found = re.subn(
        r"^repositories = \[.*?^\]",
        f"repositories = [{names}]",
        EXAMPLE.read_text(),
        flags=re.S | re.M,
    )
    if found != 1:
        raise SystemExit("bench: cannot find the repositories list in examples/config.toml")
    path = directory / f"repos-{count}.toml"
    path.write_text(text)
    return path


def import_seconds() -> float:
    output = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return float(output)


def load_seconds(path: Path, repeat: int) -> float:
    sys.path.insert(0, str(REPO_ROOT))
    from config import load_config

    load_config(path)
    start = time.perf_counter()
    for _ in range(repeat):
        load_config(path)
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    imports = [import_seconds() for _ in range(args.runs)]
    with tempfile.TemporaryDirectory() as directory:
        large = with_repositories(1000, Path(directory))
        example = [load_seconds(EXAMPLE, 100) for _ in range(args.runs)]
        thousand = [load_seconds(large, 5) for _ in range(args.runs)]
    print(f"configuration cost, median of {args.runs} runs (milliseconds)")
    print(f"import config (fresh interpreter)      {1000 * statistics.median(imports):7.1f}")
    print(f"load examples/config.toml              {1000 * statistics.median(example):7.2f}")
    print(f"load the example with 1,000 repositories {1000 * statistics.median(thousand):5.1f}")


if __name__ == "__main__":
    main()
