"""CSV files: read in order, with types inferred over the whole file.

pyarrow infers a CSV file's types from its first block (about a megabyte) and fails later in the
file on a value that type cannot hold: text in a column of numbers, a fraction among integers,
the first value of a column empty until then, a time zone among timestamps without one. Found
while sending, that failure would leave the requests sent before it landed and the rest not. So
the file is read through before anything of it is sent, by the reader that then sends it
(:func:`csv_batches`), with the types it will be sent with. Where a value does not fit, the
types widen to hold it: every column that the block around it contradicts (as pyarrow infers
that block's types alone), to a type that holds both (an integer column with a fraction becomes
a float one; with text, a text one), and its own column at least to text. Then the file is read
again from its start, until it reads whole. A file that cannot be read at all (a row with more
fields than the header, two columns of one name, a value that is not text in the file's
encoding, UTF-8 unless ``--encoding`` says otherwise) fails here too, before anything of it is
sent.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from arrowport.cli._text import common_type, opened

# pyarrow's words for a value its column's type cannot hold (the column 0-based); the value is
# quoted, unless what did not fit was a time zone.
_MISFIT = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to [^:]+: (.*)$", re.DOTALL
)
_VALUE = re.compile(r"invalid value '(.*)'$", re.DOTALL)
# How pyarrow names UTF-8, the encoding it reads as it is.
UTF8 = "utf8"


def csv_encoding(name: str) -> str:
    """The name pyarrow reads a text encoding by (``utf8``, read as it is; any other is
    decoded to UTF-8 as the file is read); ValueError for an encoding Python does not know, or
    a codec of bytes to bytes (``zlib_codec``) or text to text (``rot13``), which pyarrow would
    fail on with a traceback."""
    try:
        known = codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"unknown text encoding {name!r}") from None
    try:
        "".encode(known)  # str.encode takes text encodings only
        # pyarrow hands the decoder its own buffers, which some codecs cannot take (punycode).
        codecs.getincrementaldecoder(known)().decode(pa.py_buffer(b"a,b\n"), final=True)
    except UnicodeError:
        pass  # the sample is not text in it (UTF-16 without a byte order mark), but was read
    except Exception:  # whatever the codec raises, it cannot read the file
        raise ValueError(f"{name!r} is not a text encoding pyarrow can read") from None
    return UTF8 if known == "utf-8" else known


def csv_batches(
    path: Path, schema: pa.Schema | None = None, encoding: str = UTF8
) -> Iterator[pa.RecordBatch]:
    """The file's rows in order, a block at a time, read with ``schema``'s types (None: those
    pyarrow infers from the first block)."""
    types = None if schema is None else dict(zip(schema.names, schema.types, strict=True))
    convert = pacsv.ConvertOptions(column_types=types)
    read = pacsv.ReadOptions(encoding=encoding)
    with opened(path) as source:
        yield from pacsv.open_csv(source, read_options=read, convert_options=convert)


def csv_schema(path: Path, encoding: str = UTF8) -> tuple[pa.Schema, int]:
    """The columns of the CSV file at ``path`` with types that hold every value in it, and its
    number of rows. Raises what pyarrow raises for a file it cannot read (ValueError for one
    whose header it cannot take, or that is not text in ``encoding``)."""
    schema = _block_types(path, 0, encoding)
    for field in schema:
        # pyarrow takes a column whose first block is not valid text for bytes: it would land
        # as BLOB, silently, where a later block that is not text fails.
        if pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type):
            raise ValueError(_not_text(field.name, encoding))
    twice = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if twice:
        raise ValueError(f"the header names a column more than once: {twice}")
    # Each misfit widens at least its own column, and a column widens a few times at most.
    for _ in range(4 * len(schema) + 1):
        rows = 0
        try:
            for batch in csv_batches(path, schema, encoding):
                rows += batch.num_rows
            return schema, rows
        except pa.ArrowInvalid as exc:
            misfit = _MISFIT.search(str(exc))
            if misfit is None:
                raise
            wider = _holding_block(path, schema, rows, encoding)
            column = int(misfit[1])
            field = wider.field(column)
            value = _VALUE.match(misfit[2])
            kind = _holding(field.type, value[1]) if value else pa.string()
            if kind.equals(schema.field(column).type):  # e.g. seconds past nanoseconds' range
                kind = pa.string()
            wider = wider.set(column, field.with_type(kind))
            if wider.equals(schema):  # text already: the value is not text (not UTF-8)
                if "invalid UTF8" in misfit[2]:
                    raise ValueError(_not_text(schema.field(column).name, encoding)) from None
                raise
            schema = wider
    raise AssertionError("a CSV column kept widening")  # pragma: no cover - bounded above


def _not_text(column: str, encoding: str) -> str:
    return (
        f"column {column!r} holds bytes that are not {'UTF-8' if encoding == UTF8 else encoding} "
        "text: give the file's encoding with --encoding (e.g. latin-1, cp1252), or convert "
        "the file to UTF-8"
    )


def _block_types(path: Path, skipped: int, encoding: str) -> pa.Schema:
    """The columns' types as pyarrow infers them from one block alone (the one after the first
    ``skipped`` lines below the header)."""
    read = pacsv.ReadOptions(skip_rows_after_names=skipped, encoding=encoding)
    with opened(path) as source:
        schema: pa.Schema = pacsv.open_csv(source, read_options=read).schema
    try:
        schema.names  # noqa: B018 - a header that is not UTF-8 fails here
    except UnicodeDecodeError as exc:
        raise ValueError(f"the header is not UTF-8 text ({exc})") from None
    return schema


def _holding_block(path: Path, schema: pa.Schema, rows: int, encoding: str) -> pa.Schema:
    """``schema`` with each column's type widened to hold those pyarrow infers from the block
    after ``rows`` rows alone (read up to the one that did not fit), text where no other does.
    Only a guess at what else does not fit (a quoted value over several lines shifts the
    count), so a block that cannot be read changes nothing."""
    try:
        block = _block_types(path, rows, encoding)
    except (pa.ArrowInvalid, ValueError):
        return schema
    if block.names != schema.names:
        return schema
    for index, field in enumerate(schema):
        kind = common_type(field.type, block.field(index).type) or pa.string()
        schema = schema.set(index, field.with_type(kind))
    return schema


def _holding(kind: pa.DataType, value: str) -> pa.DataType:
    """A type that holds the values of ``kind`` and ``value`` (as pyarrow reads it alone), text
    where no other does."""
    quoted = '"' + value.replace('"', '""') + '"'
    try:
        alone = pacsv.read_csv(io.BytesIO(f"value\n{quoted}\n".encode())).schema.field(0).type
    except pa.ArrowException:
        return pa.string()
    return common_type(kind, alone) or pa.string()
