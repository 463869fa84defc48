"""``arrowport streams``: the streams configured on the server."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from arrowport.cli._connect import add_connection_options, client_command, connect
from arrowport.cli._output import add_format_option, print_rows
from arrowport.cli._types import Commands


def register(commands: Commands) -> None:
    streams = commands.add_parser("streams", help="list the streams configured on the server")
    add_format_option(streams)
    add_connection_options(streams)
    streams.set_defaults(run=run)


@client_command
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found = client.streams()
    if args.format == "json":
        print(json.dumps([asdict(s) for s in found], indent=2))
        return 0
    print_rows(
        ["stream", "table", "mode", "chunk_size", "compression"],
        [(s.name, s.table, s.mode, s.chunk_size, s.compression) for s in found],
        right=["chunk_size"],
    )
    return 0
