"""Version rules doctor holds a live installation to, as pure functions.

* The runner: GitHub (github.com) refuses to register a runner below 2.329.0 and stops giving
  jobs to one that has not installed a newer release within 30 days of that release's
  publication (``shared/reference/FACTS.md``, GitHub, runner version enforcement). So a runner
  version passes when it is at least 2.329.0 and no release newer than it was published more
  than 30 days ago.
* Nomad: Community Edition 2.0.1 is the floor (CVE-2026-6959, HCSEC-2026-14: a task can escape
  through the shared log FIFOs; fixed in CE 2.0.1, Enterprise 1.11.5 and 1.10.11).

No I/O; ``now`` is always passed in. ``OFFICIAL_RUNNER_IMAGE`` and the 2.329.0 floor are
``config``'s, which refuses a pin below the floor; doctor checks what is deployed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import PurePosixPath
from typing import Any, Final

from config import MIN_RUNNER_VERSION, OFFICIAL_RUNNER_IMAGE

Version = tuple[int, int, int]

# The official runner image (its tags are the release versions) and github.com's floor: the
# configuration's own definitions, which it validates pins against.
RUNNER_FLOOR: Final[Version] = MIN_RUNNER_VERSION
RUNNER_WINDOW: Final = timedelta(days=30)
NOMAD_FLOOR: Final[Version] = (2, 0, 1)
# Enterprise lines that got the CVE-2026-6959 fix as a patch release.
NOMAD_ENTERPRISE_FLOORS: Final[dict[tuple[int, int], Version]] = {
    (1, 10): (1, 10, 11),
    (1, 11): (1, 11, 5),
}

_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+([0-9A-Za-z.-]+))?$")
_TAG_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:$|[-_+.])")


def format_version(version: Version) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True)
class Release:
    version: Version
    published_at: datetime


def releases_from_github(document: Any) -> list[Release]:
    """Published, non-prerelease releases from ``GET /repos/actions/runner/releases``."""
    if not isinstance(document, list):
        raise ValueError("expected a JSON list of releases")
    releases = []
    for item in document:
        if not isinstance(item, dict) or item.get("draft") or item.get("prerelease"):
            continue
        match = _VERSION.match(str(item.get("tag_name", "")))
        published = item.get("published_at")
        if match is None or match.group(4) or not isinstance(published, str):
            continue
        releases.append(Release(_triple(match), _timestamp(published)))
    return sorted(releases, key=lambda release: release.version, reverse=True)


def image_version(image: str) -> Version | None:
    """The version in an image's tag (``...actions-runner:2.330.0``, ``:2.330.0-ubuntu``), if any.

    A reference by digest alone, or a tag that does not start with a version, has none.
    """
    reference = image.split("@", 1)[0]
    name = PurePosixPath(reference).name
    if ":" not in name:
        return None
    match = _TAG_VERSION.match(name.rsplit(":", 1)[1])
    return _triple(match) if match else None


def is_official_runner_image(image: str) -> bool:
    reference = image.split("@", 1)[0]
    repository = reference.rsplit(":", 1)[0] if ":" in PurePosixPath(reference).name else reference
    return repository == OFFICIAL_RUNNER_IMAGE


@dataclass(frozen=True)
class RunnerWindow:
    """Whether one runner version is inside GitHub's window, and why (one line each)."""

    ok: bool
    detail: str
    newest: Version | None


def runner_window(version: Version, releases: Sequence[Release], now: datetime) -> RunnerWindow:
    newest = releases[0].version if releases else None
    shown = format_version(version)
    if version < RUNNER_FLOOR:
        return RunnerWindow(
            False,
            f"runner {shown} is below {format_version(RUNNER_FLOOR)}: GitHub refuses to "
            "register it",
            newest,
        )
    newer = [release for release in releases if release.version > version]
    if not newer:
        return RunnerWindow(True, f"runner {shown} is the newest release", newest)
    first = min(newer, key=lambda release: release.published_at)
    deadline = first.published_at + RUNNER_WINDOW
    newest_text = format_version(newer[0].version)
    if now >= deadline:
        return RunnerWindow(
            False,
            f"runner {shown} is out of GitHub's window: {format_version(first.version)} was "
            f"published {first.published_at:%Y-%m-%d}, over 30 days ago (newest: {newest_text})",
            newest,
        )
    days = max((deadline - now).days, 0)
    return RunnerWindow(
        True,
        f"runner {shown} is inside GitHub's window until {deadline:%Y-%m-%d} ({days} days; "
        f"newest: {newest_text})",
        newest,
    )


def nomad_version_ok(text: str) -> bool:
    """Whether a Nomad agent version (``2.0.1``, ``1.11.5+ent``, ``2.1.0-beta.1``) is fixed."""
    match = _VERSION.match(text.strip())
    if match is None:
        return False
    version = _triple(match)
    prerelease = match.group(4)
    enterprise = "ent" in (match.group(5) or "").split(".")
    floor = NOMAD_FLOOR
    if enterprise:
        floor = NOMAD_ENTERPRISE_FLOORS.get(version[:2], NOMAD_FLOOR)
        if version[:2] < (1, 10):
            return False
    if version == floor and prerelease:
        return False  # a pre-release of the fixed version predates the fix
    return version >= floor


def below_floor(versions: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(agent, version)`` pairs whose version is not fixed."""
    return [(agent, version) for agent, version in versions if not nomad_version_ok(version)]


def _triple(match: re.Match[str]) -> Version:
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)))


def _timestamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
