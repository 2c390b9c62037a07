"""Changing the running tunables: a change validated like the config's [tunables], the
diff that is logged, the table `kscand tune` shows, and the target_node check."""

from __future__ import annotations

from typing import Any

from kscand.core.tunables import Tunables, coerce_tunable, tunable_fields
from kscand.errors import ConfigError
from kscand.machine import Topology


def apply_tunable_changes(base: Tunables, changes: Any) -> Tunables:
    """base with {name: value} applied, validated exactly like the config's [tunables]."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError('set: expected "tunables": {NAME: VALUE, ...} with at least one name')
    coerced = {name: coerce_tunable(str(name), value, "") for name, value in changes.items()}
    return base.replace(**coerced)


def target_node_problem(target_node: int, topology: Topology) -> str | None:
    """Why target_node cannot be a promotion target on this topology, or None.

    -1 (the first top-tier node) always can; any other value must name a
    top-tier node, or every candidate would be dropped (drop_no_target).
    """
    if target_node < 0:
        return None
    top = topology.top_tier_nids
    if target_node in topology.slow_tier_nids:
        return (f"target_node {target_node} is on the slow tier; promotion targets are "
                f"top-tier nodes ({', '.join(map(str, top)) or 'none'})")
    if target_node not in top:
        nids = ", ".join(str(n.nid) for n in topology.nodes) or "none"
        return f"target_node {target_node}: no such node on this machine (nodes: {nids})"
    return None


def check_target_node(tunables: Tunables, topology: Topology) -> None:
    """ConfigError (one line) when tunables.target_node is not a top-tier node."""
    problem = target_node_problem(tunables.target_node, topology)
    if problem is not None:
        raise ConfigError(problem)


def tunables_diff(old: Tunables, new: Tunables) -> str:
    """'name old -> new, ...' for the fields that differ ('' when none)."""
    a, b = old.as_dict(), new.as_dict()
    return ", ".join(f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b[k])


def tunables_table() -> list[dict[str, Any]]:
    """Name, unit, range and description of every tunable (for `kscand tune`)."""
    return [
        {
            "name": f.name,
            "unit": f.metadata["unit"],
            "min": f.metadata["min"],
            "max": f.metadata["max"],
            "doc": f.metadata["doc"],
        }
        for f in tunable_fields()
    ]
