"""The live backend fed malformed /proc and /sys (hypothesis): truncated pagemap and
kpageflags reads, smaps with unknown or missing fields, stat lines with ')' and spaces in
the command name, empty node directories, non-numeric sysfs values. Each gives a clear
one-line error or a skipped process: never a traceback, never a move of a page the
well-formed tree does not hold as a hot slow-tier page."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry, stat_line
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kscand.core.engine import Kscand
from kscand.core.tunables import Tunables
from kscand.errors import KscandError, ProcessGone
from kscand.live import LinuxMachine, ProcessSelection
from kscand.live.procfs import ParseError, parse_maps, parse_smaps_vmflags, parse_stat
from kscand.machine import PAGE_SIZE, I32Array, U64Array

BLOCK_PAGES = (128 << 20) >> 12
NODE1_PFN = 8 * BLOCK_PAGES
PID = 4242
VMA = 0x10000000
NR_PAGES = 64
HOT = range(8, 40)  # pages present on node 1, private, on the LRU
GOOD = {VMA + i * PAGE_SIZE for i in HOT}
TUNABLES = Tunables().replace(scan_delay_ms=0, hot_history_depth=1, rank_hotness=False,
                              mm_scan_period_ms=1,
                              scan_period_min_ms=1, default_scale=1)

# Text files of the tree, relative to its root, and the binary ones.
TEXT_FILES = [
    f"proc/{PID}/stat", f"proc/{PID}/smaps", f"proc/{PID}/maps", f"proc/{PID}/cgroup",
    "sys/devices/system/node/online", "sys/devices/system/node/has_cpu",
    "sys/devices/system/node/node0/meminfo", "sys/devices/system/node/node1/meminfo",
    "sys/devices/system/node/node1/cpulist", "sys/devices/system/memory/block_size_bytes",
    "sys/devices/virtual/memory_tiering/memory_tier4/nodelist",
    "sys/devices/virtual/memory_tiering/memory_tier67/nodelist",
]
BINARY_FILES = [f"proc/{PID}/pagemap", "proc/kpageflags", "proc/kpagecount"]


class RecordingMover:
    def __init__(self) -> None:
        self.moved: list[int] = []

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> I32Array:
        self.moved += [int(v) for v in vaddrs]
        return np.full(vaddrs.shape, nid, dtype=np.int32)

    def query(self, pid: int, vaddrs: U64Array) -> I32Array:
        return np.full(vaddrs.shape, 1, dtype=np.int32)


def good_tree(root: Path) -> FakeLinux:
    fake = FakeLinux(root)
    fake.two_tier()
    fake.enable_page_idle(NODE1_PFN + BLOCK_PAGES)
    fake.add_process(PID, "app", start_time=5000,
                     smaps=smaps_entry(VMA, VMA + NR_PAGES * PAGE_SIZE))
    fake.set_pagemap(PID, {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (NODE1_PFN + i)
                           for i in HOT})
    fake.set_kpages([NODE1_PFN + i for i in HOT], ANON_LRU)
    return fake


def run_engine(fake: FakeLinux) -> list[int]:
    """Two engine steps on the tree; the moved addresses. A KscandError may end it early."""
    mover = RecordingMover()
    try:
        with LinuxMachine(fake.procfs, fake.sysfs, selection=ProcessSelection(pids=(PID,)),
                          self_pid=1) as machine:
            machine.mover = mover  # type: ignore[assignment]
            engine = Kscand(machine, TUNABLES)
            for _ in range(2):
                engine.step()
    except KscandError as err:  # a clear error: one line
        assert str(err) and "\n" not in str(err)
    return mover.moved


def test_the_well_formed_tree_promotes_exactly_its_hot_pages(tmp_path: Path) -> None:
    assert sorted(run_engine(good_tree(tmp_path))) == sorted(GOOD)


mutation = st.one_of(
    st.tuples(st.sampled_from(TEXT_FILES),
              st.sampled_from(["truncate", "junk", "delete", "insert", "empty"]),
              st.integers(0, 400), st.text(max_size=40)),
    st.tuples(st.sampled_from(BINARY_FILES), st.sampled_from(["truncate", "delete", "append"]),
              st.integers(0, 8 * (NODE1_PFN + 64)), st.binary(max_size=24).map(bytes.hex)),
    st.tuples(st.just("sys/devices/system/node/node1"), st.just("empty-dir"), st.just(0),
              st.just("")),
)


def apply(root: Path, rel: str, action: str, where: int, junk: str) -> int | None:
    """Mutate one file; returns the size a binary file was truncated to (else None)."""
    path = root / rel
    if action == "empty-dir":
        shutil.rmtree(path)
        path.mkdir()
        return None
    if action == "delete":
        path.unlink()
        return 0 if rel in BINARY_FILES else None
    if rel in BINARY_FILES:
        size = path.stat().st_size
        if action == "truncate":
            with open(path, "r+b") as f:
                f.truncate(min(where, size))
            return min(where, size)
        with open(path, "ab") as f:  # append
            f.write(bytes.fromhex(junk))
        return None
    text = path.read_text()
    new = {
        "truncate": text[: where % (len(text) + 1)],
        "junk": junk,
        "empty": "",
        "insert": "\n".join([*text.splitlines()[:where % 5], junk, *text.splitlines()[where % 5:]]),
    }[action]
    path.write_text(new)
    return None


def allowed_moves(root: Path, rel: str, truncated: int | None) -> set[int]:
    """The addresses a move may still name after this mutation."""
    if rel == f"proc/{PID}/stat":
        try:
            stat = parse_stat((root / rel).read_text())
        except (ParseError, OSError):
            return set()  # unreadable identity: the process is skipped
        if stat.state in ("Z", "X", "x") or stat.is_kernel_thread:
            return set()
    if truncated is not None and rel == f"proc/{PID}/pagemap":
        return {v for v in GOOD if (v // PAGE_SIZE) * 8 + 8 <= truncated}
    if truncated is not None and rel == "proc/kpageflags":
        return {VMA + i * PAGE_SIZE for i in HOT if (NODE1_PFN + i) * 8 + 8 <= truncated}
    return GOOD


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations=st.lists(mutation, min_size=1, max_size=2))
def test_malformed_trees_give_an_error_or_a_skip_never_a_stray_move(
    tmp_path_factory: pytest.TempPathFactory, mutations: list[tuple[str, str, int, str]]
) -> None:
    root = tmp_path_factory.mktemp("tree")
    good_tree(root)
    allowed = set(GOOD)
    for rel, action, where, junk in mutations:
        if not (root / rel).exists():
            continue
        truncated = apply(root, rel, action, where, junk)
        allowed &= allowed_moves(root, rel, truncated)
    moved = run_engine(_tree(root))
    assert set(moved) <= allowed, sorted(set(moved) - allowed)[:4]


def _tree(root: Path) -> FakeLinux:
    fake = FakeLinux.__new__(FakeLinux)
    fake.root, fake.proc, fake.sys = root, root / "proc", root / "sys"
    return fake


# -- the parsers alone ------------------------------------------------------------------------


@given(comm=st.text(alphabet=st.characters(blacklist_characters="\0\n"), max_size=15))
def test_stat_comm_with_any_characters_splits_at_the_last_paren(comm: str) -> None:
    stat = parse_stat(stat_line(77, comm, start_time=123456))
    assert (stat.pid, stat.comm, stat.start_time) == (77, comm, 123456)


@given(text=st.text(max_size=200))
def test_stat_of_any_text_parses_or_is_a_parse_error(text: str) -> None:
    try:
        stat = parse_stat(text)
    except ParseError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(stat.start_time, int)


@given(cut=st.integers(0, 300))
def test_truncated_stat_is_a_parse_error_or_complete(cut: int) -> None:
    line = stat_line(77, "a) b (c", start_time=123456)
    try:
        stat = parse_stat(line[:cut])
    except ParseError:
        return
    assert stat.comm == "a) b (c" and stat.pid == 77


SMAPS = (smaps_entry(0x1000, 0x5000, vmflags="rd wr mr mw me ac xx yy")
         + smaps_entry(0x10000, 0x20000, "r--p", vmflags=None, inode=42, path="/lib/x y.so")
         + smaps_entry(0x30000, 0x31000, "rw-s", vmflags="rd wr sh mr mw me ms"))


@given(lines=st.lists(st.sampled_from([*SMAPS.splitlines(), "Bogus: 1 kB", "VmFlags:",
                                       "VmFlags: ?? !!", "zz-yy rw-p", "0-0 rw-p 0 0:0 0",
                                       "ffff-1000 rw-p 00000000 00:00 0", "", "\t"]),
                      max_size=30))
def test_smaps_and_maps_with_unknown_missing_or_broken_lines_never_raise(
    lines: list[str]
) -> None:
    text = "\n".join(lines)
    for key in parse_smaps_vmflags(text):
        assert key[0] < key[1]
    for entry in parse_maps(text):
        assert entry.start < entry.end


def test_a_vanished_process_during_the_scan_is_a_skip(tmp_path: Path) -> None:
    fake = good_tree(tmp_path)
    mover = RecordingMover()
    with LinuxMachine(fake.procfs, fake.sysfs, selection=ProcessSelection(pids=(PID,)),
                      self_pid=1) as machine:
        machine.mover = mover  # type: ignore[assignment]
        proc = machine.processes()[0]
        fake.remove_process(PID)
        with pytest.raises(ProcessGone):
            machine.vmas(proc)
        engine = Kscand(machine, TUNABLES)
        engine.step()
    assert mover.moved == []
