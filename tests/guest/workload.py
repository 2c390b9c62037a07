"""A two-tier workload for the guest tests: memory on a slow node, a hot 10 % touched in a loop.

Run inside the QEMU guest (`python tests/guest/workload.py --out DIR --name wl ...`):

1. Optionally (--shared-mib) mmap a MAP_SHARED anonymous buffer, bind it to
   --node, touch every page, and fork a child that maps every page too and then
   keeps touching them: each page is mapped by two processes.
2. mmap --size-mib of private anonymous memory (MADV_NOHUGEPAGE unless --thp),
   mbind it MPOL_BIND to --node, touch every page (write), then, unless
   --keep-bind, reset the range's policy to MPOL_DEFAULT: the pages stay where
   they are but the kernel's NUMA balancing may promote them too (it ignores
   VMAs with an MPOL_BIND policy), so every mechanism gets the same chance.
3. Pick the hot pages (--hot-pct of the buffer; --layout contiguous = one run in
   the middle, chunks:K = K equal runs spread evenly, scattered = random pages),
   write their addresses and the cold ones' to NAME.hot.npy / NAME.cold.npy,
   set the process name to --comm (kscand's comm_patterns select on it) and
   write NAME.ready. Time 0 of every report is that moment.
4. Loop: write one byte in every hot page (and every shared page) each pass,
   a pass every --pass-interval-ms, and every --report-interval-s (0: never;
   one line at ready and one at the end still) append one JSON line to
   NAME.placement.jsonl with where the pages are (move_pages(2) query mode on
   its own pages). Until --duration-s, --exit-after-s or an exit file (--exit-file;
   both exit at once, without a final report: the "process exits mid-scan" case)
   or a stop file (--stop-file) appears.
5. Write NAME.done (JSON: the last placement and why it stopped).

--hold keeps the memory without touching it (a filler); --fill-leave-mib N
sizes the buffer to the node's free memory minus N MiB.

Only the standard library and numpy; it does not import kscand (it checks it).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

PAGE_SIZE = 4096
SYS_MBIND = 237  # x86_64
SYS_MOVE_PAGES = 279
MPOL_DEFAULT = 0
MPOL_BIND = 2
PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
NODE_NONE = -1
PROT_READ = 1
PROT_WRITE = 2
# More pages than x86's tlb_single_page_flush_ceiling (33): flushing them flushes the TLB.
TLB_FLUSH_PAGES = 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def buffer_address(buf: mmap.mmap) -> int:
    """Start address of an mmap object's mapping."""
    return ctypes.addressof(ctypes.c_char.from_buffer(buf))


def mbind(addr: int, length: int, mode: int, nodes: list[int]) -> None:
    """mbind(2) without flags: the policy of future faults in [addr, addr + length)."""
    mask = 0
    for nid in nodes:
        mask |= 1 << nid
    nodemask = ctypes.c_ulong(mask)
    ret = _libc.syscall(
        ctypes.c_long(SYS_MBIND), ctypes.c_ulong(addr), ctypes.c_ulong(length),
        ctypes.c_int(mode), ctypes.byref(nodemask) if nodes else None,
        ctypes.c_ulong(64 if nodes else 0), ctypes.c_uint(0),
    )  # fmt: skip
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mbind(mode {mode}, nodes {nodes}): {os.strerror(err)}")


def page_nodes(vaddrs: npt.NDArray[np.uint64]) -> npt.NDArray[np.int32]:
    """Node of each of our pages (move_pages(2) query), or a negative errno."""
    pages = np.ascontiguousarray(vaddrs, dtype=np.uint64)
    status = np.full(pages.shape, NODE_NONE, dtype=np.int32)
    if pages.size == 0:
        return status
    ret = _libc.syscall(
        ctypes.c_long(SYS_MOVE_PAGES), ctypes.c_int(0), ctypes.c_ulong(pages.size),
        ctypes.c_void_p(pages.ctypes.data), None, ctypes.c_void_p(status.ctypes.data),
        ctypes.c_int(0),
    )  # fmt: skip
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"move_pages query: {os.strerror(err)}")
    return status


class TlbFlusher:
    """Flushes this process's TLB: mprotect() of 64 populated pages to read-only (a range
    flush above x86's 33-page ceiling becomes a full one, a CR3 reload), then back.

    QEMU's TCG keeps guest translations in a software TLB big enough for every page of
    the hot set, and page_idle and DAMON clear Accessed bits without a TLB flush (as the
    kernel means them to: the next TLB miss sets the bit again). Under TCG that miss
    only comes when something flushes the vCPU's TLB, such as a switch to another
    process: with nothing else running on its vCPU, a workload's accesses stayed
    invisible (DAMON, which needs an access within its 5 ms sample, saw none of the hot
    set in one run). A real TLB reaches a few MiB; the 25 MiB hot set touched each
    pass misses it all the time. --flush-tlb restores that: one flush before each pass.
    """

    def __init__(self) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
        self.buf = mmap.mmap(-1, TLB_FLUSH_PAGES * PAGE_SIZE, flags=flags)
        self.addr = buffer_address(self.buf)
        self.length = len(self.buf)
        pages = np.frombuffer(self.buf, dtype=np.uint8)
        pages[::PAGE_SIZE] = 1  # populated: a protection change of a present PTE is flushed
        del pages

    def flush(self) -> None:
        for prot in (PROT_READ, PROT_READ | PROT_WRITE):
            if _libc.mprotect(self.addr, self.length, prot) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"mprotect: {os.strerror(err)}")


def set_comm(name: str) -> None:
    """prctl(PR_SET_NAME): what /proc/PID/comm shows (15 characters at most)."""
    _libc.prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def node_free_mib(nid: int) -> int:
    """MemFree of node nid from sysfs, MiB."""
    text = Path(f"/sys/devices/system/node/node{nid}/meminfo").read_text()
    for line in text.splitlines():
        if "MemFree:" in line:
            return int(line.split()[-2]) // 1024
    raise RuntimeError(f"node {nid}: no MemFree in meminfo")


def hot_page_indices(nr_pages: int, hot_pct: float, layout: str, seed: int) -> npt.NDArray[np.intp]:
    """Indices of the hot pages, sorted. layout: contiguous | chunks:K | scattered."""
    nr_hot = max(1, round(nr_pages * hot_pct / 100))
    if layout == "scattered":
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(nr_pages, size=nr_hot, replace=False)).astype(np.intp)
    nr_chunks = 1 if layout == "contiguous" else int(layout.partition(":")[2] or 0)
    if nr_chunks < 1:
        raise ValueError(f"layout {layout!r}: expected contiguous, chunks:K or scattered")
    chunk = -(-nr_hot // nr_chunks)
    stride = nr_pages // nr_chunks
    starts = np.arange(nr_chunks) * stride + (stride - chunk) // 2
    runs = [np.arange(int(s), min(int(s) + chunk, nr_pages)) for s in starts]
    return np.unique(np.concatenate(runs))[:nr_hot].astype(np.intp)


def numpy_sorts_right(seed: int = 1) -> bool:
    """Whether np.argsort sorts here (QEMU 7.2's TCG breaks numpy's AVX2 kernel: see
    NUMPY_DISABLED_CPU_FEATURES in testbed/guest.py); kscand relies on it."""
    rng = np.random.default_rng(seed)
    for _ in range(8):
        values = rng.integers(0, 1 << 30, 3000).astype(np.uint64)
        ordered = values[np.argsort(values)]
        if not bool((ordered[1:] >= ordered[:-1]).all()):
            return False
    return True


def count_nodes(status: npt.NDArray[np.int32]) -> dict[str, int]:
    """{"node0": n, "node1": n, ..., "other": pages not on a node (errno)}."""
    out = {"other": int((status < 0).sum())}
    for nid in np.unique(status[status >= 0]).tolist():
        out[f"node{nid}"] = int((status == nid).sum())
    return out


def start_sharer(shared: npt.NDArray[np.uint8], comm: str) -> int:
    """Fork a child that maps every shared page, then keeps writing them; returns its pid.

    Returns after the child has touched every page (a pipe tells), so every
    shared page is mapped by two processes before anyone scans.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        try:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            shared[::PAGE_SIZE] += 1
            set_comm(comm)
            os.write(write_fd, b"1")
            os.close(write_fd)
            while True:
                shared[::PAGE_SIZE] += 1
                time.sleep(0.01)
        finally:
            os._exit(0)
    os.close(write_fd)
    if os.read(read_fd, 1) != b"1":
        raise RuntimeError("the sharer child died before touching its pages")
    os.close(read_fd)
    return pid


class Reporter:
    """Appends placement lines to NAME.placement.jsonl (relative times from ready)."""

    def __init__(self, out: Path, name: str, groups: dict[str, npt.NDArray[np.uint64]]) -> None:
        self.path = out / f"{name}.placement.jsonl"
        self.groups = groups
        self.ready_mono = time.monotonic()
        self.ready_wall = time.time()  # the same instant on the wall clock
        self.last: dict[str, Any] = {}

    def report(self, passes: int) -> dict[str, Any]:
        line: dict[str, Any] = {
            "t_s": round(time.monotonic() - self.ready_mono, 3),
            "passes": passes,
        }
        for group, vaddrs in self.groups.items():
            line[group] = count_nodes(page_nodes(vaddrs))
        line["t_end_s"] = round(time.monotonic() - self.ready_mono, 3)  # the queries took this long
        with self.path.open("a") as f:
            f.write(json.dumps(line) + "\n")
        self.last = line
        return line


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, required=True, help="directory for the output files")
    p.add_argument("--name", default="wl", help="prefix of the output files")
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--fill-leave-mib", type=int, help="size = node's MemFree minus this")
    p.add_argument("--node", type=int, default=1, help="node the buffer is bound to")
    p.add_argument("--keep-bind", action="store_true", help="keep MPOL_BIND after populating")
    p.add_argument("--thp", action="store_true", help="allow transparent huge pages")
    p.add_argument("--hot-pct", type=float, default=10.0)
    p.add_argument("--layout", default="chunks:4", help="contiguous | chunks:K | scattered")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shared-mib", type=int, default=0, help="a MAP_SHARED buffer, 2 processes")
    p.add_argument("--comm", default="kscand-wl", help="process name once ready")
    p.add_argument("--duration-s", type=float, default=120.0)
    p.add_argument("--exit-after-s", type=float, help="exit this long after ready, no report")
    p.add_argument("--exit-file", type=Path, help="exit at once, no report, when this file exists")
    p.add_argument("--stop-file", type=Path, help="stop when this file exists")
    p.add_argument("--pass-interval-ms", type=float, default=5.0)
    p.add_argument("--report-interval-s", type=float, default=1.0, help="0: never")
    p.add_argument("--hold", action="store_true", help="do not touch after populating")
    p.add_argument("--flush-tlb", action="store_true",
                   help="flush the TLB before each pass (see TlbFlusher)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    shared = None
    sharer_pid = None
    shared_vaddrs = np.zeros(0, dtype=np.uint64)
    if args.shared_mib > 0:
        shared_buf = mmap.mmap(-1, args.shared_mib << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        shared_addr = buffer_address(shared_buf)
        mbind(shared_addr, len(shared_buf), MPOL_BIND, [args.node])
        shared = np.frombuffer(shared_buf, dtype=np.uint8)
        shared[::PAGE_SIZE] = 1
        sharer_pid = start_sharer(shared, (args.comm + "-shr")[:15])
        shared_vaddrs = (shared_addr + np.arange(len(shared_buf) // PAGE_SIZE) * PAGE_SIZE).astype(
            np.uint64
        )
    size_mib = args.size_mib
    if args.fill_leave_mib is not None:
        size_mib = node_free_mib(args.node) - args.fill_leave_mib
        if size_mib <= 0:
            raise SystemExit(f"node {args.node}: less than {args.fill_leave_mib} MiB free")
    buf = mmap.mmap(-1, size_mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buf.madvise(mmap.MADV_HUGEPAGE if args.thp else mmap.MADV_NOHUGEPAGE)
    addr = buffer_address(buf)
    mbind(addr, len(buf), MPOL_BIND, [args.node])
    mem = np.frombuffer(buf, dtype=np.uint8)
    mem[::PAGE_SIZE] = 1
    if not args.keep_bind:
        mbind(addr, len(buf), MPOL_DEFAULT, [])
    nr_pages = len(buf) // PAGE_SIZE
    hot = hot_page_indices(nr_pages, args.hot_pct, args.layout, args.seed)
    is_hot = np.zeros(nr_pages, dtype=np.bool_)
    is_hot[hot] = True
    all_vaddrs = (addr + np.arange(nr_pages, dtype=np.uint64) * PAGE_SIZE).astype(np.uint64)
    hot_vaddrs, cold_vaddrs = all_vaddrs[is_hot], all_vaddrs[~is_hot]
    np.save(args.out / f"{args.name}.hot.npy", hot_vaddrs)
    np.save(args.out / f"{args.name}.cold.npy", cold_vaddrs)
    groups = {"hot": hot_vaddrs, "cold": cold_vaddrs}
    if shared is not None:
        groups["shared"] = shared_vaddrs
    hot_offsets = hot * PAGE_SIZE
    set_comm(args.comm)
    reporter = Reporter(args.out, args.name, groups)
    info = {
        "pid": os.getpid(),
        "sharer_pid": sharer_pid,
        "node": args.node,
        "size_mib": size_mib,
        "buffer": [addr, addr + len(buf)],
        "nr_pages": nr_pages,
        "nr_hot": int(hot.size),
        "nr_shared": int(shared_vaddrs.size),
        "layout": args.layout,
        "keep_bind": args.keep_bind,
        "thp": args.thp,
        "hold": args.hold,
        "numpy_sorts_right": numpy_sorts_right(),
        "ready_wall": reporter.ready_wall,
    }
    first = reporter.report(0)
    ready = args.out / f"{args.name}.ready"
    ready.with_suffix(".tmp").write_text(json.dumps({**info, "placement": first}))
    ready.with_suffix(".tmp").rename(ready)
    stopped, passes = run_loop(args, mem, hot_offsets, shared, reporter)
    last = reporter.report(passes)
    (args.out / f"{args.name}.done").write_text(json.dumps({**info, "stopped": stopped,
                                                           "placement": last}))
    if sharer_pid is not None:
        os.kill(sharer_pid, signal.SIGTERM)
        os.waitpid(sharer_pid, 0)
    return 0


def run_loop(
    args: argparse.Namespace,
    mem: npt.NDArray[np.uint8],
    hot_offsets: npt.NDArray[np.intp],
    shared: npt.NDArray[np.uint8] | None,
    reporter: Reporter,
) -> tuple[str, int]:
    """Touch the hot set until the duration ends or the stop file appears: (why, passes)."""
    start = reporter.ready_mono
    # --report-interval-s 0: no periodic reports (an observer samples from outside,
    # so the move_pages(2) queries are not charged to this process).
    every_s = args.report_interval_s if args.report_interval_s > 0 else float("inf")
    next_report = start + every_s
    passes = 0
    interval_s = args.pass_interval_ms / 1000
    flusher = TlbFlusher() if args.flush_tlb and not args.hold else None
    while True:
        now = time.monotonic()
        if args.exit_after_s is not None and now - start >= args.exit_after_s:
            os._exit(0)  # abrupt, like a crash: no final report, no cleanup
        if args.exit_file is not None and args.exit_file.exists():
            os._exit(0)
        if now - start >= args.duration_s:
            return "duration", passes
        if args.stop_file is not None and args.stop_file.exists():
            return "stop-file", passes
        if not args.hold:
            if flusher is not None:
                flusher.flush()
            mem[hot_offsets] += 1
            if shared is not None:
                shared[::PAGE_SIZE] += 1
            passes += 1
        if now >= next_report:
            reporter.report(passes)
            next_report += every_s
        pause = interval_s if not args.hold else 0.2
        time.sleep(max(0.0, pause - (time.monotonic() - now)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
