"""CSV and NDJSON files: the columns and types each is read with, and NDJSON read in blocks.

A file is read with its own columns, never another file's, so that nothing is dropped or
made up on the way: a CSV file's are its header's, with types that hold every value in the
file (see :mod:`arrowport.cli._csv`); an NDJSON file's are every key on any of its lines, with
types inferred over the whole file (it is read once to learn them, then again to send it), so
a key first seen on the last line is a column all the same. A column that several files of a
format share is read with one type: the common one where there is one (NULL and a type,
integers and floats, lists and structs of such), for CSV text where there is none (every CSV
value is text first); an NDJSON column with no common type keeps each file's own, and the
server's schema policy decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.json as pajson

from arrowport.cli._connect import CommandError

#: Bytes of NDJSON parsed at once (a block ends at a line's end, so a longer line is whole).
BLOCK_BYTES = 4 * 1024 * 1024
# The codec of a compressed file, by its name's last suffix in any case (pyarrow's own
# detection knows only lower-case suffixes, and would read a .GZ file's bytes as text).
_CODECS = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}


def opened(path: Path) -> pa.NativeFile:
    """The file as a stream, decompressed as its name says."""
    return pa.input_stream(str(path), compression=_CODECS.get(path.suffix.lower()))


def common_type(first: pa.DataType, second: pa.DataType) -> pa.DataType | None:
    """The type that holds values of both, if one does (``None``: none does)."""
    if first.equals(second):
        return first
    try:
        unified = pa.unify_schemas(
            [pa.schema([("value", first)]), pa.schema([("value", second)])],
            promote_options="permissive",
        )
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        pass
    else:
        return unified.field(0).type
    if _is_text(first) and _is_text(second):  # text that looked like a timestamp, and text
        return pa.string()
    return None


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_timestamp(kind))


def shared_types(schemas: Sequence[pa.Schema], text: bool) -> list[pa.Schema]:
    """Each schema with the same columns, each column shared with others given their common
    type (``text``: CSV, where a column with no common type is read as text)."""
    types: dict[str, pa.DataType | None] = {}
    for schema in schemas:
        for field in schema:
            if field.name not in types:
                types[field.name] = field.type
                continue
            known = types[field.name]
            if known is not None:
                merged = common_type(known, field.type)
                types[field.name] = pa.string() if merged is None and text else merged
    return [
        pa.schema(
            [field.with_type(types[field.name] or field.type) for field in schema],
            metadata=schema.metadata,
        )
        for schema in schemas
    ]


# -- NDJSON --------------------------------------------------------------------------------------


def _blocks(path: Path) -> Iterator[tuple[int, bytes]]:
    """The file (decompressed as its name says) in blocks of whole lines, each with the number
    of its first line; blocks of blank lines alone are left out."""
    line = 1
    pending = bytearray()
    with opened(path) as source:
        while True:
            data = source.read(BLOCK_BYTES)
            pending += data
            if data:
                cut = pending.rfind(b"\n") + 1
                if len(pending) < BLOCK_BYTES or cut == 0:
                    continue  # a block is at least BLOCK_BYTES, up to the end of a line
            else:
                cut = len(pending)
            block = bytes(pending[:cut])
            del pending[:cut]
            if block.strip():
                yield line, block
            line += block.count(b"\n")
            if not data:
                return


def _lines(first: int, block: bytes) -> str:
    last = first + block.rstrip(b"\n").count(b"\n")
    return f"line {first}" if last == first else f"lines {first}-{last}"


def _parse(path: Path, first: int, block: bytes, schema: pa.Schema | None) -> pa.Table:
    """One block as a table: its own columns and types, or exactly ``schema``'s."""
    options = pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer" if schema is None else "error"
    )
    # One block for pyarrow too, so that the row an error names counts from the block's start.
    size = min(len(block) + 1, 2**31 - 1)
    try:
        return pajson.read_json(
            pa.py_buffer(block),
            read_options=pajson.ReadOptions(use_threads=False, block_size=size),
            parse_options=options,
        )
    except pa.ArrowInvalid as exc:
        raise _failure(path, first, block, str(exc)) from None


_ROW = re.compile(r" in row (\d+)$")
_CHANGED = re.compile(r"^JSON parse error: Column\(/(.*)\) changed from (\w+) to (\w+) in row")


def _failure(path: Path, first: int, block: bytes, message: str) -> CommandError:
    """pyarrow's parse error, with the file's line for the block's row it names."""
    if (array := _array_line(first, block)) is not None:
        # A .json file is often one JSON array, which pyarrow reports as a column's change.
        return CommandError(
            f"{path}: line {array} starts a JSON array: ndjson holds one JSON object per line "
            "(`jq -c '.[]'` writes an array's objects that way)"
        )
    row = _ROW.search(message)
    if row is None:
        return CommandError(f"{path}: cannot read it as ndjson ({_lines(first, block)}): {message}")
    line = _line_of(first, block, int(row[1]))
    changed = _CHANGED.match(message)
    if changed is not None:
        key, before, now = changed.groups()
        return CommandError(
            f"{path}: key {key!r} holds {before} values and, on line {line}, a {now}: one "
            "column cannot hold both"
        )
    return CommandError(f"{path}: cannot read it as ndjson (line {line}): {message[: row.start()]}")


def _array_line(first: int, block: bytes) -> int | None:
    """The line of the block's first line that starts a JSON array, if any."""
    for offset, text in enumerate(block.split(b"\n")):
        if text.lstrip().startswith(b"["):
            return first + offset
    return None


def _line_of(first: int, block: bytes, row: int) -> int:
    """The line of the block's ``row``-th object (counted from 0; blank lines hold none)."""
    seen = -1
    for offset, text in enumerate(block.split(b"\n")):
        seen += 1 if text.strip() else 0
        if seen == row:
            return first + offset
    return first


def ndjson_schema(path: Path) -> pa.Schema:
    """Every key of the file, in the order first seen, each with a type that holds all its
    values; refused, naming the key, where none does."""
    fields: dict[str, pa.Field] = {}
    objects = False
    for first, block in _blocks(path):
        objects = True
        for field in _parse(path, first, block, None).schema:
            known = fields.get(field.name)
            if known is None:
                fields[field.name] = field
                continue
            merged = common_type(known.type, field.type)
            if merged is None:
                raise CommandError(
                    f"{path}: key {field.name!r} holds {known.type} values and, in "
                    f"{_lines(first, block)}, {field.type} values: one column cannot hold both"
                )
            fields[field.name] = known.with_type(merged)
    if not objects:
        raise CommandError(f"{path}: cannot read it as ndjson: the file holds no JSON objects")
    return pa.schema(list(fields.values()))


def ndjson_batches(path: Path, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """The file's rows in file order, every batch with exactly ``schema``'s columns."""
    for first, block in _blocks(path):
        yield from _parse(path, first, block, schema).to_batches(max_chunksize=batch_rows)
