"""The cdktf app: one configuration file in, four stacks out.

``build_app(config, outdir)`` composes the stacks and returns the ``App`` without synthesizing,
so tests and tools can import this module freely. Run as a script it validates the
configuration, synthesizes into ``--out`` and prints the deploy order:

    python main.py --config examples/config.toml --out cdktf.out

``cdktf synth`` runs the same through ``cdktf.json``; there the configuration comes from the
``CONFIG`` environment variable (default: the bundled example) and the output directory from
``CDKTF_OUTDIR``, which the cdktf CLI sets. A configuration error prints its message and exits
with status 2, without a traceback. No credential is needed to synthesize.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from config import AppConfig, ConfigError, load_config

if TYPE_CHECKING:
    from cdktf import App

DEFAULT_CONFIG = "examples/config.toml"
DEFAULT_OUTDIR = "cdktf.out"


def build_app(config: AppConfig, outdir: str | Path) -> App:
    """All four stacks, wired by cdktf references, in an App that writes to ``outdir``."""
    # Imported here so `import main` stays cheap (the provider bindings take ~2 s to load) and
    # needs no node process (jsii starts one on the first cdktf import).
    from cdktf import App

    from stacks import DispatchStack, EdgeStack, GitHubStack, NomadStack

    # stack_traces=False: construct stack traces would put absolute paths of this machine into
    # the synthesized JSON.
    app = App(outdir=str(outdir), stack_traces=False)
    edge = EdgeStack(app, "edge", config=config)
    nomad = NomadStack(app, "nomad", config=config, tunnel_token=edge.tunnel_token)
    dispatch = DispatchStack(
        app,
        "dispatch",
        config=config,
        nomad_api_url=edge.nomad_api_url,
        nomad_token=nomad.dispatch_token_secret,
        access_client_id=edge.access_client_id,
        access_client_secret=edge.access_client_secret,
    )
    GitHubStack(
        app,
        "github",
        config=config,
        webhook_hostname=dispatch.webhook_hostname,
        webhook_secret_key=dispatch.webhook_secret_key,
    )
    return app


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Synthesize the nomad-github-runners stacks from one configuration file."
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("CONFIG") or DEFAULT_CONFIG,
        help=f"TOML configuration file (default: $CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("CDKTF_OUTDIR") or DEFAULT_OUTDIR,
        help=f"output directory (default: $CDKTF_OUTDIR or {DEFAULT_OUTDIR})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    print(f"==> reading configuration {args.config}", file=sys.stderr)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    repositories = len(config.github.repositories)
    print(
        f"    {len(config.pools)} pool(s), {repositories} repositor"
        f"{'y' if repositories == 1 else 'ies'} of {config.github.owner}",
        file=sys.stderr,
    )
    if shutil.which("node") is None:
        # Without it jsii fails with an AttributeError about _NodeProcess, which says nothing.
        print(
            "error: Node.js not found on PATH: cdktf runs the constructs in a node process "
            "(install Node.js 20 or later)",
            file=sys.stderr,
        )
        return 2
    print(f"==> synthesizing into {args.out}/", file=sys.stderr)
    app = build_app(config, args.out)
    app.synth()
    from stacks import DEPLOY_ORDER
    from stacks.github import exposure_warnings

    for warning in exposure_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)

    elapsed = time.monotonic() - started
    print(
        f"==> done in {elapsed:.1f} s: stacks {', '.join(DEPLOY_ORDER)} in {args.out}/stacks/\n"
        f"    deploy in this order: npx --no-install cdktf deploy {' '.join(DEPLOY_ORDER)}\n"
        f"    then check the installation: make doctor CONFIG=...",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
