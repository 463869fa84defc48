"""Printing rows for people (a rich table on a terminal) and for programs (tab-separated)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

NULL = "NULL"


def is_terminal() -> bool:
    return sys.stdout.isatty()


def cell(value: Any) -> str:
    return NULL if value is None else str(value)


def print_rows(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
    note: str | None = None,
) -> None:
    """``rows`` under ``columns``: a rich table on a terminal, else tab-separated lines with a
    header (tabs and newlines inside values become spaces)."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title and _escape(title), show_lines=False)
        for name in columns:  # a name is text, not markup: "[/]" or "[bold]x" as they are
            table.add_column(
                _escape(name), justify="right" if name in right else "left", overflow="fold"
            )
        for row in rows:
            table.add_row(*(_rich_cell(v) for v in row))
        console = Console(highlight=False)
        console.print(table)
        if note:
            console.print(f"[dim]{_escape(note)}[/dim]")
        return
    print("\t".join(columns))
    for row in rows:
        print("\t".join(" ".join(cell(v).split()) if v is not None else NULL for v in row))
    if note:
        print(note, file=sys.stderr)


def _rich_cell(value: Any) -> str:
    if value is None:
        return f"[dim]{NULL}[/dim]"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return _escape(str(value))


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def add_format_option(parser: argparse.ArgumentParser) -> None:
    """``--format table|json`` for a command that lists things."""
    parser.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (a table on a terminal, tab-separated otherwise; default) or json",
    )
