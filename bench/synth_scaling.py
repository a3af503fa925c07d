"""Whole-process synth time for 1, 100 and 1,000 repositories, and the ratio 1,000 / 1.

Each run is a fresh ``python main.py --config <generated> --out <tmp>``, so the figure includes
interpreter start, loading the provider bindings and writing cdktf.out/, as `make synth` does.
For comparison the same sizes run with one webhook resource per repository (the alternative to
the single ``for_each`` resource the GitHub stack uses), in the same process tree and order.

    python bench/synth_scaling.py [--runs 3]

Prints a table of median seconds; goal: the ratio for the shipped layout under 1.5.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "config.toml"
SIZES = (1, 100, 1000)


def config_with(repositories: int, directory: Path) -> Path:
    text = EXAMPLE.read_text()
    names = ", ".join(f'"service-{index:04d}"' for index in range(repositories))
    text, count = re.subn(
        r"^repositories = \[.*?^\]", f"repositories = [{names}]", text, flags=re.S | re.M
    )
    if count != 1:
        raise SystemExit("bench: cannot find the repositories list in examples/config.toml")
    path = directory / f"repos-{repositories}.toml"
    path.write_text(text)
    return path


def per_resource_child(config_path: str, outdir: str) -> None:
    """Synthesize with one github_repository_webhook resource per repository."""
    sys.path.insert(0, str(REPO_ROOT))
    from cdktf import Fn
    from cdktf_cdktf_provider_github.repository_webhook import (
        RepositoryWebhook,
        RepositoryWebhookConfiguration,
    )
    from constructs import Construct

    import stacks.github
    from config import load_config
    from handler.contract import webhook_path
    from main import build_app

    class PerResourceWebhooks(Construct):
        def __init__(self, scope, id, *, repositories, webhook_hostname, secret_key):  # type: ignore[no-untyped-def]
            super().__init__(scope, id)
            for repo in repositories:
                RepositoryWebhook(
                    self,
                    repo.name,
                    repository=repo.name,
                    events=["workflow_job"],
                    active=True,
                    configuration=RepositoryWebhookConfiguration(
                        url=f"https://{webhook_hostname}{webhook_path(repo.full_name)}",
                        content_type="json",
                        insecure_ssl=False,
                        secret=Fn.sha256(f"{secret_key}:{repo.full_name.lower()}"),
                    ),
                )

    stacks.github.RepositoryWebhooks = PerResourceWebhooks  # type: ignore[misc,assignment]
    build_app(load_config(config_path), outdir).synth()


def timed(layout: str, config: Path, scratch: Path) -> float:
    outdir = tempfile.mkdtemp(dir=scratch)
    if layout == "for_each":
        command = [sys.executable, "main.py", "--config", str(config), "--out", outdir]
    else:
        command = [sys.executable, __file__, "--child", str(config), outdir]
    environment = {**os.environ, "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    started = time.perf_counter()
    subprocess.run(
        command, cwd=REPO_ROOT, env=environment, check=True, capture_output=True, text=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        per_resource_child(*args.child)
        return
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        configs = {size: config_with(size, scratch) for size in SIZES}
        results: dict[str, dict[int, float]] = {}
        for layout in ("for_each", "per-resource"):
            results[layout] = {}
            for size in SIZES:
                runs = [timed(layout, configs[size], scratch) for _ in range(args.runs)]
                results[layout][size] = statistics.median(runs)
        print(f"whole-process synth, median of {args.runs} runs (seconds)")
        print(f"{'layout':<14}" + "".join(f"{size:>10} repos" for size in SIZES) + "   1000/1")
        for layout, times in results.items():
            ratio = times[1000] / times[1]
            row = "".join(f"{times[size]:>16.2f}" for size in SIZES)
            marker = "  (shipped)" if layout == "for_each" else ""
            print(f"{layout:<14}{row}{ratio:>10.2f}{marker}")


if __name__ == "__main__":
    main()
