"""The SCENARIO argument of `kscand sim` and `kscand compare`: a file or a shipped name,
and `--list` (the shipped scenarios, one line each)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from kscand.cli.pathargs import path_str_arg
from kscand.cli.tables import text
from kscand.errors import ConfigError


def add_scenario_argument(parser: Any) -> None:
    parser.add_argument("scenario", nargs="?", type=path_str_arg, default=None,
                        help="a scenario TOML file, or the name of a shipped scenario "
                        "(--list names them)")
    parser.add_argument("--list", action="store_true",
                        help="list the shipped scenarios (name and description) and exit")


def scenario_path(args: argparse.Namespace) -> Path:
    """The file args.scenario names (a path, else a shipped scenario's)."""
    from kscand.data import resolve_scenario

    if args.scenario is None:
        raise ConfigError("a scenario is needed: a TOML file or a shipped name (--list)")
    return resolve_scenario(args.scenario)


def print_scenario_list(console: Console) -> None:
    """The shipped scenarios, one line each (name, description), by group: lines that
    survive a pipe and grep, never wrapped."""
    from kscand.data import shipped_scenarios

    scenarios = shipped_scenarios()
    width = max((len(s.name) for s in scenarios), default=0)
    group = ""
    for scenario in scenarios:
        if scenario.group != group:
            group = scenario.group
            console.print(f"{group} scenarios:", highlight=False, soft_wrap=True)
        console.print(f"  {text(scenario.name.ljust(width))}  {text(scenario.description)}",
                      highlight=False, soft_wrap=True)
