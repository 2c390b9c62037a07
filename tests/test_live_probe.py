"""kscand.live.features: feature detection and the one-sentence findings; clock; selection."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from conftest import require
from fake_linux import FakeLinux, kpf

from kscand.cgroups import in_cgroup, normalize_cgroup
from kscand.errors import ConfigError, Unsupported
from kscand.live import LiveClock, probe
from kscand.live.features import Features, Topic, kpf_ksm_is_bogus, own_anon_page_kpageflags
from kscand.live.processes import cgroup_v2_path


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    return FakeLinux(tmp_path)


def single_node(fake: FakeLinux) -> None:
    fake.set_online("0", "0")
    fake.set_block_size(128 << 20)
    fake.add_node(0, cpus="0-1", blocks=range(4))
    fake.set_tiers({4: "0"})


def test_two_tier_host_with_page_idle_can_run(fake: FakeLinux) -> None:
    fake.two_tier()
    fake.enable_page_idle(1 << 20)
    features = probe(fake.procfs, fake.sysfs, is_root=True)
    assert features.online_nodes == (0, 1)
    assert features.slow_tier_nodes == (1,)
    assert features.tiers == {0: 4, 1: 67}
    assert features.choose_access_source() == (
        "page_idle", f"the kernel has {fake.sysfs}/kernel/mm/page_idle/bitmap: per-page "
        "Accessed bits",
    )
    assert features.blocking_reason() is None
    assert features.sentences() == []


def test_this_hosts_shape_one_node_no_page_idle_damon_paddr_only(fake: FakeLinux) -> None:
    """What the development host looks like: every finding says why, in order."""
    single_node(fake)
    fake.write_sys("kernel/mm/damon/admin/kdamonds/nr_kdamonds", "1\n")
    fake.write_sys("kernel/mm/damon/admin/kdamonds/0/contexts/0/avail_operations", "paddr\n")
    fake.write_proc("sys/kernel/numa_balancing", "0\n")
    features = probe(fake.procfs, fake.sysfs, is_root=True)
    assert features.damon_vaddr is False
    findings = features.findings()
    assert [f.topic for f in findings] == [Topic.ACCESS, Topic.NUMA]
    assert findings[0].sentence == (
        f"this kernel has no {fake.sysfs}/kernel/mm/page_idle/bitmap "
        "(CONFIG_IDLE_PAGE_TRACKING); no DAMON either: DAMON has no vaddr operations "
        "(CONFIG_DAMON_VADDR; available: paddr)"
    )
    assert findings[1].sentence == "only one NUMA node (node 0): nothing to promote"
    assert features.blocking_reasons() == [findings[0].sentence, findings[1].sentence]
    assert features.blocking_reason() == (
        f"2 things block promotion here: (1) {findings[0].sentence}; (2) {findings[1].sentence}")


def test_damon_fallback_is_a_note_not_a_blocker(fake: FakeLinux) -> None:
    fake.two_tier()
    fake.write_sys("kernel/mm/damon/admin/kdamonds/nr_kdamonds", "0\n")
    features = probe(fake.procfs, fake.sysfs, is_root=True)
    name, why = features.choose_access_source()
    assert name == "damon"
    assert why.endswith("(CONFIG_IDLE_PAGE_TRACKING); using DAMON")
    assert [(f.topic, f.blocking) for f in features.findings()] == [(Topic.ACCESS, False)]
    assert features.blocking_reason() is None


def test_damon_in_use_by_another_tool(fake: FakeLinux) -> None:
    fake.two_tier()
    fake.write_sys("kernel/mm/damon/admin/kdamonds/nr_kdamonds", "2\n")
    fake.write_sys("kernel/mm/damon/admin/kdamonds/0/contexts/0/avail_operations",
                   "vaddr fvaddr paddr\n")
    features = probe(fake.procfs, fake.sysfs, is_root=True)
    assert features.choose_access_source()[0] == "none"
    assert "in use (2 kdamond(s)" in (features.blocking_reason() or "")


def test_not_root_numa_balancing_and_no_slow_tier(fake: FakeLinux) -> None:
    fake.set_online("0-1", "0-1")
    fake.add_node(0, cpus="0")
    fake.add_node(1, cpus="1")
    fake.set_tiers({4: "0-1"})
    fake.enable_page_idle(64)
    fake.write_proc("sys/kernel/numa_balancing", "2\n")
    features = probe(fake.procfs, fake.sysfs, is_root=False)
    findings = features.findings()
    assert [f.topic for f in findings] == [Topic.PRIVILEGE, Topic.NOTE, Topic.TIERS]
    assert findings[0].sentence.startswith("not running as root")
    assert "numa_balancing=2" in findings[1].sentence and not findings[1].blocking
    assert findings[2].sentence.startswith("no slow-tier node: every online node")
    assert "set slow_nodes in the config" in findings[2].sentence
    # The config override makes node 1 slow: the tier finding goes away.
    overridden = probe(fake.procfs, fake.sysfs, is_root=True, slow_nodes=[1])
    assert overridden.slow_tier_nodes == (1,)
    assert overridden.blocking_reason() is None


def test_explicit_access_source_requests() -> None:
    features = Features(has_page_idle=False, has_damon_sysfs=False)
    with pytest.raises(Unsupported, match="CONFIG_IDLE_PAGE_TRACKING"):
        features.choose_access_source("page_idle")
    with pytest.raises(Unsupported, match="CONFIG_DAMON_SYSFS"):
        features.choose_access_source("damon")
    with pytest.raises(ConfigError, match="access_source"):
        features.choose_access_source("perf")
    both = Features(has_page_idle=True, has_damon_sysfs=True, damon_vaddr=True)
    assert both.choose_access_source("damon")[0] == "damon"


def test_no_kpageflags_blocks(fake: FakeLinux) -> None:
    fake.two_tier()
    fake.enable_page_idle(64)
    (Path(fake.procfs) / "kpageflags").unlink()
    reason = probe(fake.procfs, fake.sysfs, is_root=True).blocking_reason()
    assert reason is not None and "CONFIG_PROC_PAGE_MONITOR" in reason


# --- clock -------------------------------------------------------------------------------------


def test_live_clock_wake_and_stop_interrupt_sleep() -> None:
    clock = LiveClock()
    t0 = time.monotonic()
    threading.Timer(0.05, clock.wake).start()
    clock.sleep_ns(5_000_000_000)
    assert time.monotonic() - t0 < 2.0
    t1 = time.monotonic()
    clock.sleep_ns(20_000_000)  # the wake was consumed: this one sleeps
    assert time.monotonic() - t1 >= 0.015
    clock.stop()
    t2 = time.monotonic()
    clock.sleep_ns(5_000_000_000)
    clock.sleep_ns(5_000_000_000)
    assert time.monotonic() - t2 < 0.5 and clock.stopped


# --- cgroup selection helpers ----------------------------------------------------------------


def test_cgroup_paths() -> None:
    assert cgroup_v2_path("12:memory:/x\n0::/system.slice/a.service\n") == "/system.slice/a.service"
    assert cgroup_v2_path("4:memory:/x\n") is None
    assert normalize_cgroup("/sys/fs/cgroup/user.slice/") == "/user.slice"
    assert in_cgroup("/user.slice/u-1.slice", "user.slice")
    assert not in_cgroup("/user.slicer", "/user.slice")
    assert in_cgroup("/anything", "/")


def test_kpf_ksm_is_bogus_only_when_set_on_our_own_private_page() -> None:
    assert kpf_ksm_is_bogus(kpf("ANON", "LRU", "KSM"))
    assert not kpf_ksm_is_bogus(kpf("ANON", "LRU"))
    assert not kpf_ksm_is_bogus(None)  # unreadable: trust the flag


def test_fake_tree_without_own_pagemap_trusts_kpf_ksm(fake: FakeLinux) -> None:
    fake.two_tier()
    features = probe(fake.procfs, fake.sysfs, is_root=True)
    assert features.kpf_ksm_reliable
    assert not any("KPF_KSM" in s for s in features.sentences())


def test_bogus_kpf_ksm_is_a_note_not_a_blocker() -> None:
    features = Features(online_nodes=(0, 1), tiers={0: 4, 1: 67}, top_tier_nodes=(0,),
                        slow_tier_nodes=(1,), kpf_ksm_reliable=False)
    notes = [f for f in features.findings() if "KPF_KSM" in f.sentence]
    assert [(f.topic, f.blocking) for f in notes] == [(Topic.NOTE, False)]
    assert features.blocking_reason() is None


@pytest.mark.live
def test_own_anon_page_flags_on_this_host() -> None:
    """Cross-check on the real /proc: our fresh page is anonymous and mapped."""
    require(os.geteuid() == 0, "needs root: pagemap hides PFNs and kpageflags is root-only")
    require(os.path.exists("/proc/kpageflags"), "kernel without CONFIG_PROC_PAGE_MONITOR")
    flags = own_anon_page_kpageflags()
    assert flags is not None
    assert flags & kpf("ANON", "MMAP") == kpf("ANON", "MMAP")
