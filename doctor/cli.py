"""``python -m doctor``: run every check against a live installation and report.

    python -m doctor --config my-config.toml [--out cdktf.out]

Prints one line per part, ``PASS`` or ``FAIL``, and under each failure the one thing to change;
then a count. Exit status: 0 when every part passed, 1 when any failed, 2 when doctor could not
start (a configuration error). Every printed line goes through :func:`redact` with every
credential doctor read, so no secret reaches the terminal or a CI log.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from config import ConfigError, load_config
from doctor.checks import (
    CHECKS,
    HOOKS_TOKEN_ENV,
    NOMAD_TOKEN_ENV,
    READ_TOKEN_ENV,
    RELEASES_TOKEN_ENV,
    RUNNER_TOKEN_ENV,
    Check,
    Context,
    Outcome,
    run_checks,
)
from doctor.github_app import APP_KEY_ENV
from doctor.state import TerraformOutputs
from doctor.web import UrllibHttp

DEFAULT_CONFIG = "examples/config.toml"
DEFAULT_OUTDIR = "cdktf.out"
REDACTED = "[redacted]"
# Every credential the deploy's environment may hold, whether a check reads it or not.
KNOWN_CREDENTIALS = (
    RUNNER_TOKEN_ENV,
    READ_TOKEN_ENV,
    HOOKS_TOKEN_ENV,
    NOMAD_TOKEN_ENV,
    RELEASES_TOKEN_ENV,
    APP_KEY_ENV,  # with each line of it (Context.credential)
    "CLOUDFLARE_API_TOKEN",
    "TF_TOKEN_app_terraform_io",
    "AWS_SECRET_ACCESS_KEY",
)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (longest first, so no secret's tail survives) replaced."""
    for secret in sorted({secret for secret in secrets if secret}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def report(
    ctx: Context, out: TextIO, checks: Iterable[tuple[str, Check]] = CHECKS
) -> list[Outcome]:
    """Run the checks, print each outcome as it comes, return them all."""
    for name in KNOWN_CREDENTIALS:
        ctx.credential(name)  # known to the redactor from the start, read or not
    outcomes: list[Outcome] = []
    title_shown = None
    for title, outcome in run_checks(ctx, checks):
        if title != title_shown:
            out.write(f"\n{title}\n")
            title_shown = title
        mark = "PASS" if outcome.passed else "FAIL"
        lines = [f"  {mark}  {outcome.part}: {outcome.detail}"]
        if not outcome.passed:
            lines.append(f"        fix: {outcome.fix}")
        # Redacted at the last moment, with every secret known by now.
        out.write(redact("\n".join(lines), ctx.secrets) + "\n")
        out.flush()
        outcomes.append(outcome)
    failures = sum(not outcome.passed for outcome in outcomes)
    out.write(
        f"\n{len(outcomes) - failures} passed, {failures} failed"
        f"{'' if failures else ': the installation looks healthy'}\n"
    )
    return outcomes


def run(ctx: Context, out: TextIO, checks: Iterable[tuple[str, Check]] = CHECKS) -> int:
    """Report every check; the exit status: 0 only when every part passed."""
    outcomes = report(ctx, out, checks)
    return 0 if outcomes and all(outcome.passed for outcome in outcomes) else 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m doctor",
        description="Check a deployed nomad-github-runners installation, read-only.",
    )
    parser.add_argument(
        "--config",
        default=os.environ.get("CONFIG") or DEFAULT_CONFIG,
        help=f"the deployment's TOML configuration (default: $CONFIG or {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("CDKTF_OUTDIR") or DEFAULT_OUTDIR,
        help="the cdktf output directory the stacks were deployed from, where terraform "
        f"output reads their state (default: $CDKTF_OUTDIR or {DEFAULT_OUTDIR})",
    )
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
) -> int:
    args = _parse_args(argv)
    env = os.environ if env is None else env
    out = sys.stdout if out is None else out
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ctx = Context.for_config(
        config,
        http=UrllibHttp(
            ca_file=env.get("NOMAD_CACERT") or None,
            client_cert=env.get("NOMAD_CLIENT_CERT") or None,
            client_key=env.get("NOMAD_CLIENT_KEY") or None,
        ),
        state=TerraformOutputs(Path(args.out) / "stacks"),
        env=env,
        now=datetime.now(UTC),
    )
    out.write(
        f"doctor: {config.source}, {len(config.pools)} pool(s), "
        f"{len(config.github.repositories)} repositories of {config.github.owner}\n"
    )
    return run(ctx, out)
