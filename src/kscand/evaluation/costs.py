"""The CPU cost model of the evaluation: every constant in one place, with its source.

Costs are charged from each policy's counters after (or during) a run; they do
not change what the simulator does. Who pays matters as much as how much: the
application pays for NUMA balancing (its PTE scan runs as task_work on return
to user space, its hint faults and the migrations they trigger run in the
faulting thread); kscand and DAMON pay in their own kernel thread (here:
daemon).

Each constant's source is in the comment above it: measured on this project's
machine where possible (a 2-core AMD EPYC KVM guest, kernel 6.18;
`bench/cost_probe.py` re-measures), otherwise the simulator's own cost
parameters, so that virtual time and the cost model agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kscand.sim.scenario import SimParams

_SIM = SimParams()


@dataclass(frozen=True, slots=True)
class CostModel:
    """ns per unit of work, by mechanism."""

    # A page-table walk that tests and clears (kscand) or rewrites (NUMA balancing's
    # change_prot_numa, DAMOS's vaddr walk) one PTE. Source: the simulator's
    # scan_cost_ns_per_pte (sim/scenario.py SimParams), so that kscand's virtual time
    # and its cost agree; an in-kernel walk is a few ns per PTE plus the TLB flush of
    # the range, amortised here. For comparison, the userspace port's pagemap read alone
    # costs 11 ns per PTE on this machine (bench/cost_probe.py: one pread of 64 Ki
    # entries), before kpageflags and the page_idle bitmap.
    pte_ns: float = _SIM.scan_cost_ns_per_pte
    # One NUMA hint fault: trap, PTE fix-up, task_numa_fault, should_numa_migrate_memory.
    # Source: measured here, a page-cache read fault that maps 16 PTEs (fault-around)
    # costs 2.7-3.3 us (bench/cost_probe.py); a hint fault maps one PTE but runs the
    # NUMA-balancing bookkeeping instead: 2 us assumed.
    hint_fault_ns: float = 2_000.0
    # Copying and remapping one base page (migrate_pages: unmap, copy 4 KiB, remap).
    # Source: the simulator's move_cost_ns_per_page (SimParams), used for every policy
    # so that migration costs the same whoever asks for it.
    migrate_page_ns: float = _SIM.move_cost_ns_per_page
    # Fixed cost per migration request (syscall or kernel entry, page lookup, TLB flush
    # batch). Source: the simulator's move_cost_ns_per_call (SimParams). Charged per
    # move_pages(2) call (kscand) and per migrated region (DAMOS); NUMA balancing
    # migrates from the fault path, whose entry is already in hint_fault_ns.
    migrate_call_ns: float = _SIM.move_cost_ns_per_call
    # One DAMON sample of one region: mkold the next sampling address and check the
    # previous one, each a walk_page_range() of one address under the mmap lock.
    # Source: measured here, a one-entry pagemap read (a single-address page walk under
    # the mmap lock) costs 0.99 us more than a one-entry read of /dev/zero
    # (bench/cost_probe.py); half of that per walk in-kernel (no syscall copy-out): 1 us
    # for the pair.
    damon_sample_ns: float = 1_000.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_COSTS = CostModel()


@dataclass(frozen=True, slots=True)
class CpuCost:
    """CPU time a policy spent, by component, and who paid for it."""

    scan_ns: float = 0.0  # PTE walks: A-bit scans, PROT_NONE marking, DAMOS region walks
    fault_ns: float = 0.0  # NUMA hint faults
    sample_ns: float = 0.0  # DAMON region sampling
    migrate_ns: float = 0.0  # page copies and migration calls
    app_ns: float = 0.0  # of the total, what the application paid
    daemon_ns: float = 0.0  # of the total, what a kernel thread / daemon paid

    @property
    def total_ns(self) -> float:
        return self.scan_ns + self.fault_ns + self.sample_ns + self.migrate_ns

    def as_dict(self) -> dict[str, float]:
        out = asdict(self)
        out["total_ns"] = self.total_ns
        return {k: round(v, 1) for k, v in out.items()}


def cost_of(
    payer: str,
    model: CostModel,
    *,
    ptes: int = 0,
    faults: int = 0,
    samples: int = 0,
    migrated_pages: int = 0,
    migrate_calls: int = 0,
) -> CpuCost:
    """The CpuCost of counted work; payer is "app" or "daemon" (or "none": no work)."""
    scan = ptes * model.pte_ns
    fault = faults * model.hint_fault_ns
    sample = samples * model.damon_sample_ns
    migrate = migrated_pages * model.migrate_page_ns + migrate_calls * model.migrate_call_ns
    total = scan + fault + sample + migrate
    return CpuCost(
        scan_ns=scan,
        fault_ns=fault,
        sample_ns=sample,
        migrate_ns=migrate,
        app_ns=total if payer == "app" else 0.0,
        daemon_ns=total if payer == "daemon" else 0.0,
    )
