"""``arrowport query "SQL"``: run one read-only SELECT on the server and print the answer."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any, NoReturn, cast

from arrowport.cli._connect import CommandError, add_connection_options, client_command, connect
from arrowport.cli._output import is_terminal, print_rows
from arrowport.cli._types import Commands

if TYPE_CHECKING:
    from arrowport.client import QueryFormat

#: Rows a table on the terminal shows at most (the other formats print every row).
TABLE_ROWS = 1000


def register(commands: Commands) -> None:
    query = commands.add_parser(
        "query",
        help="run one read-only SELECT and print the answer",
        description="Run one read-only SELECT on the server. Formats: table (a table on a "
        "terminal, the default there), csv (the default otherwise), json (the server's "
        '{"columns", "rows", "row_count"}), arrow (an Arrow IPC stream, for a file or a pipe).',
    )
    query.add_argument("sql", help="the SELECT statement")
    query.add_argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        metavar="VALUE",
        help="a value for the next ? or $n placeholder (repeatable; JSON, else text)",
    )
    query.add_argument("--format", choices=["table", "csv", "json", "arrow"], default=None)
    add_connection_options(query)
    query.set_defaults(run=run)


def _param(text: str) -> Any:
    """A ``-p`` value: JSON, else text. JSON has no NaN or infinity (Python's reader takes
    ``NaN``, ``Infinity`` and numbers too large for a double as such): refused, not sent."""

    def not_finite(value: str, why: str = "JSON has no NaN or infinity") -> NoReturn:
        raise CommandError(
            f"-p {text}: {why}; send it as text (-p '\"{value}\"') and cast it in the SQL "
            "(?::DOUBLE)"
        )

    def number(value: str) -> float:
        parsed = float(value)
        if math.isfinite(parsed):
            return parsed
        not_finite(value, f"{value} is too large for a double, and JSON has no infinity")

    try:
        return json.loads(text, parse_constant=not_finite, parse_float=number)
    except ValueError:
        return text


@client_command
def run(args: argparse.Namespace) -> int:
    from arrowport.api.result_values import json_values

    format: str = args.format or ("table" if is_terminal() else "csv")
    params = None if args.params is None else [_param(p) for p in args.params]
    if format == "arrow" and is_terminal():
        raise CommandError("--format arrow writes binary data: redirect it to a file or a pipe")
    with connect(args) as client:
        if format != "table":
            answer = client.query_bytes(args.sql, params, format=cast("QueryFormat", format))
            sys.stdout.buffer.write(answer)
            if format == "json" and not answer.endswith(b"\n"):
                sys.stdout.buffer.write(b"\n")
            sys.stdout.flush()
            return 0
        table = client.query(args.sql, params)
    shown = table.slice(0, TABLE_ROWS)
    note = None
    if table.num_rows > TABLE_ROWS:
        note = f"{TABLE_ROWS:,} of {table.num_rows:,} rows shown; --format csv prints them all"
    else:
        note = f"{table.num_rows:,} row{'s' if table.num_rows != 1 else ''}"
    # As the server's JSON answer holds them: dates Python cannot hold (infinity, year 300000)
    # as text, not an OverflowError.
    values = [json_values(column.combine_chunks()) for column in shown.columns]
    print_rows(shown.column_names, list(zip(*values, strict=True)), note=note)
    return 0
