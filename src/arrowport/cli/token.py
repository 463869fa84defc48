"""``arrowport token create``: a new API token's secret and the config line that accepts it."""

from __future__ import annotations

import argparse
import sys

from arrowport.cli._types import Commands


def register(commands: Commands) -> None:
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
        default=[],
        choices=["ingest", "read", "admin"],
        help="what the token may do (repeatable; admin implies the others; none: /metrics "
        "and /docs only, for a scraper)",
    )
    create.add_argument(
        "--stream",
        dest="streams",
        action="append",
        help="limit ingest to this stream (repeatable; default: every stream)",
    )
    create.set_defaults(run=create_token)


def create_token(args: argparse.Namespace) -> int:
    import yaml
    from pydantic import ValidationError

    from arrowport.auth import config_entry, new_token
    from arrowport.config import TokenSettings

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
    if not args.scopes:
        print(
            "It has no scope: it may read /metrics and /docs only (give --scope for more).",
            file=sys.stderr,
        )
    return 0
