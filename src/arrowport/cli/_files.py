"""The files ``arrowport ingest`` reads: finding them, telling their format, checking that
each is whole, and reading each as record batches in a fixed order (what makes a rerun cut a
file the same way), with its own columns (see :mod:`arrowport.cli._text`)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds

from arrowport.cli._connect import CommandError
from arrowport.cli._csv import UTF8, csv_batches, csv_schema
from arrowport.cli._text import ndjson_batches, ndjson_schema, shared_types

Format = Literal["parquet", "ipc", "arrows", "csv", "ndjson"]
FORMATS: tuple[Format, ...] = ("parquet", "ipc", "arrows", "csv", "ndjson")
# The format each file name ending stands for; CSV and NDJSON may also be compressed.
_SUFFIXES: dict[str, Format] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",
    ".feather": "ipc",
    ".ipc": "ipc",
    ".arrows": "arrows",
    ".csv": "csv",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "ndjson",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")
_DATASET_FORMAT: dict[Format, str] = {
    "parquet": "parquet",
    "ipc": "ipc",
    "ndjson": "json",
}
_IPC_FILE_MAGIC = b"ARROW1"
# How an IPC stream ends: a continuation marker and a zero length, or (before Arrow 0.15) the
# zero length alone. A stream that stops without one was cut short.
_END_OF_STREAM = (b"\xff\xff\xff\xff\x00\x00\x00\x00", b"\x00\x00\x00\x00")


@dataclass
class InputFile:
    """One file to land, with what identifies its contents (path, size, modification time)."""

    path: Path
    format: Format
    size: int
    mtime_ns: int
    rows: int | None = None  # known before sending (Parquet, Arrow IPC files: metadata; CSV)
    schema: pa.Schema | None = field(default=None, repr=False)  # CSV, NDJSON: read with it
    encoding: str = UTF8  # CSV: the text's encoding, as pyarrow names it

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def identity(self) -> list[Any]:
        """What identifies the file's contents: path, size, modification time and format (and
        a CSV file's encoding, other than UTF-8: its values read otherwise are others)."""
        identity: list[Any] = [str(self.path), self.size, self.mtime_ns, self.format]
        if self.format == "csv" and self.encoding != UTF8:
            identity.append(self.encoding)
        return identity

    def producer_id(
        self, stream: str, table: str | None, rows_per_request: int, run: str, load: str = ""
    ) -> str:
        """The producer this file's requests are sent as: the same for the same file, stream,
        table, cut and ``load`` (so a rerun continues it), another for anything else."""
        identity = [stream, table, *self.identity, rows_per_request, run]
        if load:
            identity.append(load)
        digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()
        return "arrowport-ingest-" + digest[:40]


def load_of(files: Sequence[InputFile], mode: str) -> str:
    """What makes the files one load, in their producers' ids: a load that replaces or creates
    the table is all of them, its first file replacing or creating it and the others appending
    (a file that changed is sent again, replacing the table: every file after it must be too)."""
    together = [mode, *(item.identity for item in files)]
    return hashlib.sha256(json.dumps(together).encode()).hexdigest()


def format_of(path: Path) -> Format | None:
    """The format a file name says, if any (an ``.arrow`` file in the stream format is told by
    its first bytes)."""
    name = path.name.lower()
    compressed = name.endswith(_COMPRESSED)
    if compressed:
        name = os.path.splitext(name)[0]
    found = _SUFFIXES.get(os.path.splitext(name)[1])
    if found is None or (compressed and found not in ("csv", "ndjson")):
        return None
    if found == "ipc" and not _starts_with(path, _IPC_FILE_MAGIC):
        return "arrows"
    return found


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(magic)) == magic
    except OSError:
        return False


def _hidden(path: Path) -> bool:
    return path.name.startswith((".", "_"))


def find_files(
    arguments: Sequence[str], format: Format | None, encoding: str = UTF8
) -> list[InputFile]:
    """The files named by ``arguments``: files, directories (every data file below them,
    hidden ones and ``_``-prefixed ones skipped) and glob patterns (``**`` too), each once, in
    the order given (sorted within a directory or pattern); CSV files are read as text in
    ``encoding``."""
    found: list[Path] = []
    for argument in arguments:
        path = Path(argument).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            below = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and not any(_hidden(Path(part)) for part in p.relative_to(path).parts)
            )
            chosen = [p for p in below if format is not None or format_of(p) is not None]
            if not chosen:
                raise CommandError(f"{argument}: no data files in this directory")
            found += chosen
        elif glob.has_magic(argument):
            # A quoted pattern reaches us with its ``~`` as typed, as a quoted file name does.
            pattern = os.path.expanduser(argument)
            matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise CommandError(f"{argument}: no file matches")
            found += matches
        elif path.exists():
            raise CommandError(f"{argument}: not a regular file or a directory")
        else:
            raise CommandError(f"{argument}: no such file or directory")
    files: list[InputFile] = []
    seen: set[Path] = set()
    for path in found:
        resolved = path.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        kind = format or format_of(resolved)
        if kind is None:
            raise CommandError(
                f"{path}: cannot tell its format from its name; use --format ({', '.join(FORMATS)})"
            )
        stat = resolved.stat()
        files.append(InputFile(resolved, kind, stat.st_size, stat.st_mtime_ns, encoding=encoding))
    return files


def inspect(files: Sequence[InputFile]) -> None:
    """Read what the files' metadata tells, before anything is sent: row counts (Parquet, Arrow
    IPC files), the columns and types of CSV and NDJSON files (read through for them; a CSV
    file's rows counted on the way), and that every Arrow IPC file and stream is whole (a
    truncated one is refused, not landed in part)."""
    for kind in ("csv", "ndjson"):
        group = [f for f in files if f.format == kind]
        own = [_own_schema(item) for item in group]
        for item, schema in zip(group, shared_types(own, text=kind == "csv"), strict=True):
            item.schema = schema
    for item in files:
        try:
            if item.format == "arrows":
                _check_stream_end(item.path)
            elif item.format in ("parquet", "ipc"):
                if item.format == "ipc":
                    _check_file_end(item.path)
                item.rows = int(_fragment(item).count_rows())
        except (pa.ArrowException, OSError) as exc:
            raise CommandError(f"{item.path}: cannot read it as {item.format}: {exc}") from None


def _own_schema(item: InputFile) -> pa.Schema:
    """A CSV or NDJSON file's own columns, with types that hold every value in it."""
    try:
        if item.format == "ndjson":
            return ndjson_schema(item.path)
        schema, item.rows = csv_schema(item.path, item.encoding)
        return schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CommandError(f"{item.path}: cannot read it as {item.format}: {exc}") from None


def _check_stream_end(path: Path) -> None:
    """Refuse an IPC stream that stops without its end-of-stream marker: cut between two
    batches, it would read as a shorter stream. Its messages are walked (their bodies mapped,
    not read); one cut inside fails there."""
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.MessageReader.open_stream(source)
        messages, end = 0, 0
        while True:
            try:
                reader.read_next_message()
            except StopIteration:
                break
            except (pa.ArrowInvalid, OSError) as exc:
                raise CommandError(
                    f"{path}: the Arrow IPC stream is cut short or damaged after {messages} "
                    f"messages ({exc}); nothing of it was sent"
                ) from None
            messages, end = messages + 1, source.tell()
        stop = source.tell()
        source.seek(end)
        marker = source.read(stop - end)
    if messages == 0:
        raise CommandError(f"{path}: cannot read it as arrows: the file holds no Arrow IPC stream")
    if marker not in _END_OF_STREAM:
        raise CommandError(
            f"{path}: the Arrow IPC stream is cut short: it stops after {messages} messages "
            "without its end-of-stream marker (a truncated copy, or a writer that did not "
            "finish?); nothing of it was sent"
        )


def _check_file_end(path: Path) -> None:
    """Refuse an IPC file that starts as one but does not end with its footer (truncated)."""
    with path.open("rb") as handle:
        start = handle.read(len(_IPC_FILE_MAGIC))
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(size - len(_IPC_FILE_MAGIC), 0))
        end = handle.read()
    if start == _IPC_FILE_MAGIC and (end != _IPC_FILE_MAGIC or size < 2 * len(start) + 4):
        raise CommandError(
            f"{path}: the Arrow IPC file is cut short: it does not end with its footer (a "
            "truncated copy, or a writer that did not finish?); nothing of it was sent"
        )


def _dataset(paths: Sequence[Path], kind: Format) -> ds.Dataset:
    try:
        return ds.dataset([str(p) for p in paths], format=_DATASET_FORMAT[kind])
    except (pa.ArrowException, OSError) as exc:
        raise CommandError(f"{paths[0]}: cannot read it as {kind}: {exc}") from None


def _fragment(item: InputFile) -> Any:
    return next(iter(_dataset([item.path], item.format).get_fragments()))


def read_batches(item: InputFile, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in file order, as batches of about ``batch_rows`` rows, with the file's
    own columns (CSV, NDJSON: those :func:`inspect` found); a file of no rows whose columns
    have types is one empty batch, so that they still create (or, replacing, empty) the
    table."""
    if item.format == "arrows":
        with pa.OSFile(str(item.path)) as source, pa.ipc.open_stream(source) as reader:
            yield from _or_empty(reader, reader.schema)
        return
    if item.format == "ndjson":
        schema = item.schema or ndjson_schema(item.path)
        yield from _or_empty(ndjson_batches(item.path, schema, batch_rows), schema)
        return
    if item.format == "csv":  # by the reader that settled its types, with them
        schema = item.schema
        if schema is None:
            schema = csv_schema(item.path, item.encoding)[0]
        yield from _or_empty(csv_batches(item.path, schema, item.encoding), schema)
        return
    fragment = _fragment(item)
    schema = item.schema if item.schema is not None else fragment.physical_schema
    batches = fragment.to_batches(
        schema=schema,
        batch_size=batch_rows,
        batch_readahead=1,
        fragment_readahead=1,
        use_threads=False,
    )
    yield from _or_empty(batches, schema)


def _or_empty(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    empty = True
    for batch in batches:
        empty = False
        yield batch
    # Columns with no type (a CSV header alone: no value said what they hold) would create or
    # replace the table with guessed ones: such a file sends nothing.
    if empty and len(schema) and not any(pa.types.is_null(f.type) for f in schema):
        yield pa.RecordBatch.from_pylist([], schema=schema)
