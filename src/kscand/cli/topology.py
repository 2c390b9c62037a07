"""`kscand topology`: nodes, tiers, CPUs, capacity and free memory, top tier, access source."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kscand.cli import EXIT_CANNOT_PROMOTE, EXIT_OK, SUMMARIES
from kscand.cli.pathargs import path_str_arg
from kscand.cli.tables import print_table, text
from kscand.machine import PAGE_SIZE
from kscand.units import format_bytes

if TYPE_CHECKING:
    from kscand.live.nodes import PfnNodeMap


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


def _node_list(text: str) -> tuple[int, ...]:
    from kscand.errors import Unsupported
    from kscand.live.nodes import parse_id_list

    try:
        return parse_id_list(text, "node list")
    except Unsupported as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(args: argparse.Namespace) -> int:
    from kscand.live.features import Topic, probe
    from kscand.live.nodes import TIER_UNKNOWN, SysfsNodes, format_id_list

    nodes = SysfsNodes(args.sysfs, args.procfs, top_tier_nodes=args.top_tier_nodes,
                       slow_nodes=args.slow_nodes)
    features = probe(args.procfs, args.sysfs, top_tier_nodes=args.top_tier_nodes,
                     slow_nodes=args.slow_nodes)
    topo = nodes.topology()
    console = Console()
    table = Table(title="NUMA nodes", title_justify="left")
    for column, justify in (("node", "right"), ("tier", "right"), ("class", "left"),
                            ("CPUs", "left"), ("capacity", "right"), ("free", "right"),
                            ("free %", "right"), ("memory blocks", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    pfn_map = nodes.layout.pfn_map
    for info in topo.nodes:
        cpus = nodes.layout.cpus[info.nid]
        free_pct = 100.0 * info.free_pages / info.capacity_pages if info.capacity_pages else 0.0
        blocks = _block_span(pfn_map, info.nid)
        table.add_row(
            str(info.nid),
            "?" if info.tier == TIER_UNKNOWN else str(info.tier),
            "[green]top tier[/]" if info.top_tier else "[yellow]slow tier[/]",
            format_id_list(cpus) or "none",
            format_bytes(info.capacity_pages * PAGE_SIZE),
            format_bytes(info.free_pages * PAGE_SIZE),
            f"{free_pct:.0f}%",
            blocks,
        )
    print_table(console, table)
    console.print(f"top tier: {format_id_list(topo.top_tier_nids) or 'none'}"
                  f" ({text(nodes.layout.top_tier_how)})")
    console.print(f"slow tier: {format_id_list(topo.slow_tier_nids) or 'none'}")
    name, why = features.choose_access_source("auto")
    mark = "[red]cannot promote:[/] " if name == "none" else ""
    console.print(f"access source: {mark}[bold]{name}[/] ({text(why)})")
    nb = features.numa_balancing
    console.print(f"numa_balancing: {'unknown' if nb is None else nb}")
    findings = features.findings()
    for finding in findings:
        if finding.topic is Topic.ACCESS:
            continue  # said on the access source line
        mark = "[red]cannot promote:[/]" if finding.blocking else "[yellow]note:[/]"
        console.print(f"{mark} {text(finding.sentence)}")
    blockers = [f for f in findings if f.blocking]
    if not blockers:
        console.print("[green]kscand can promote here.[/]")
        return EXIT_OK
    console.print(f"[red]kscand cannot promote here[/] ({len(blockers)} blocker"
                  f"{'s' if len(blockers) > 1 else ''} above; exit status {EXIT_CANNOT_PROMOTE})")
    return EXIT_CANNOT_PROMOTE


def _block_span(pfn_map: PfnNodeMap | None, nid: int) -> str:
    """Memory covered by the node's memory blocks, or '-' without block info."""
    if pfn_map is None:
        return "-"
    mine = pfn_map.nid == nid
    pages = int((pfn_map.end_pfn[mine] - pfn_map.start_pfn[mine]).sum())
    return format_bytes(pages * PAGE_SIZE) if pages < (1 << 52) else "all"
