"""``arrowport ingest PATH... --stream S``: land files in a table, exactly once, resumably.

Each file is read in file order and cut into requests of ``--batch-rows`` rows, sent as its own
producer: an id derived from the stream, the table, the file's absolute path, size and
modification time, its format, the rows per request and ``--run-id``. Interrupted (Ctrl-C, a
server restart, a network cut), the same command run again asks the server which of each file's
requests are committed and sends only the rest, so every row lands exactly once.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import TYPE_CHECKING

from arrowport.cli._connect import (
    CommandError,
    add_connection_options,
    client_command,
    connect,
)
from arrowport.cli._types import Commands

if TYPE_CHECKING:
    from arrowport.cli._files import InputFile
    from arrowport.cli._progress import Tally
    from arrowport.client import Client
    from arrowport.options import WriteMode

FORMAT_CHOICES = ("parquet", "ipc", "arrows", "csv", "ndjson")
DEFAULT_BATCH_ROWS = 100_000
MAX_BATCH_ROWS = 2**31 - 1


def register(commands: Commands) -> None:
    ingest = commands.add_parser(
        "ingest",
        help="land Parquet, Arrow IPC, CSV or NDJSON files in a table, resumably",
        description="Land files in the stream's table, exactly once. Rerun the same command "
        "after an interruption: what already landed is skipped. Formats by file name (.parquet, "
        ".arrow/.feather/.ipc: Arrow IPC file, or stream when the file says so; .arrows: IPC "
        "stream; .csv; .ndjson/.jsonl/.json; CSV and NDJSON may end in .gz, .bz2, .zst) or "
        "--format.",
    )
    ingest.add_argument(
        "paths", nargs="+", metavar="PATH", help="files, directories or glob patterns ('**' too)"
    )
    ingest.add_argument("--stream", required=True, help="the stream to send to")
    ingest.add_argument("--table", help="target table (default: the stream's)")
    ingest.add_argument(
        "--mode",
        choices=["append", "replace", "create", "upsert"],
        help="append, replace, create or upsert (default: the stream's); replace and create "
        "apply to the first request, the rest append",
    )
    ingest.add_argument("--key-columns", help="upsert key columns, comma-separated")
    ingest.add_argument(
        "--schema-policy", choices=["strict", "evolve"], help="strict or evolve (stream's)"
    )
    ingest.add_argument("--format", choices=FORMAT_CHOICES, help="read every file as this format")
    ingest.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of CSV files (default: utf-8; e.g. latin-1, cp1252), decoded to "
        "UTF-8 as they are read",
    )
    ingest.add_argument(
        "--batch-rows",
        type=int,
        default=DEFAULT_BATCH_ROWS,
        metavar="N",
        help=f"rows per request, 1 to {MAX_BATCH_ROWS:,} (default: {DEFAULT_BATCH_ROWS:,}); a "
        "rerun must use the same number to resume",
    )
    ingest.add_argument(
        "--run-id",
        default="",
        help="a label that makes this a new load of the same files (to land them again); "
        "rerun with the same label to resume it",
    )
    add_connection_options(ingest)
    ingest.set_defaults(run=run)


# CSV and NDJSON files are read through for their types before anything is sent; from this
# much on, the wait is said.
_SAY_READING_BYTES = 64 * 10**6


@client_command
def run(args: argparse.Namespace) -> int:
    import pyarrow as pa

    from arrowport.cli._csv import csv_encoding
    from arrowport.cli._files import find_files, inspect, read_batches
    from arrowport.cli._progress import Display, Tally
    from arrowport.client import ArrowportClientError

    if not 1 <= args.batch_rows <= MAX_BATCH_ROWS:
        raise CommandError(f"--batch-rows must be from 1 to {MAX_BATCH_ROWS:,}")
    key_columns = None
    if args.key_columns:
        key_columns = [c.strip() for c in args.key_columns.split(",") if c.strip()]
    try:
        encoding = csv_encoding(args.encoding)
    except ValueError as exc:
        raise CommandError(f"--encoding: {exc}") from None
    files = find_files(args.paths, args.format, encoding)
    text = [f for f in files if f.format in ("csv", "ndjson")]
    text_bytes = sum(f.size for f in text)
    if text_bytes >= _SAY_READING_BYTES:  # it takes a while: say why
        print(
            f"arrowport: reading {len(text)} CSV/NDJSON file{'s' if len(text) != 1 else ''} "
            f"({text_bytes / 1e6:,.0f} MB) through for their columns' types "
            "before sending",
            file=sys.stderr,
        )
    try:
        inspect(files)
    except (pa.ArrowException, OSError) as exc:
        raise CommandError(f"cannot read the files: {exc}") from None
    known = [f.rows for f in files]
    total = None if any(r is None for r in known) else sum(r or 0 for r in known)
    tally = Tally(total_rows=total, files=len(files))
    table = args.table
    with connect(args) as client, Display.choose(tally) as display:
        whole, load = _whole_load(client, args, files)
        begun = False  # whether a file has sent the load's first request
        try:
            for index, item in enumerate(files):
                display.file_started(item, index)
                # The first file to send anything replaced or created the table (a CSV header
                # alone sends nothing): the others append to it.
                mode: WriteMode | None = "append" if whole and begun else args.mode
                try:
                    summary = client.ingest(
                        args.stream,
                        read_batches(item, args.batch_rows),
                        table=args.table,
                        mode=mode,
                        key_columns=key_columns,
                        schema_policy=args.schema_policy,
                        producer_id=item.producer_id(
                            args.stream, args.table, args.batch_rows, args.run_id, load
                        ),
                        resume=True,
                        request_rows=args.batch_rows,
                        progress=functools.partial(display.advanced, item),
                    )
                except pa.ArrowCancelled:  # Ctrl-C while pyarrow was reading
                    raise KeyboardInterrupt from None
                except (pa.ArrowException, OSError) as exc:
                    raise CommandError(f"{item.path}: cannot read it: {exc}") from None
                except ArrowportClientError as exc:  # say which file the server refused
                    where = f"{item.path}, file {index + 1} of {len(files)}"
                    raise CommandError(f"{exc} ({where})") from None
                table = summary.table or table
                begun = begun or summary.requests + summary.skipped_requests > 0
                display.file_done(item, summary)
        except KeyboardInterrupt:
            display.close()
            print(
                f"arrowport: interrupted after {tally.rows_landed():,} rows; run the same "
                "command again to land the rest",
                file=sys.stderr,
            )
            return 130
    print(_summary(tally, len(files), f"table {table}" if table else f"stream {args.stream}"))
    return 0


def _whole_load(
    client: Client, args: argparse.Namespace, files: list[InputFile]
) -> tuple[bool, str]:
    """Whether the files replace or create the table (``--mode``, else the stream's own mode),
    as one load: then only the first to send anything does, the others append, and the load's
    identity (see :func:`load_of`) is in every file's producer id. A locked stream refuses those
    appends: several files for it are refused before anything is sent."""
    from arrowport.cli._files import load_of
    from arrowport.client import RequestError
    from arrowport.client._endpoints import unserved

    if args.mode not in (None, "replace", "create"):
        return False, ""
    try:
        stream = client.stream(args.stream)
    except RequestError as exc:
        if not unserved(exc):
            raise
        stream = None  # a server too old to say: --mode decides alone
    mode = args.mode or (stream.mode if stream is not None else "append")
    if mode not in ("replace", "create"):
        return False, ""
    # Another mode than its own is refused by the server with the first request, saying so.
    if stream is not None and stream.locked and mode == stream.mode and len(files) > 1:
        raise CommandError(
            f"stream {args.stream!r} is locked to its configuration, so it takes mode {mode} one "
            f"request at a time: each would {mode} the table, and {len(files)} files cannot "
            "all land; nothing was sent"
        )
    return True, load_of(files, mode)


def _summary(tally: Tally, files: int, target: str) -> str:
    seconds = tally.seconds()
    of_files = f"{files} file{'s' if files != 1 else ''}"
    if tally.landed == 0 and tally.skipped:
        return f"nothing to send: all {tally.skipped:,} rows of the {of_files} had landed before"
    rate = tally.landed / seconds if seconds > 0 else 0.0
    already = f"; {tally.skipped:,} rows had landed before" if tally.skipped else ""
    return (
        f"landed {tally.landed:,} rows from {of_files} in {target} in {seconds:.1f} s "
        f"({rate:,.0f} rows/s){already}"
    )
