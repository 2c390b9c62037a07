"""Fixtures for tests that boot a QEMU guest (testbed/guest.py) on a two-tier topology.

Every test under tests/guest is marked `guest`. A guest test skips (fails under
CI=true) when qemu, virtme-ng or the kernel image is missing; `make testbed`
installs and builds all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from conftest import require

from testbed.guest import KERNEL_KINDS, Guest, Topology, missing_prerequisites
from testbed.guestresult import GuestResult

GUEST_DIR = Path(__file__).parent
# TCG boots take 20-40 s on 2 shared cores; leave room for slow CI machines.
DEFAULT_TIMEOUT_S = float(os.environ.get("KSCAND_GUEST_TIMEOUT_S", "600"))
BOOT_SLACK_S = 120.0  # boot and power-off (TCG)
# Before a scenario's own clock starts: a filler populating, the daemon and the workload
# importing numpy (each bounded by testbed/actors.py's 180 s timeouts), the stops after.
SCENARIO_SLACK_S = 3 * 180.0 + 60.0

BootOnce = Callable[[str, Sequence[str]], GuestResult]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected under tests/guest as `guest`."""
    for item in items:
        if GUEST_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.guest)


def require_guest(
    kernel: str, timeout_s: float | None = None, topology: Topology | None = None
) -> Guest:
    """A Guest for `kernel`, or skip (fail under CI=true) naming what is missing.

    timeout_s: the boot's limit when it is longer than the default (a scenario's own
    upper bounds in time); topology: the default two 1 GiB nodes unless given."""
    reasons = missing_prerequisites(kernel)
    require(not reasons, f"guest kernel {kernel!r} cannot boot: {'; '.join(reasons)}")
    limit_s = max(DEFAULT_TIMEOUT_S, timeout_s or 0.0)
    return Guest(kernel=kernel, timeout_s=limit_s, topology=topology or Topology())


@pytest.fixture(scope="session", params=KERNEL_KINDS)
def guest_kernel(request: pytest.FixtureRequest) -> str:
    """Each kernel kind in turn: "stock" (Debian 6.12) and "idle" (built, page_idle)."""
    kernel: str = request.param
    return kernel


@pytest.fixture(scope="session")
def boot_once(tmp_path_factory: pytest.TempPathFactory) -> BootOnce:
    """boot_once(kernel, commands) -> GuestResult, booting once per session per
    (kernel, commands) pair; later calls with the same pair reuse the result."""
    results: dict[tuple[str, tuple[str, ...]], GuestResult] = {}

    def boot(kernel: str, commands: Sequence[str]) -> GuestResult:
        key = (kernel, tuple(commands))
        if key not in results:
            guest = require_guest(kernel)
            rwdir = tmp_path_factory.mktemp(f"guest-{kernel}")
            results[key] = guest.run_commands(commands, rwdir)
        return results[key]

    return boot
