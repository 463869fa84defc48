"""``arrowport tables``: every table of the server's database, with its row count and columns."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from arrowport.cli._connect import add_connection_options, client_command, connect
from arrowport.cli._output import add_format_option, print_rows
from arrowport.cli._types import Commands


def register(commands: Commands) -> None:
    tables = commands.add_parser(
        "tables", help="list the server's tables with their row counts and columns"
    )
    add_format_option(tables)
    add_connection_options(tables)
    tables.set_defaults(run=run)


@client_command
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.tables()
    if args.format == "json":
        print(json.dumps([asdict(t) for t in found], indent=2))
        return 0
    print_rows(
        ["table", "rows", "columns"],
        [(t.name, t.row_count, ", ".join(f"{c.name} {c.type}" for c in t.columns)) for t in found],
        right=["rows"],
    )
    return 0
