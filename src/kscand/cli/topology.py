"""`kscand topology`: nodes, tiers, CPUs, capacity and free memory, top tier, access source."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kscand.cli import EXIT_CANNOT_PROMOTE, EXIT_OK, SUMMARIES
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_str_arg
from kscand.cli.tables import print_table, text
from kscand.machine import PAGE_SIZE
from kscand.units import format_bytes

if TYPE_CHECKING:
    from kscand.live.features import Features
    from kscand.live.nodes import PfnNodeMap, SysfsNodes


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "topology",
        help=SUMMARIES["topology"],
        description="Show the NUMA nodes, memory tiers, top tier and access source kscand would "
        "use here, and say what is missing.",
    )
    parser.add_argument("--procfs", default="/proc", type=path_str_arg,
                        help="procfs root (default /proc)")
    parser.add_argument("--sysfs", default="/sys", type=path_str_arg,
                        help="sysfs root (default /sys)")
    parser.add_argument("--slow-nodes", type=_node_list, default=None, metavar="LIST",
                        help="treat these nodes as slow tier (like the config's slow_nodes)")
    parser.add_argument("--top-tier-nodes", type=_node_list, default=None, metavar="LIST",
                        help="treat only these nodes as top tier (like top_tier_nodes)")
    add_json_argument(parser, "the nodes, tiers, access source and findings")


def _node_list(text: str) -> tuple[int, ...]:
    from kscand.errors import Unsupported
    from kscand.live.nodes import parse_id_list

    try:
        return parse_id_list(text, "node list")
    except Unsupported as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(args: argparse.Namespace) -> int:
    from kscand.live.features import probe
    from kscand.live.nodes import SysfsNodes

    nodes = SysfsNodes(args.sysfs, args.procfs, top_tier_nodes=args.top_tier_nodes,
                       slow_nodes=args.slow_nodes)
    features = probe(args.procfs, args.sysfs, top_tier_nodes=args.top_tier_nodes,
                     slow_nodes=args.slow_nodes)
    data = topology_json(nodes, features)
    write_json(args.json, data)
    if not to_stdout(args.json):
        render(Console(), data)
    return EXIT_OK if data["can_promote"] else EXIT_CANNOT_PROMOTE


def topology_json(nodes: SysfsNodes, features: Features) -> dict[str, Any]:
    """What the command shows, as --json has it: sizes in bytes, tier null when unknown,
    memory_blocks_bytes null without block info (and for an unbounded fallback map)."""
    from kscand.live.nodes import TIER_UNKNOWN

    topo = nodes.topology()
    pfn_map = nodes.layout.pfn_map
    rows = []
    for info in topo.nodes:
        blocks = _block_pages(pfn_map, info.nid)
        rows.append({
            "nid": info.nid,
            "tier": None if info.tier == TIER_UNKNOWN else info.tier,
            "top_tier": info.top_tier,
            "cpus": sorted(nodes.layout.cpus[info.nid]),
            "capacity_bytes": info.capacity_pages * PAGE_SIZE,
            "free_bytes": info.free_pages * PAGE_SIZE,
            "free_pct": round(100.0 * info.free_pages / info.capacity_pages, 1)
            if info.capacity_pages else 0.0,
            "memory_blocks_bytes": None if blocks is None else blocks * PAGE_SIZE,
            "memory_blocks_all": blocks is None and pfn_map is not None,
        })
    name, why = features.choose_access_source("auto")
    findings = features.findings()
    return {
        "nodes": rows,
        "top_tier_nids": list(topo.top_tier_nids),
        "top_tier_how": nodes.layout.top_tier_how,
        "slow_tier_nids": list(topo.slow_tier_nids),
        "access_source": {"name": name, "reason": why},
        "numa_balancing": features.numa_balancing,
        "findings": [{"topic": f.topic.value, "blocking": f.blocking, "sentence": f.sentence}
                     for f in findings],
        "can_promote": not any(f.blocking for f in findings),
    }


def render(console: Console, data: dict[str, Any]) -> None:
    """The node table, the tiers, the access source and every finding."""
    from kscand.live.features import Topic
    from kscand.live.nodes import format_id_list

    table = Table(title="NUMA nodes", title_justify="left")
    for column, justify in (("node", "right"), ("tier", "right"), ("class", "left"),
                            ("CPUs", "left"), ("capacity", "right"), ("free", "right"),
                            ("free %", "right"), ("memory blocks", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in data["nodes"]:
        blocks = row["memory_blocks_bytes"]
        table.add_row(
            str(row["nid"]),
            "?" if row["tier"] is None else str(row["tier"]),
            "[green]top tier[/]" if row["top_tier"] else "[yellow]slow tier[/]",
            format_id_list(row["cpus"]) or "none",
            format_bytes(row["capacity_bytes"]),
            format_bytes(row["free_bytes"]),
            f"{row['free_pct']:.0f}%",
            format_bytes(blocks) if blocks is not None
            else "all" if row["memory_blocks_all"] else "-",
        )
    print_table(console, table)
    console.print(f"top tier: {format_id_list(data['top_tier_nids']) or 'none'}"
                  f" ({text(data['top_tier_how'])})")
    console.print(f"slow tier: {format_id_list(data['slow_tier_nids']) or 'none'}")
    name, why = data["access_source"]["name"], data["access_source"]["reason"]
    mark = "[red]cannot promote:[/] " if name == "none" else ""
    console.print(f"access source: {mark}[bold]{text(name)}[/] ({text(why)})")
    nb = data["numa_balancing"]
    console.print(f"numa_balancing: {'unknown' if nb is None else nb}")
    for finding in data["findings"]:
        if finding["topic"] == Topic.ACCESS.value:
            continue  # said on the access source line
        mark = "[red]cannot promote:[/]" if finding["blocking"] else "[yellow]note:[/]"
        console.print(f"{mark} {text(finding['sentence'])}")
    blockers = [f for f in data["findings"] if f["blocking"]]
    if not blockers:
        console.print("[green]kscand can promote here.[/]")
        return
    console.print(f"[red]kscand cannot promote here[/] ({len(blockers)} blocker"
                  f"{'s' if len(blockers) > 1 else ''} above; exit status {EXIT_CANNOT_PROMOTE})")


def _block_pages(pfn_map: PfnNodeMap | None, nid: int) -> int | None:
    """Base pages covered by the node's memory blocks; None without block info, or for
    a fallback map that covers all PFNs."""
    if pfn_map is None:
        return None
    mine = pfn_map.nid == nid
    pages = int((pfn_map.end_pfn[mine] - pfn_map.start_pfn[mine]).sum())
    return pages if pages < (1 << 52) else None
