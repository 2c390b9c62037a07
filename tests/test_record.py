"""kscand.inspect.record: passes over a scripted machine and the simulated one, the file
format (parsed back by the trace parser), compact addresses, THP folios, a process that
vanishes, and a recording replayed by `kscand sim`."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from simkit import COLD, HOT, scenario

from kscand.cli import main
from kscand.errors import AccessUnknown, ConfigError, ProcessGone
from kscand.inspect.record import (
    AddressMode,
    CompactLayout,
    RecordEnd,
    RecordHeader,
    RecordSummary,
    TraceOutput,
    escape_text,
    expand_folios,
    format_records,
    hex_column,
    intervals_of,
    record_process,
)
from kscand.machine import (
    NID_NONE,
    PAGE_SIZE,
    BoolArray,
    I32Array,
    NodeInfo,
    PageBatch,
    PageFlag,
    ProcessId,
    ProcessInfo,
    Topology,
    U64Array,
    Vma,
    VmFlag,
)
from kscand.sim.machine import SimMachine
from kscand.sim.tracefile import load_trace, parse_trace

PROC = ProcessId(4242, 1000)
HEAP = 0x5555_5555_4000  # not 2 MiB aligned: the compact layout keeps the offset
MMAP = 0x7F3A_0000_0000
RW = VmFlag.READ | VmFlag.WRITE
ELIGIBLE = PageFlag.PRESENT | PageFlag.LRU | PageFlag.ANON


class FakeClock:
    def __init__(self) -> None:
        self.now = 0
        self.sleeps: list[int] = []

    def now_ns(self) -> int:
        return self.now

    def sleep_ns(self, duration_ns: int) -> None:
        self.sleeps.append(duration_ns)
        self.now += max(duration_ns, 0)


class ScriptedMachine:
    """VMAs and per-page flags fixed; accessed[k] the vaddrs young at pass k (0: the
    baseline); gone_at: the pass (0: the baseline) at whose start the process has exited."""

    def __init__(self, vmas: list[Vma], flags: dict[int, PageFlag],
                 accessed: list[set[int]], gone_at: int | None = None,
                 pass_ns: int = 0) -> None:
        self._vmas = vmas
        self.flags = flags
        self.accessed = accessed
        self.gone_at = gone_at
        self.pass_ns = pass_ns
        self.passes = 0
        self.tested: list[list[int]] = []
        self._clock = FakeClock()

    @property
    def clock(self) -> FakeClock:
        return self._clock

    def topology(self) -> Topology:
        return Topology((NodeInfo(0, 1 << 20, 1 << 19, True, 1, True),))

    def processes(self) -> list[ProcessId]:
        self.passes += 1
        self.tested.append([])
        self._clock.now += self.pass_ns
        return [PROC]

    def _gone(self) -> bool:
        return self.gone_at is not None and self.passes - 1 >= self.gone_at

    def is_alive(self, proc: ProcessId) -> bool:
        return not self._gone()

    def describe(self, proc: ProcessId) -> ProcessInfo:
        return ProcessInfo("app", "")

    def vmas(self, proc: ProcessId) -> list[Vma]:
        if self._gone():
            raise ProcessGone("gone")
        return self._vmas

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        vaddr = np.arange(start, end, PAGE_SIZE, dtype=np.uint64)
        flags = np.array([int(self.flags.get(int(v), PageFlag(0))) for v in vaddr.tolist()],
                         dtype=np.uint32)
        present = (flags & PageFlag.PRESENT) != 0
        return PageBatch(vaddr, np.where(present, vaddr >> np.uint64(12), 0).astype(np.uint64),
                         np.where(present, 0, NID_NONE).astype(np.int32), flags)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        raise AssertionError("record reads ranges")

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        self.tested[-1] += pages.vaddr.tolist()
        young = self.accessed[self.passes - 1] if self.passes - 1 < len(self.accessed) else set()
        return np.array([int(v) in young for v in pages.vaddr.tolist()], dtype=np.bool_)

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        raise AssertionError("record never moves pages")


def header(addresses: AddressMode = AddressMode.VADDR, interval_s: float = 0.1,
           comm: str = "app") -> RecordHeader:
    return RecordHeader("6.12.0-test", "page_idle", interval_s, 1.0, PROC.pid, comm, PAGE_SIZE,
                        "2026-01-01T00:00:00+00:00", addresses)


def pages(base: int, n: int) -> dict[int, PageFlag]:
    return {base + i * PAGE_SIZE: ELIGIBLE for i in range(n)}


def run_record(machine: ScriptedMachine, path: Path, nr_intervals: int,
               hdr: RecordHeader | None = None) -> tuple[str, RecordSummary]:
    out = TraceOutput(path)
    try:
        summary = record_process(machine, PROC, out, hdr or header(), nr_intervals)
    finally:
        out.close()
    raw = path.read_bytes()
    return (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode(), summary


def two_vmas() -> list[Vma]:
    return [Vma(HEAP, HEAP + 8 * PAGE_SIZE, RW, "[heap]"),
            Vma(MMAP, MMAP + 4 * PAGE_SIZE, RW)]


def test_records_round_trip_through_the_trace_parser(tmp_path: Path) -> None:
    heap = [HEAP + i * PAGE_SIZE for i in range(8)]
    mmap = [MMAP + i * PAGE_SIZE for i in range(4)]
    accessed = [set(heap), {heap[0], heap[3], mmap[1]}, set(), {heap[7], mmap[0], mmap[3]}]
    machine = ScriptedMachine(two_vmas(), pages(HEAP, 8) | pages(MMAP, 4), accessed)
    text, summary = run_record(machine, tmp_path / "t.csv", 3)
    trace = parse_trace(text, "t.csv")
    # The baseline's accesses (pass 0) are not written; interval k at (k - 0.5) * 0.1 s.
    assert trace.t_s.tolist() == pytest.approx([0.05, 0.05, 0.05, 0.25, 0.25, 0.25])
    assert (trace.page << 12).tolist() == [heap[0], heap[3], mmap[1], heap[7], mmap[0], mmap[3]]
    assert set(trace.pid.tolist()) == {PROC.pid} and set(trace.count.tolist()) == {1.0}
    assert (trace.t_s // 0.1).astype(int).tolist() == [0, 0, 0, 2, 2, 2]  # replay windows
    assert machine.passes == 4 and all(len(t) == 12 for t in machine.tested)
    assert summary.intervals == 3 and summary.records == 6
    lines = text.splitlines()
    assert lines[:3] == [
        "# kscand record: the pages found accessed in each interval, one record per base page",
        "# kernel_release: 6.12.0-test", "# access_source: page_idle"]
    assert "# interval_s: 0.1" in lines and "# pid: 4242" in lines and "# comm: app" in lines
    assert "# page_size: 4096" in lines and "time_s,pid,address,count" in lines
    assert lines[-1] == "# end: done, 3 of 3 intervals, 6 records, 0 late; skipped over 4 " \
        "passes: none"


def test_interval_deadlines_follow_the_start(tmp_path: Path) -> None:
    machine = ScriptedMachine(two_vmas(), pages(HEAP, 8), [set()] * 4, pass_ns=30_000_000)
    _, summary = run_record(machine, tmp_path / "t.csv", 3, header(interval_s=0.1))
    # each pass took 30 ms: the sleeps make up the rest of each 100 ms interval
    assert machine.clock.sleeps == [70_000_000] * 3
    assert summary.late_intervals == 0
    slow = ScriptedMachine(two_vmas(), pages(HEAP, 8), [set()] * 4, pass_ns=150_000_000)
    text, summary = run_record(slow, tmp_path / "s.csv", 3, header(interval_s=0.1))
    assert summary.late_intervals == 3
    assert "3 late" in text.splitlines()[-1]


def test_compact_addresses_replay_in_a_small_vma(tmp_path: Path) -> None:
    heap = [HEAP + i * PAGE_SIZE for i in range(8)]
    accessed = [set(), {heap[1], MMAP + 2 * PAGE_SIZE}, {heap[1]}]
    machine = ScriptedMachine(two_vmas(), pages(HEAP, 8) | pages(MMAP, 4), accessed)
    text, summary = run_record(machine, tmp_path / "t.csv", 2, header(AddressMode.COMPACT))
    trace = parse_trace(text, "t.csv")
    offset = HEAP & ((2 << 20) - 1)
    # heap's chunk first (compact chunk 0, its offset kept), the mmap chunk next
    assert (trace.page << 12).tolist() == [offset + PAGE_SIZE, (2 << 20) + 2 * PAGE_SIZE,
                                           offset + PAGE_SIZE]
    maps = [line for line in text.splitlines() if line.startswith("# map ")]
    assert maps == [f"# map 0x0 {HEAP & ~((2 << 20) - 1):#x} 0x200000",
                    f"# map 0x200000 {MMAP:#x} 0x200000"]
    assert summary.span_bytes == (2 << 20) + 2 * PAGE_SIZE - offset


def test_compact_layout_appends_chunks_in_order_of_appearance() -> None:
    layout = CompactLayout()
    chunk = 2 << 20
    first = np.array([5 * chunk + 8, 3 * chunk, 4 * chunk + 4096], dtype=np.uint64)
    assert layout.assign(first) == [(0, 3 * chunk, 3 * chunk)]  # one run of 3 chunks
    assert layout.assign(first) == []
    later = np.array([chunk, 9 * chunk, 4 * chunk], dtype=np.uint64)
    assert layout.assign(later) == [(3 * chunk, chunk, chunk), (4 * chunk, 9 * chunk, chunk)]
    probe = np.array([chunk + 12, 3 * chunk, 5 * chunk + 8, 9 * chunk + 4096], dtype=np.uint64)
    assert layout.translate(probe).tolist() == [3 * chunk + 12, 0, 2 * chunk + 8,
                                                4 * chunk + 4096]


def test_filters_skip_and_count_what_the_engine_would_not_test(tmp_path: Path) -> None:
    vmas = [Vma(HEAP, HEAP + 8 * PAGE_SIZE, RW),
            Vma(MMAP, MMAP + 4 * PAGE_SIZE, VmFlag.READ | VmFlag.FILE, "/usr/lib/libc.so.6")]
    flags = pages(HEAP, 4)
    flags[HEAP + 4 * PAGE_SIZE] = ELIGIBLE | PageFlag.SHARED
    flags[HEAP + 5 * PAGE_SIZE] = PageFlag.PRESENT | PageFlag.ZERO
    everything = {HEAP + i * PAGE_SIZE for i in range(8)} | {MMAP}
    machine = ScriptedMachine(vmas, flags | pages(MMAP, 4), [everything] * 3)
    text, summary = run_record(machine, tmp_path / "t.csv", 2)
    assert machine.tested[1] == [HEAP + i * PAGE_SIZE for i in range(4)]
    trace = parse_trace(text, "t.csv")
    assert trace.nr_rows == 8
    skips = summary.page_skips + summary.vma_skips
    assert skips == {"page_shared": 3, "page_zero_page": 3, "page_not_present": 6,
                     "vma_file_readonly": 3}
    assert text.splitlines()[-1].endswith(
        "skipped over 3 passes: page_not_present=6 page_shared=3 page_zero_page=3 "
        "vma_file_readonly=3")


class SnapshotEveryOtherPass(ScriptedMachine):
    """The DAMON source when passes outpace its snapshots: nothing new on odd passes."""

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        if self.passes % 2 == 0:
            raise AccessUnknown("no DAMON snapshot since the last report")
        return super().test_and_clear_young(proc, pages)


def test_a_pass_the_source_knows_nothing_about_is_counted_not_recorded(
    tmp_path: Path,
) -> None:
    heap = {HEAP + i * PAGE_SIZE for i in range(8)}
    machine = SnapshotEveryOtherPass(two_vmas()[:1], pages(HEAP, 8), [heap] * 5)
    text, summary = run_record(machine, tmp_path / "t.csv", 4)
    trace = parse_trace(text, "t.csv")
    assert trace.nr_rows == 2 * 8  # intervals 2 and 4: the others had no observation
    assert summary.page_skips["access_unknown"] == 2 * 8
    assert "access_unknown=16" in text.splitlines()[-1]


def test_an_accessed_thp_is_written_as_its_base_pages() -> None:
    heads = np.array([0x200000, 0x600000], dtype=np.uint64)
    out = expand_folios(heads, np.array([512, 1], dtype=np.int64))
    assert out.size == 513 and out[0] == 0x200000 and out[511] == 0x200000 + 511 * PAGE_SIZE
    assert out[512] == 0x600000
    assert bool(np.all(np.diff(out[:512]) == PAGE_SIZE))


def test_thp_folio_through_a_pass(tmp_path: Path) -> None:
    thp = 0x4000_0000
    flags = {thp: ELIGIBLE | PageFlag.THP_HEAD}
    flags |= {thp + i * PAGE_SIZE: PageFlag.PRESENT | PageFlag.THP_TAIL for i in range(1, 512)}
    machine = ScriptedMachine([Vma(thp, thp + (2 << 20), RW)], flags, [set(), {thp}])
    text, _ = run_record(machine, tmp_path / "t.csv", 1)
    assert machine.tested[1] == [thp]  # the head stands for the folio
    trace = parse_trace(text, "t.csv")
    assert (trace.page << 12).tolist() == [thp + i * PAGE_SIZE for i in range(512)]


@pytest.mark.parametrize("gone_at", [3, 2, 1])
def test_a_vanished_process_leaves_the_whole_intervals(tmp_path: Path, gone_at: int) -> None:
    heap = [HEAP + i * PAGE_SIZE for i in range(8)]
    accessed = [set(), {heap[0]}, {heap[1]}, {heap[2]}, {heap[3]}]
    machine = ScriptedMachine(two_vmas(), pages(HEAP, 8), accessed, gone_at=gone_at)
    text, summary = run_record(machine, tmp_path / "t.csv", 4)
    assert summary.ended is RecordEnd.GONE
    assert summary.intervals == gone_at - 1
    if gone_at == 1:  # the baseline only: a header and a trailer, no record
        with pytest.raises(ConfigError, match="no records"):
            parse_trace(text, "t.csv")
    else:
        assert (parse_trace(text, "t.csv").page << 12).tolist() == heap[:gone_at - 1]
    assert text.splitlines()[-1].startswith(
        f"# end: process_gone, {gone_at - 1} of 4 intervals")


def test_a_process_gone_after_its_pass_drops_that_pass(tmp_path: Path) -> None:
    """An exiting process's pagemap reads empty: is_alive after the pass decides."""
    class QuietExit(ScriptedMachine):
        def is_alive(self, proc: ProcessId) -> bool:
            return self.passes < 3  # pass 2 read (empty) pages, then the check fails

    machine = QuietExit(two_vmas(), pages(HEAP, 8), [set(), {HEAP}, {HEAP}])
    text, summary = run_record(machine, tmp_path / "t.csv", 2)
    assert summary.intervals == 1 and parse_trace(text, "t").nr_rows == 1


def test_gzip_output_round_trips(tmp_path: Path) -> None:
    machine = ScriptedMachine(two_vmas(), pages(HEAP, 8), [set(), {HEAP, HEAP + PAGE_SIZE}])
    path = tmp_path / "t.csv.gz"
    run_record(machine, path, 1)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert (load_trace(str(path)).page << 12).tolist() == [HEAP, HEAP + PAGE_SIZE]


def test_record_lines_are_exact() -> None:
    addr = np.array([0x0, 0x1000, 0x7FFF_FFFF_F000], dtype=np.uint64)
    assert hex_column(addr).tobytes() == b"0x0000000000000x0000000010000x7ffffffff000"
    assert format_records(0.25, 7, addr[1:]) == (
        b"0.250000,7,0x000000001000,1\n0.250000,7,0x7ffffffff000,1\n")
    assert format_records(1.0, 7, np.zeros(0, dtype=np.uint64)) == b""


def test_header_escapes_the_comm() -> None:
    assert escape_text("a\nb\x1b[31m\\") == "a\\nb\\x1b[31m\\\\"
    lines = header(comm="evil\n1.0,1,0x1000,1").lines()
    assert "# comm: evil\\n1.0,1,0x1000,1" in lines
    assert all(line.startswith("#") for line in lines[:-1])


def test_intervals_of() -> None:
    assert intervals_of(1.0, 0.1) == 10 and intervals_of(1.0, 0.3) == 3
    assert intervals_of(0.3, 0.1) == 3 and intervals_of(5, 5) == 1


# --- from the simulated machine to `kscand sim` ----------------------------------------------


def sim_record(tmp_path: Path, nr_intervals: int) -> tuple[Path, SimMachine, ProcessId]:
    sc = scenario([{"name": "app", "vmas": [
        {"kind": "anon", "size": "256KiB", "workload": HOT},
        {"kind": "anon", "size": "512KiB", "workload": COLD},
    ]}])
    machine = SimMachine(sc)
    proc = machine.processes()[0]
    path = tmp_path / "sim.csv"
    out = TraceOutput(path)
    hdr = RecordHeader("sim", "sim", 0.5, nr_intervals * 0.5, proc.pid, "app", PAGE_SIZE,
                       "2026-01-01T00:00:00+00:00", AddressMode.COMPACT)
    try:
        summary = record_process(machine, proc, out, hdr, nr_intervals)
    finally:
        out.close()
    assert summary.intervals == nr_intervals
    return path, machine, proc


def test_a_simulated_hot_vma_is_recorded_every_interval(tmp_path: Path) -> None:
    path, machine, proc = sim_record(tmp_path, 4)
    trace = load_trace(str(path))
    hot = machine.vmas(proc)[0]
    nr_hot = (hot.end - hot.start) // PAGE_SIZE
    assert trace.nr_rows == 4 * nr_hot  # every hot page in each interval, no cold page
    per_window = np.bincount((trace.t_s // 0.5).astype(np.int64))
    assert per_window.tolist() == [nr_hot] * 4
    assert np.unique(trace.page).size == nr_hot


def write_replay(tmp_path: Path, trace: Path, pid: int, vma_kib: int,
                 window_s: float) -> Path:
    toml = tmp_path / "replay.toml"
    toml.write_text(f"""name = "replay"
seed = 1
duration_s = 4
sample_interval_s = 0.5

[[nodes]]
nid = 0
capacity = "2MiB"
cpus = true
tier = 4
latency_ns = 80

[[nodes]]
nid = 1
capacity = "64MiB"
cpus = false
tier = 67
latency_ns = 300

[[processes]]
name = "app"
placement = "slow"
vmas = [{{ kind = "anon", size = "{vma_kib}KiB", workload = {{ kind = "trace", path = "{trace}", trace_pid = {pid}, window_s = {window_s} }} }}]
""")
    return toml


def test_kscand_sim_replays_a_recording(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path, _, proc = sim_record(tmp_path, 4)
    toml = write_replay(tmp_path, path, proc.pid, 2048, 0.5)
    rc = main(["sim", str(toml)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "replay" in out

