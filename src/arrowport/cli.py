"""The ``arrowport`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import yaml
from pydantic import ValidationError

from arrowport import __version__
from arrowport.config import ConfigError, TokenSettings, load_settings, settings_table


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
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        default=None,
        help="serve a non-loopback address with no tokens configured "
        "(auth.allow_unauthenticated): anyone who can connect may read and write everything",
    )

    token = commands.add_parser("token", help="manage API tokens")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create", help="print a new token's secret and the config line that accepts it"
    )
    create.add_argument("name", help="token name (shown in logs; letters, digits, _ - .)")
    create.add_argument(
        "--scope",
        dest="scopes",
        action="append",
        required=True,
        choices=["ingest", "read", "admin"],
        help="what the token may do (repeatable; admin implies the others)",
    )
    create.add_argument(
        "--stream",
        dest="streams",
        action="append",
        help="limit ingest to this stream (repeatable; default: every stream)",
    )

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


def _token_create(args: argparse.Namespace) -> int:
    from arrowport.auth import config_entry, new_token

    secret = new_token(args.name)
    entry = config_entry(args.name, secret, args.scopes, args.streams)
    try:
        TokenSettings.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        print(f"arrowport: token {where}: {first['msg']}", file=sys.stderr)
        return 2
    line = yaml.safe_dump(entry, default_flow_style=True, sort_keys=False, width=10_000)
    print(secret)
    print(f"- {line.strip()}")
    print(
        "The first line is the secret (shown only this once; clients send it as "
        "'Authorization: Bearer <secret>'). Paste the second line under 'auth: tokens:' in the "
        "config file; it holds only the secret's hash.",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "settings":
        print(_settings_markdown())
        return 0
    if args.command == "token":
        return _token_create(args)
    overrides = {
        "api.host": args.host,
        "api.port": args.port,
        "duckdb.path": args.db,
        "auth.allow_unauthenticated": args.allow_unauthenticated,
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
