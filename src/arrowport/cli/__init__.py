"""The ``arrowport`` command line: one module per command.

Each module in :data:`COMMANDS` has ``register(commands)``, which adds its sub-parser (with
``run`` as the parser's default: ``run(args) -> exit code``). A new command is a new module and
one more entry here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arrowport import __version__
from arrowport.cli import ingest, lake, query, serve, settings, streams, tables, token

COMMANDS = (serve, token, settings, ingest, query, tables, streams, lake)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="arrowport", description="Land Apache Arrow data in DuckDB.")
    top.add_argument("--version", action="version", version=f"arrowport {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
