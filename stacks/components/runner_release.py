"""The actions/runner release the pools run, and a warning on every plan once a pin goes stale.

github.com gives jobs only to runners that installed each new actions/runner release within 30
days of its publication (and registers none older than 2.329.0, which ``config`` refuses).

- ``NewestRunnerRelease`` reads the newest release at plan time (``github_release`` with
  ``retrieve_by = "latest"``, which is never a draft or a prerelease) and offers ``image``, the
  official runner image of that version, as a Terraform expression. A pool without a pinned
  image runs it, so a new release shows in ``cdktf diff`` as an update of the pool's job.
- ``RunnerVersionWindowCheck`` adds a Terraform ``check`` block for the pinned official images.
  Its data source, scoped to the check, reads the newest releases (``github_rest_api``); one
  assertion per pinned version fails when a release newer than the pin came out more than 30
  days before the plan, and names it. Its assertions only ever warn, a failed read included;
  but the github.com provider must configure: a token it cannot use (a GHES token reaching
  github.com, an expired ``gh`` login) fails the plan (provider v6.9.0 calls ``GET /user`` when
  it has a token), as does a network error in ``github_rest_api`` (it reads the status of an
  answer that never came).
  cdktf 0.21 has no construct for check blocks, so this one is written into the stack's JSON as
  an override (the JSON form of ``check "name" { data ... {} assert {} }``).

Both read github.com's public API through the provider they are given, whatever GitHub the
runners serve: actions/runner lives there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cdktf import (
    Fn,
    Postcondition,
    TerraformProvider,
    TerraformResourceLifecycle,
    TerraformStack,
)
from cdktf_cdktf_provider_github.data_github_release import DataGithubRelease
from constructs import Construct

from config import OFFICIAL_RUNNER_IMAGE

RUNNER_OWNER = "actions"
RUNNER_REPOSITORY = "runner"
# Release tags are "v" + the version; the image tags are the version alone.
RELEASE_TAG_PATTERN = "^v([0-9]+)[.]([0-9]+)[.]([0-9]+)$"
UPDATE_WINDOW = "720h"  # GitHub's 30 days, in a duration timeadd() takes
# How many of the newest releases the check reads. Exact while they span more than 30 days (a
# year's worth at actions/runner's pace); a pin older than all of them is then overdue anyway.
RELEASES_READ = 20
CHECK_NAME = "runner_version_window"
RELEASES_DATA = "runner_releases"


def version_number(version: tuple[int, int, int]) -> int:
    """One number per version, ordered like the versions (minor and patch stay below 1000)."""
    major, minor, patch = version
    return major * 1_000_000 + minor * 1_000 + patch


def tag_number(tag: str) -> str:
    """Terraform expression: ``version_number`` of a release tag such as ``v2.330.0``."""
    return (
        f'sum([for i, part in regex("{RELEASE_TAG_PATTERN}", {tag}) : '
        f"tonumber(part) * pow(1000, 2 - i)])"
    )


def overdue_releases(releases: str, pinned: tuple[int, int, int]) -> str:
    """Terraform expression: tags of the releases newer than ``pinned`` published more than 30
    days before the plan. ``releases`` is the JSON text of GitHub's list of releases.

    Every step that could fail on an unexpected answer is inside ``try``: an error in a check
    assertion would fail the plan, where a warning is all this is for.
    """
    return (
        f'[for release in try(jsondecode({releases}), []) : try(release.tag_name, "?") if '
        f"!try(release.draft || release.prerelease, true) && "
        f"try({tag_number('release.tag_name')}, 0) > {version_number(pinned)} && "
        f"try(timecmp(plantimestamp(), timeadd(release.published_at, "
        f'"{UPDATE_WINDOW}")) > 0, false)]'
    )


class NewestRunnerRelease(Construct):
    """The newest actions/runner release, read at plan time; ``image`` is its official image."""

    def __init__(self, scope: Construct, id: str, *, provider: TerraformProvider) -> None:
        super().__init__(scope, id)
        self.release = DataGithubRelease(
            self,
            "release",
            provider=provider,
            owner=RUNNER_OWNER,
            repository=RUNNER_REPOSITORY,
            retrieve_by="latest",
            # A tag of another shape would make an image reference no registry has.
            lifecycle=TerraformResourceLifecycle(
                postcondition=[
                    Postcondition(
                        condition=f'${{can(regex("{RELEASE_TAG_PATTERN}", self.release_tag))}}',
                        error_message=(
                            "The newest actions/runner release has a tag that is not "
                            "v<major>.<minor>.<patch>, so the runner image cannot be derived "
                            "from it: pin images.runner to a release version for now."
                        ),
                    )
                ]
            ),
        )
        self.image = f"{OFFICIAL_RUNNER_IMAGE}:{Fn.trimprefix(self.release.release_tag, 'v')}"


class RunnerVersionWindowCheck(Construct):
    """A check block warning when a pinned official runner image has left GitHub's window.

    ``pins`` maps each pinned runner version to where the configuration pins it (e.g.
    ``["images.runner, pool small", "pools[2].image, pool gpu"]``), which its warning names.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        provider: TerraformProvider,
        pins: Mapping[tuple[int, int, int], Sequence[str]],
    ) -> None:
        super().__init__(scope, id)
        if not pins:
            raise ValueError("a version window check needs at least one pinned version")
        releases = f"data.github_rest_api.{RELEASES_DATA}"
        asserts = [
            {
                "condition": (
                    f"${{{releases}.code == 200 && can(jsondecode({releases}.body)[0].tag_name)}}"
                ),
                "error_message": (
                    f"Could not read the actions/runner releases (HTTP ${{{releases}.code}}), so "
                    "the pinned runner images were not checked against GitHub's 30-day update "
                    "window in this plan."
                ),
            }
        ]
        for version in sorted(pins):
            overdue = overdue_releases(f"{releases}.body", version)
            pinned = ".".join(str(part) for part in version)
            where = "; ".join(pins[version])
            asserts.append(
                {
                    "condition": f"${{length({overdue}) == 0}}",
                    "error_message": (
                        f"Runner {pinned} ({where}) is past GitHub's runner version window: "
                        f'actions/runner ${{try(join(", ", {overdue}), "a newer release")}} came '
                        "out more than 30 days before this plan, and GitHub keeps giving jobs "
                        "only to runners that install each release within 30 days of it. Pin a "
                        "current release, or remove the pin to follow the newest release."
                    ),
                }
            )
        TerraformStack.of(self).add_override(
            f"check.{CHECK_NAME}",
            {
                "data": {
                    "github_rest_api": {
                        RELEASES_DATA: {
                            "provider": provider.fqn,
                            "endpoint": (
                                f"repos/{RUNNER_OWNER}/{RUNNER_REPOSITORY}/releases"
                                f"?per_page={RELEASES_READ}"
                            ),
                        }
                    }
                },
                "assert": asserts,
            },
        )
