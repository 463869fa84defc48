"""``arrowport settings``: every setting as a Markdown table (the README's is generated from
it)."""

from __future__ import annotations

import argparse

from arrowport.cli._types import Commands


def register(commands: Commands) -> None:
    settings = commands.add_parser("settings", help="print every setting as a Markdown table")
    settings.set_defaults(run=run)


def markdown() -> str:
    from arrowport.config import settings_table

    lines = [
        "| YAML key | Environment variable | Default | Meaning |",
        "|---|---|---|---|",
    ]
    for key, variable, default, meaning in settings_table():
        lines.append(f"| `{key}` | `{variable}` | `{default}` | {meaning} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    print(markdown())
    return 0
