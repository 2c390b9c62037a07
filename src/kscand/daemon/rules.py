"""Per-process scale from the config's [[process]] rules (the series' prctl analog, set by policy).

The engine asks its scale policy once, when a process enters the mm list.
The rules are matched in order, the first match wins; a rule with a comm or
cgroup field needs Machine.describe(), which is only called when such a rule
exists. A process that vanishes meanwhile gets no rule (it leaves the list
at the next sync anyway).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from kscand.cgroups import in_cgroup
from kscand.config import ProcessRule
from kscand.core.engine import ScalePolicy
from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import Machine, ProcessId, ProcessInfo


def rule_matches(rule: ProcessRule, proc: ProcessId, info: ProcessInfo | None) -> bool:
    """Whether every field the rule gives matches (info None: comm and cgroup unknown)."""
    if rule.pid is not None and rule.pid != proc.pid:
        return False
    if rule.comm is not None and (info is None or not fnmatch.fnmatchcase(info.comm, rule.comm)):
        return False
    return rule.cgroup is None or (info is not None and in_cgroup(info.cgroup, rule.cgroup))


def first_match(
    rules: Sequence[ProcessRule], proc: ProcessId, info: ProcessInfo | None
) -> ProcessRule | None:
    """The first rule that matches, or None."""
    return next((rule for rule in rules if rule_matches(rule, proc, info)), None)


class RuleScalePolicy:
    """The engine's scale_policy: [[process]] rules first, then a fallback (a simulated
    scenario's per-process scale), then None (default_scale).

    It remembers what describe() said (`names`), so the daemon's status can show
    each process's command name without reading /proc again.
    """

    def __init__(
        self,
        machine: Machine,
        rules: Sequence[ProcessRule],
        fallback: ScalePolicy | None = None,
    ) -> None:
        self.machine = machine
        self.rules = tuple(rules)
        self.fallback = fallback
        self.names: dict[ProcessId, ProcessInfo] = {}

    def set_rules(self, rules: Sequence[ProcessRule]) -> None:
        """New rules (a reload): they apply to processes that appear from now on."""
        self.rules = tuple(rules)

    def describe(self, proc: ProcessId) -> ProcessInfo | None:
        """proc's comm and cgroup (cached), None when it is gone or unreadable."""
        info = self.names.get(proc)
        if info is not None:
            return info
        try:
            info = self.machine.describe(proc)
        except (ProcessGone, AccessDenied):
            return None
        self.names[proc] = info
        return info

    def forget_except(self, live: set[ProcessId]) -> None:
        """Drop cached names of processes no longer listed (bounded by the mm list)."""
        for proc in [p for p in self.names if p not in live]:
            del self.names[proc]

    def __call__(self, proc: ProcessId) -> int | None:
        info = self.describe(proc) if any(r.needs_describe for r in self.rules) else None
        rule = first_match(self.rules, proc, info)
        if rule is not None:
            return rule.scale
        return self.fallback(proc) if self.fallback is not None else None
