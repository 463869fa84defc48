"""The files ``arrowport ingest`` reads: finding them, telling their format, and reading each
as record batches in a fixed order (what makes a rerun cut a file the same way)."""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.dataset as ds

from arrowport.cli._connect import CommandError

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
    "csv": "csv",
    "ndjson": "json",
}
_IPC_FILE_MAGIC = b"ARROW1"


@dataclass
class InputFile:
    """One file to land, with what identifies its contents (path, size, modification time)."""

    path: Path
    format: Format
    size: int
    mtime_ns: int
    rows: int | None = None  # known from the file's metadata (Parquet, Arrow IPC files)
    schema: pa.Schema | None = field(default=None, repr=False)  # CSV, NDJSON: shared by a group

    @property
    def name(self) -> str:
        return self.path.name

    def producer_id(self, stream: str, table: str | None, rows_per_request: int, run: str) -> str:
        """The producer this file's requests are sent as: the same for the same file, stream,
        table and cut (so a rerun continues it), another for anything else."""
        identity = json.dumps(
            [
                stream,
                table,
                str(self.path),
                self.size,
                self.mtime_ns,
                self.format,
                rows_per_request,
                run,
            ]
        )
        return "arrowport-ingest-" + hashlib.sha256(identity.encode()).hexdigest()[:40]


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


def find_files(arguments: Sequence[str], format: Format | None) -> list[InputFile]:
    """The files named by ``arguments``: files, directories (every data file below them,
    hidden ones and ``_``-prefixed ones skipped) and glob patterns (``**`` too), each once, in
    the order given (sorted within a directory or pattern)."""
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
            matches = sorted(Path(m) for m in glob.glob(argument, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise CommandError(f"{argument}: no file matches")
            found += matches
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
        files.append(InputFile(resolved, kind, stat.st_size, stat.st_mtime_ns))
    return files


def inspect(files: Sequence[InputFile]) -> None:
    """Fill in what the files' metadata tells: row counts (Parquet, Arrow IPC files) and, for
    text formats, one schema inferred for all the files of a format (from the first, as
    ``pyarrow.dataset`` does), so that every file lands with the same column types."""
    for kind in ("csv", "ndjson"):
        group = [f for f in files if f.format == kind]
        if group:
            schema = _dataset([f.path for f in group], kind).schema
            for item in group:
                item.schema = schema
    for item in files:
        if item.format in ("parquet", "ipc"):
            item.rows = int(_fragment(item).count_rows())


def _dataset(paths: Sequence[Path], kind: Format) -> ds.Dataset:
    try:
        return ds.dataset([str(p) for p in paths], format=_DATASET_FORMAT[kind])
    except (pa.ArrowException, OSError) as exc:
        raise CommandError(f"{paths[0]}: cannot read it as {kind}: {exc}") from None


def _fragment(item: InputFile) -> Any:
    return next(iter(_dataset([item.path], item.format).get_fragments()))


def read_batches(item: InputFile, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in file order, as batches of about ``batch_rows`` rows."""
    if item.format == "arrows":
        with pa.OSFile(str(item.path)) as source, pa.ipc.open_stream(source) as reader:
            yield from reader
        return
    fragment = _fragment(item)
    yield from fragment.to_batches(
        schema=item.schema if item.schema is not None else fragment.physical_schema,
        batch_size=batch_rows,
        batch_readahead=1,
        fragment_readahead=1,
        use_threads=False,
    )
