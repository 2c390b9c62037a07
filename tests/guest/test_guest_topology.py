"""The guest testbed itself: two memory tiers, the access-tracking interfaces each
kernel should (not) have, and the project's venv usable inside the guest."""

from __future__ import annotations

import pytest

from testbed.guestresult import GuestResult, StepResult

from .conftest import BootOnce

pytestmark = pytest.mark.guest

TIERING = "/sys/devices/virtual/memory_tiering"
DAMON_ADMIN = "/sys/kernel/mm/damon/admin"
SCHEME = f"{DAMON_ADMIN}/kdamonds/0/contexts/0/schemes/0"
NODE1 = "/sys/devices/system/node/node1"
NUMAB = "/proc/sys/kernel/numa_balancing"

# name -> shell command; all run in one boot per kernel.
PROBES = {
    "tiers": (
        f'for d in {TIERING}/memory_tier*; do echo "${{d##*memory_tier}} $(cat $d/nodelist)"; done'
    ),
    "node1_cpus": f"cat {NODE1}/cpulist",
    "node1_mem_kib": f"sed -n 's/.*MemTotal: *\\([0-9]*\\) kB/\\1/p' {NODE1}/meminfo",
    "page_idle": "test -w /sys/kernel/mm/page_idle/bitmap && echo present || echo absent",
    "damon": f"cat {DAMON_ADMIN}/kdamonds/nr_kdamonds",
    "python": (
        '.venv/bin/python -c "import kscand, numpy; print(kscand.__name__, numpy.__version__)"'
    ),
    "numa_balancing": f"echo 2 > {NUMAB} && cat {NUMAB}",
    # DAMOS actions are accepted by name; migrate_hot needs target_nid (6.11+).
    "migrate_hot": (
        f"echo 1 > {DAMON_ADMIN}/kdamonds/nr_kdamonds"
        f" && echo 1 > {DAMON_ADMIN}/kdamonds/0/contexts/nr_contexts"
        f" && echo 1 > {DAMON_ADMIN}/kdamonds/0/contexts/0/schemes/nr_schemes"
        f" && echo migrate_hot > {SCHEME}/action && cat {SCHEME}/action"
        f" && test -e {SCHEME}/target_nid && echo target_nid"
    ),
}


@pytest.fixture(scope="module")
def probed(guest_kernel: str, boot_once: BootOnce) -> tuple[str, GuestResult]:
    """(kernel, result of one boot running every probe)."""
    return guest_kernel, boot_once(guest_kernel, list(PROBES.values()))


def probe(result: GuestResult, name: str) -> StepResult:
    """The step that ran probe `name`; asserts the guest reported it and it succeeded."""
    step = result.steps[list(PROBES).index(name)]
    assert step.ok, f"probe {name!r} failed\n{result.describe()}"
    return step


def tier_of_node(tiers_output: str) -> dict[int, int]:
    """Parse 'TIER NODELIST' lines (nodelist like '0' or '0-1,3') into {nid: tier id}."""
    tier_by_nid = {}
    for line in tiers_output.splitlines():
        tier, _, nodelist = line.partition(" ")
        for part in filter(None, nodelist.split(",")):
            first, _, last = part.partition("-")
            for nid in range(int(first), int(last or first) + 1):
                tier_by_nid[nid] = int(tier)
    return tier_by_nid


def test_tier_of_node_parses_ranges() -> None:
    assert tier_of_node("4 0\n67 1-2,5\n") == {0: 4, 1: 67, 2: 67, 5: 67}


def test_node1_is_a_lower_tier_than_node0(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    tiers = tier_of_node(probe(result, "tiers").stdout())
    assert set(tiers) == {0, 1}, f"unexpected tiers {tiers}\n{result.describe()}"
    assert tiers[0] < tiers[1], f"node 0 must be the top tier: {tiers}"


def test_node1_is_cpuless_with_its_memory(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    assert probe(result, "node1_cpus").stdout().strip() == ""
    node1_kib = int(probe(result, "node1_mem_kib").stdout())
    # 1 GiB node, less what the kernel reserves for itself.
    assert 900 * 1024 < node1_kib <= 1024 * 1024


def test_page_idle_bitmap_only_on_idle_kernel(probed: tuple[str, GuestResult]) -> None:
    kernel, result = probed
    expected = "present" if kernel == "idle" else "absent"
    assert probe(result, "page_idle").stdout().strip() == expected


def test_damon_sysfs_present(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    assert probe(result, "damon").stdout().strip() == "0"


def test_venv_python_imports_kscand_and_numpy(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    assert probe(result, "python").stdout().startswith("kscand ")


def test_numa_balancing_tiering_mode_can_be_set(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    assert probe(result, "numa_balancing").stdout().strip() == "2"


def test_damos_migrate_hot_action_exists(probed: tuple[str, GuestResult]) -> None:
    _, result = probed
    assert probe(result, "migrate_hot").stdout().split() == ["migrate_hot", "target_nid"]
