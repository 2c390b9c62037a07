"""A fake procfs/sysfs tree in a temporary directory, for the live backend's unit tests.

Binary files (pagemap, kpageflags, kpagecount, the idle bitmap) are sparse
files of little-endian u64 words at the kernel's offsets; text files follow
the kernel's formats. Nothing here emulates the kernel's side effects except
where a test says so.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

PAGE_SHIFT = 12
PM_PRESENT = 1 << 63
PM_SWAP = 1 << 62
PM_FILE = 1 << 61
PM_EXCLUSIVE = 1 << 56

KPF = {
    "LOCKED": 0, "REFERENCED": 2, "DIRTY": 4, "LRU": 5, "ACTIVE": 6, "SLAB": 7, "BUDDY": 10,
    "MMAP": 11, "ANON": 12, "SWAPCACHE": 13, "SWAPBACKED": 14, "COMPOUND_HEAD": 15,
    "COMPOUND_TAIL": 16, "HUGE": 17, "UNEVICTABLE": 18, "HWPOISON": 19, "NOPAGE": 20, "KSM": 21,
    "THP": 22, "OFFLINE": 23, "ZERO_PAGE": 24, "IDLE": 25, "PGTABLE": 26,
}


def kpf(*names: str) -> int:
    """A kpageflags word with the named KPF_* bits set."""
    word = 0
    for name in names:
        word |= 1 << KPF[name]
    return word


ANON_LRU = kpf("ANON", "LRU", "MMAP", "SWAPBACKED")


def stat_line(
    pid: int,
    comm: str = "app",
    *,
    state: str = "S",
    ppid: int = 1,
    flags: int = 0x400100,
    start_time: int = 1000,
) -> str:
    """A /proc/PID/stat line with the given fields (others plausible)."""
    fields = [state, str(ppid), str(pid), str(pid), "0", "-1", str(flags)]
    fields += ["0"] * 12  # minflt .. itrealvalue: fields 10-21
    fields += [str(start_time), "1000000", "100"]  # starttime (22), vsize, rss
    fields += ["0"] * 27
    return f"{pid} ({comm}) " + " ".join(fields) + "\n"


def write_u64s(path: Path, entries: dict[int, int]) -> None:
    """Write u64 words at index -> value into a (sparse) file, creating it if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "r+b" if path.exists() else "w+b"
    with open(path, mode) as f:
        for index, value in sorted(entries.items()):
            f.seek(index * 8)
            f.write(struct.pack("<Q", value))


def read_u64s(path: Path, first: int, count: int) -> list[int]:
    with open(path, "rb") as f:
        f.seek(first * 8)
        data = f.read(count * 8)
    data += b"\0" * (count * 8 - len(data))
    return list(struct.unpack(f"<{count}Q", data))


class FakeLinux:
    """Builds <root>/proc and <root>/sys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc = root / "proc"
        self.sys = root / "sys"
        self.proc.mkdir(parents=True)
        self.sys.mkdir(parents=True)
        (self.proc / "self").mkdir()
        (self.proc / "self" / "pagemap").write_bytes(b"")
        for name in ("kpageflags", "kpagecount"):
            (self.proc / name).write_bytes(b"")
        self.write_proc("sys/kernel/numa_balancing", "0\n")

    @property
    def procfs(self) -> str:
        return str(self.proc)

    @property
    def sysfs(self) -> str:
        return str(self.sys)

    def write_proc(self, rel: str, text: str) -> Path:
        path = self.proc / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def write_sys(self, rel: str, text: str) -> Path:
        path = self.sys / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    # --- processes --------------------------------------------------------------------------

    def add_process(
        self,
        pid: int,
        comm: str = "app",
        *,
        start_time: int = 1000,
        state: str = "S",
        flags: int = 0x400100,
        smaps: str = "",
        maps: str | None = None,
        cgroup: str = "/",
    ) -> Path:
        """A process dir with stat, smaps, maps (derived from smaps unless given), cgroup."""
        base = self.proc / str(pid)
        base.mkdir(parents=True, exist_ok=True)
        (base / "stat").write_text(
            stat_line(pid, comm, state=state, flags=flags, start_time=start_time)
        )
        (base / "smaps").write_text(smaps)
        if maps is None:
            maps = "".join(
                line + "\n" for line in smaps.splitlines() if line[:1] in "0123456789abcdef"
            )
        (base / "maps").write_text(maps)
        (base / "cgroup").write_text(f"0::{cgroup}\n")
        (base / "pagemap").write_bytes(b"")
        return base

    def remove_process(self, pid: int) -> None:
        base = self.proc / str(pid)
        for child in base.iterdir():
            child.unlink()
        base.rmdir()

    def set_pagemap(self, pid: int, entries: dict[int, int]) -> None:
        """pagemap entries by virtual address."""
        by_page = {vaddr >> PAGE_SHIFT: entry for vaddr, entry in entries.items()}
        write_u64s(self.proc / str(pid) / "pagemap", by_page)

    def set_kpage(self, pfn: int, flags: int, count: int = 1) -> None:
        write_u64s(self.proc / "kpageflags", {pfn: flags})
        write_u64s(self.proc / "kpagecount", {pfn: count})

    def set_kpages(self, pfns: Iterable[int], flags: int, count: int = 1) -> None:
        pfns = list(pfns)
        write_u64s(self.proc / "kpageflags", dict.fromkeys(pfns, flags))
        write_u64s(self.proc / "kpagecount", dict.fromkeys(pfns, count))

    # --- nodes ------------------------------------------------------------------------------

    def add_node(
        self,
        nid: int,
        *,
        cpus: str = "",
        total_kb: int = 4 << 20,
        free_kb: int = 2 << 20,
        blocks: Sequence[int] = (),
    ) -> None:
        node = f"devices/system/node/node{nid}"
        self.write_sys(f"{node}/cpulist", cpus + "\n")
        self.write_sys(
            f"{node}/meminfo",
            f"Node {nid} MemTotal:       {total_kb} kB\n"
            f"Node {nid} MemFree:        {free_kb} kB\n"
            f"Node {nid} MemUsed:        {total_kb - free_kb} kB\n",
        )
        for block in blocks:
            (self.sys / node / f"memory{block}").mkdir(parents=True, exist_ok=True)

    def set_online(self, nodelist: str, has_cpu: str | None = None) -> None:
        self.write_sys("devices/system/node/online", nodelist + "\n")
        if has_cpu is not None:
            self.write_sys("devices/system/node/has_cpu", has_cpu + "\n")

    def set_block_size(self, size_bytes: int) -> None:
        self.write_sys("devices/system/memory/block_size_bytes", f"{size_bytes:x}\n")

    def set_tiers(self, tiers: dict[int, str]) -> None:
        """memory_tierK/nodelist for each tier id K."""
        for tier, nodelist in tiers.items():
            self.write_sys(f"devices/virtual/memory_tiering/memory_tier{tier}/nodelist",
                           nodelist + "\n")

    def two_tier(self) -> None:
        """Node 0 (CPUs, tier 4) and CPU-less node 1 (tier 67), 128 MiB memory blocks."""
        self.set_online("0-1", "0")
        self.set_block_size(128 << 20)
        self.add_node(0, cpus="0-1", blocks=range(0, 8))
        self.add_node(1, cpus="", blocks=range(8, 16))
        self.set_tiers({4: "0", 67: "1"})

    # --- page_idle --------------------------------------------------------------------------

    def enable_page_idle(self, max_pfn: int) -> Path:
        """An idle bitmap covering PFNs [0, max_pfn) (all bits 0: never marked idle)."""
        path = self.sys / "kernel/mm/page_idle/bitmap"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * (((max_pfn + 63) // 64) * 8))
        return path

    def bitmap_words(self, first: int, count: int) -> list[int]:
        return read_u64s(self.sys / "kernel/mm/page_idle/bitmap", first, count)

    def set_bitmap_words(self, words: dict[int, int]) -> None:
        write_u64s(self.sys / "kernel/mm/page_idle/bitmap", words)


def smaps_entry(
    start: int,
    end: int,
    perms: str = "rw-p",
    vmflags: str | None = "rd wr mr mw me ac",
    *,
    offset: int = 0,
    dev: str = "00:00",
    inode: int = 0,
    path: str = "",
    extra: Sequence[str] = ("Rss:                   4 kB", "Referenced:            4 kB"),
) -> str:
    """One smaps record (header, a few fields, VmFlags unless None)."""
    head = f"{start:08x}-{end:08x} {perms} {offset:08x} {dev} {inode}"
    head += f" {path}" if path else ""
    lines = [head, f"Size:           {(end - start) >> 10} kB", *extra]
    if vmflags is not None:
        lines.append(f"VmFlags: {vmflags}")
    return "\n".join(lines) + "\n"


def touch(path: Path) -> None:
    os.utime(path)
