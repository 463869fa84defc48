"""The ``arrowport`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from arrowport import __version__
from arrowport.config import ConfigError, load_settings, settings_table


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arrowport", description="Land Apache Arrow data in DuckDB."
    )
    parser.add_argument("--version", action="version", version=f"arrowport {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP (and Flight) server")
    serve.add_argument("--config", help="YAML config file (also ARROWPORT_CONFIG)")
    serve.add_argument("--host", help="bind address (api.host)")
    serve.add_argument("--port", type=int, help="HTTP port (api.port; 0 picks a free one)")
    serve.add_argument(
        "--flight-port", type=int, help="Arrow Flight port (flight.port; 0 picks a free one)"
    )
    serve.add_argument("--db", help="DuckDB database file (duckdb.path)")

    commands.add_parser("settings", help="print every setting as a Markdown table")
    return parser


def _settings_markdown() -> str:
    lines = [
        "| YAML key | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for key, variable, default, meaning in settings_table():
        lines.append(f"| `{key}` | `{variable}` | `{default}` | {meaning} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "settings":
        print(_settings_markdown())
        return 0
    overrides = {
        "api.host": args.host,
        "api.port": args.port,
        "duckdb.path": args.db,
        "flight.port": args.flight_port,
    }
    try:
        settings = load_settings(args.config, overrides)
    except ConfigError as exc:
        print(f"arrowport: {exc}", file=sys.stderr)
        return 2
    from arrowport.server import serve  # imported late: keeps `arrowport settings` fast

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
