"""runner_job/node/runner-firewall.nft, loaded into a real kernel and tried with real packets.

``tests/fakes/firewall_node.sh`` builds a Nomad client node in miniature inside a fresh network
namespace (the ``nomad`` bridge, an allocation on it, a metadata address and "the internet"
routed through the node) and probes TCP connections from the allocation, once without the rules
and once with them. Network namespaces need root: the tests run as root or through passwordless
``sudo`` (as on CI runners); ``nft`` and ``ip`` come from the Debian packages ``make tools``
installs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from runner_job import RUNNER_JOB_DIR

RULES = RUNNER_JOB_DIR / "node" / "runner-firewall.nft"
NODE_MODEL = Path(__file__).resolve().parent / "fakes" / "firewall_node.sh"


def tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    assert path, f"{name} is missing: `make tools` installs it"
    return path


def as_root(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return command
    sudo = shutil.which("sudo")
    assert sudo, "network namespaces need root: run as root or with passwordless sudo"
    return [sudo, "-n", *command]


@cache
def probes(rules: str) -> dict[str, str]:
    """What the allocation (and the node) can reach, from one run of the node model."""
    result = subprocess.run(
        as_root([tool("unshare"), "-n", "bash", str(NODE_MODEL), rules]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split(" ", 1) for line in result.stdout.splitlines())


def test_the_rules_parse() -> None:
    result = subprocess.run(
        as_root([tool("nft"), "--check", "--file", str(RULES)]),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


def test_without_the_rules_the_allocation_reaches_everything() -> None:
    """The control: the model's paths are all open, so a closed one below is the rules' doing."""
    assert set(probes("none").values()) == {"open"}


@pytest.mark.parametrize(
    "probe", ["node-api-on-bridge-address", "node-api-on-lan-address", "metadata"]
)
def test_the_rules_close_the_node_and_the_metadata_address(probe: str) -> None:
    assert probes("none")[probe] == "open"
    assert probes(str(RULES))[probe] == "closed"


@pytest.mark.parametrize("probe", ["internet", "node-to-allocation"])
def test_the_rules_keep_the_way_out_and_the_nodes_own_connections(probe: str) -> None:
    """GitHub stays reachable; the node (e.g. a Nomad client check) still reaches allocations."""
    assert probes(str(RULES))[probe] == "open"


def test_the_rules_reload_in_place() -> None:
    """Loading twice (a reboot script and a change) replaces the table instead of failing."""
    script = f"nft -f {RULES} && nft -f {RULES} && nft list table inet nomad_github_runners"
    result = subprocess.run(
        as_root([tool("unshare"), "-n", "sh", "-c", script]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("chain input") == 1
    assert "fd00:ec2::254" in result.stdout
