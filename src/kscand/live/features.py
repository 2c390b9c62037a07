"""Probe the kernel's features once at start-up and say in one sentence what is missing.

Nothing here writes anywhere: DAMON's vaddr support is read from an existing
kdamond context or the kernel config when either is available, else left
unknown (the DAMON source checks it when it starts).
"""

from __future__ import annotations

import ctypes
import enum
import gzip
import mmap
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

from kscand.config import ACCESS_SOURCES
from kscand.errors import ConfigError, Unsupported
from kscand.live.damon_sysfs import DAMON_KDAMONDS
from kscand.live.move import SYS_MOVE_PAGES
from kscand.live.nodes import SysfsNodes
from kscand.live.page_idle import PAGE_IDLE_BITMAP
from kscand.live.procfs import KPF_KSM, PM_PFRAME_MASK, PM_PRESENT
from kscand.machine import PAGE_SIZE

# Capabilities the live daemon needs (include/uapi/linux/capability.h bit numbers), and why.
# CAP_SYS_NICE is only needed for MPOL_MF_MOVE_ALL, which kscand does not use.
REQUIRED_CAPS: dict[str, tuple[int, str]] = {
    "CAP_SYS_ADMIN": (21, "PFNs in /proc/PID/pagemap and /proc/kpageflags"),
    "CAP_DAC_READ_SEARCH": (2, "other users' /proc/PID/pagemap"),
    "CAP_SYS_PTRACE": (19, "move_pages(2) on other users' processes"),
}


def missing_capabilities(status_text: str) -> tuple[str, ...] | None:
    """REQUIRED_CAPS absent from the CapEff line of /proc/self/status text (None: no line)."""
    for line in status_text.splitlines():
        name, _, value = line.partition(":")
        if name != "CapEff":
            continue
        try:
            effective = int(value.strip(), 16)
        except ValueError:
            return None
        return tuple(cap for cap, (bit, _why) in REQUIRED_CAPS.items()
                     if not effective >> bit & 1)
    return None


def _own_missing_capabilities(procfs: str) -> tuple[str, ...] | None:
    try:
        with open(os.path.join(procfs, "self", "status"), encoding="ascii",
                  errors="replace") as f:
            return missing_capabilities(f.read())
    except OSError:
        return None


class Topic(enum.Enum):
    """What a probe finding is about (the scan command only needs some of them)."""

    PRIVILEGE = "privilege"
    PAGE_FLAGS = "page_flags"
    ACCESS = "access"
    NUMA = "numa"
    TIERS = "tiers"
    MOVE = "move"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Finding:
    """One sentence about a missing piece; blocking means kscand cannot promote at all."""

    topic: Topic
    sentence: str
    blocking: bool


@dataclass(frozen=True, slots=True)
class Features:
    """What the kernel offers kscand (psutil's HAS_* flags, damo's feature table)."""

    procfs: str = "/proc"
    sysfs: str = "/sys"
    is_root: bool = True
    # REQUIRED_CAPS not in this process's effective set; None: unknown (judged by is_root)
    missing_caps: tuple[str, ...] | None = None
    euid: int = 0
    has_pagemap: bool = True
    has_kpageflags: bool = True
    has_page_idle: bool = True
    has_damon_sysfs: bool = False
    damon_vaddr: bool | None = None  # None: unknown until a kdamond context exists
    damon_ops: tuple[str, ...] = ()
    damon_kdamonds_in_use: int = 0  # kdamonds configured by someone else
    has_move_pages: bool = True
    numa_balancing: int | None = None
    online_nodes: tuple[int, ...] = (0,)
    tiers: dict[int, int] = field(default_factory=dict)  # nid -> memory tier id
    top_tier_nodes: tuple[int, ...] = (0,)
    slow_tier_nodes: tuple[int, ...] = ()
    top_tier_how: str = ""
    # False: /proc/kpageflags sets KPF_KSM on every anonymous page (see kpf_ksm_is_bogus)
    kpf_ksm_reliable: bool = True

    @property
    def page_idle_path(self) -> str:
        return os.path.join(self.sysfs, PAGE_IDLE_BITMAP)

    @property
    def damon_path(self) -> str:
        return os.path.join(self.sysfs, DAMON_KDAMONDS)

    def damon_unusable_reason(self) -> str | None:
        """Why the DAMON access source cannot be used, or None if it can (or may)."""
        if not self.has_damon_sysfs:
            return f"no {self.damon_path} (CONFIG_DAMON_SYSFS)"
        if self.damon_vaddr is False:
            ops = " ".join(self.damon_ops) or "none"
            return f"DAMON has no vaddr operations (CONFIG_DAMON_VADDR; available: {ops})"
        if self.damon_kdamonds_in_use:
            return (
                f"DAMON sysfs is in use ({self.damon_kdamonds_in_use} kdamond(s) set up by "
                "another tool)"
            )
        return None

    def choose_access_source(self, requested: str = "auto") -> tuple[str, str]:
        """(source name, why) for the requested source: page_idle, damon or none.

        Raises ConfigError for an unknown name, Unsupported when an explicitly
        requested source is missing.
        """
        if requested not in ACCESS_SOURCES:
            raise ConfigError(
                f"access_source: {requested!r} is not one of {', '.join(ACCESS_SOURCES)}"
            )
        idle_missing = (
            f"this kernel has no {self.page_idle_path} (CONFIG_IDLE_PAGE_TRACKING)"
        )
        damon_why = self.damon_unusable_reason()
        if requested == "page_idle":
            if not self.has_page_idle:
                raise Unsupported(f"access_source page_idle: {idle_missing}")
            return "page_idle", "page_idle requested in the config"
        if requested == "damon":
            if damon_why is not None:
                raise Unsupported(f"access_source damon: {damon_why}")
            return "damon", "DAMON requested in the config"
        if self.has_page_idle:
            return "page_idle", f"the kernel has {self.page_idle_path}: per-page Accessed bits"
        if damon_why is None:
            return "damon", f"{idle_missing}; using DAMON"
        return "none", f"{idle_missing}; no DAMON either: {damon_why}"

    def findings(self) -> list[Finding]:
        """Every missing piece, in the order a reader should fix them."""
        out: list[Finding] = []
        privilege = self._privilege_sentence()
        if privilege is not None:
            out.append(Finding(Topic.PRIVILEGE, privilege, True))
        if not self.has_pagemap or not self.has_kpageflags:
            out.append(Finding(Topic.PAGE_FLAGS, (
                f"this kernel has no {os.path.join(self.procfs, 'kpageflags')} or pagemap "
                "(CONFIG_PROC_PAGE_MONITOR): kscand cannot read page flags"), True))
        name, why = self.choose_access_source("auto")
        if name != "page_idle":
            out.append(Finding(Topic.ACCESS, why, name == "none"))
        if not self.has_move_pages:
            out.append(Finding(Topic.MOVE, (
                f"move_pages(2) has no known syscall number on {platform.machine()}"), True))
        out += self._numa_findings()
        return out

    def _privilege_sentence(self) -> str | None:
        """Why this process lacks the privileges kscand needs, or None."""
        if self.missing_caps is None:
            if self.is_root:
                return None
            return ("not running as root: /proc/PID/pagemap hides PFNs and /proc/kpageflags "
                    "is unreadable without CAP_SYS_ADMIN; run kscand as root")
        if not self.missing_caps:
            return None
        who = "root" if self.euid == 0 else f"uid {self.euid}"
        whys = "; ".join(f"{cap}: {REQUIRED_CAPS[cap][1]}" for cap in self.missing_caps)
        return (f"running as {who} without {', '.join(self.missing_caps)} ({whys}); run kscand "
                "as root with these capabilities (contrib/kscand.service keeps them)")

    def _numa_findings(self) -> list[Finding]:
        out: list[Finding] = []
        if not self.kpf_ksm_reliable:
            out.append(Finding(Topic.NOTE, (
                "this kernel sets KPF_KSM in /proc/kpageflags on every anonymous page "
                "(fs/proc/page.c since 6.9, fixed by \"fs/proc: fix KPF_KSM reported for all "
                "anonymous pages\"); kscand ignores KPF_KSM and tells shared pages by "
                "PM_MMAP_EXCLUSIVE and kpagecount"), False))
        if self.numa_balancing:
            out.append(Finding(Topic.NOTE, (
                f"NUMA balancing is on (kernel.numa_balancing={self.numa_balancing}): its "
                "hinting faults also clear Accessed bits and it promotes pages itself; set it "
                "to 0 for kscand alone"), False))
        if len(self.online_nodes) < 2:
            nodes = ",".join(map(str, self.online_nodes))
            out.append(Finding(Topic.NUMA, (
                f"only one NUMA node (node {nodes}): nothing to promote"), True))
            return out
        if not self.slow_tier_nodes:
            out.append(Finding(Topic.TIERS, (
                f"no slow-tier node: every online node ({self.online_nodes}) is top tier "
                f"({self.top_tier_how}); set slow_nodes in the config if a node is slower "
                "memory"), True))
        return out

    def sentences(self) -> list[str]:
        return [f.sentence for f in self.findings()]

    def blocking_reasons(self) -> list[str]:
        """Every reason kscand cannot promote anything here ([] if it can run)."""
        return [f.sentence for f in self.findings() if f.blocking]

    def blocking_reason(self) -> str | None:
        """Every reason kscand cannot promote here in one line (join_blockers), or None."""
        reasons = self.blocking_reasons()
        return join_blockers(reasons) if reasons else None


def join_blockers(reasons: Sequence[str]) -> str:
    """One line naming every blocker: the sentence itself when there is one, else
    'N things block promotion here: (1) ...; (2) ...'."""
    if len(reasons) == 1:
        return reasons[0]
    numbered = "; ".join(f"({i}) {reason}" for i, reason in enumerate(reasons, 1))
    return f"{len(reasons)} things block promotion here: {numbered}"


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _damon_ops(kdamonds: str) -> tuple[str, ...] | None:
    """avail_operations of any existing kdamond context, None if there is none."""
    try:
        names = os.listdir(kdamonds)
    except OSError:
        return None
    for name in sorted(n for n in names if n.isdigit()):
        path = os.path.join(kdamonds, name, "contexts", "0", "avail_operations")
        try:
            with open(path, encoding="ascii") as f:
                return tuple(f.read().split())
        except OSError:
            continue
    return None


def _kernel_config_has(option: str, procfs: str) -> bool | None:
    """Whether the running kernel's config sets option=y/m; None if no config is readable.

    /boot is only consulted for the real /proc (a fake tree describes another kernel).
    """
    candidates = [os.path.join(procfs, "config.gz")]
    if os.path.realpath(procfs) == "/proc":
        candidates.append(f"/boot/config-{platform.release()}")
    for path in candidates:
        try:
            if path.endswith(".gz"):
                with gzip.open(path, "rt", encoding="ascii", errors="replace") as f:
                    text = f.read()
            else:
                with open(path, encoding="ascii", errors="replace") as f:
                    text = f.read()
        except OSError:
            continue
        return f"\n{option}=y" in text or f"\n{option}=m" in text
    return None


def kpf_ksm_is_bogus(own_page_kpageflags: int | None) -> bool:
    """Whether KPF_KSM is set on a private anonymous page that cannot be a KSM page.

    Since the folio rewrite of stable_page_flags() (6.9), fs/proc/page.c tests
    `mapping & PAGE_MAPPING_KSM`, which is true for every anonymous folio, so
    every anon page reads as KSM (hence shared) until the upstream fix. None
    (the page could not be read) says nothing: trust the flag.
    """
    return own_page_kpageflags is not None and bool(own_page_kpageflags >> KPF_KSM & 1)


def own_anon_page_kpageflags(procfs: str = "/proc") -> int | None:
    """kpageflags of a private anonymous page this process just wrote; None if unreadable.

    The page is in no MADV_MERGEABLE area and holds random bytes, so KSM has
    not merged it. Needs root (pagemap hides PFNs otherwise).
    """
    buf = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf[:16] = os.urandom(16)
        anchor = ctypes.c_char.from_buffer(buf)
        vaddr = ctypes.addressof(anchor)
        del anchor  # a live export would keep buf from closing
        entry = _read_u64_at(os.path.join(procfs, "self", "pagemap"), vaddr // PAGE_SIZE)
        if entry is None or not entry & int(PM_PRESENT):
            return None
        pfn = entry & int(PM_PFRAME_MASK)
        if pfn == 0:
            return None
        return _read_u64_at(os.path.join(procfs, "kpageflags"), pfn)
    finally:
        buf.close()


def _read_u64_at(path: str, index: int) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, 8, index * 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    return int.from_bytes(data, "little") if len(data) == 8 else None


def probe(
    procfs: str = "/proc",
    sysfs: str = "/sys",
    *,
    top_tier_nodes: Sequence[int] | None = None,
    slow_nodes: Sequence[int] | None = None,
    is_root: bool | None = None,
) -> Features:
    """Read what the kernel offers; never writes. is_root defaults to euid == 0."""
    kdamonds = os.path.join(sysfs, DAMON_KDAMONDS)
    has_damon = os.path.exists(os.path.join(kdamonds, "nr_kdamonds"))
    ops = _damon_ops(kdamonds) if has_damon else None
    if ops is not None:
        vaddr: bool | None = "vaddr" in ops
    else:
        vaddr = _kernel_config_has("CONFIG_DAMON_VADDR", procfs) if has_damon else False
    nodes = SysfsNodes(sysfs, procfs, top_tier_nodes=top_tier_nodes, slow_nodes=slow_nodes)
    layout = nodes.layout
    return Features(
        procfs=procfs,
        sysfs=sysfs,
        is_root=os.geteuid() == 0 if is_root is None else is_root,
        missing_caps=_own_missing_capabilities(procfs) if is_root is None else None,
        euid=os.geteuid(),
        has_pagemap=os.path.exists(os.path.join(procfs, "self", "pagemap")),
        has_kpageflags=os.path.exists(os.path.join(procfs, "kpageflags"))
        and os.path.exists(os.path.join(procfs, "kpagecount")),
        has_page_idle=os.path.exists(os.path.join(sysfs, PAGE_IDLE_BITMAP)),
        has_damon_sysfs=has_damon,
        damon_vaddr=vaddr,
        damon_ops=ops or (),
        damon_kdamonds_in_use=(_read_int(os.path.join(kdamonds, "nr_kdamonds")) or 0)
        if has_damon
        else 0,
        has_move_pages=platform.machine() in SYS_MOVE_PAGES,
        numa_balancing=_read_int(os.path.join(procfs, "sys", "kernel", "numa_balancing")),
        online_nodes=layout.nids,
        tiers={nid: tier for nid, tier in layout.tier_of.items() if tier >= 0},
        top_tier_nodes=tuple(sorted(layout.top_tier)),
        slow_tier_nodes=layout.slow_nids,
        top_tier_how=layout.top_tier_how,
        kpf_ksm_reliable=not kpf_ksm_is_bogus(own_anon_page_kpageflags(procfs)),
    )
