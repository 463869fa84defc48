"""The types a CSV file's columns are read with, inferred over the whole file.

pyarrow infers a CSV file's types from its first block (about a megabyte) and fails later in the
file on a value that type cannot hold: text in a column of numbers, a fraction among integers,
the first value of a column empty until then, a time zone among timestamps without one. Found
while sending, that failure would leave the requests sent before it landed and the rest not. So
the file is read through before anything of it is sent. Where a block does not fit, every
column's type widens to one that holds both what came before and that block's values (as pyarrow
infers their type from the block alone: an integer column with a fraction becomes a float one;
with text, a text one), and the reading goes on from that block (a wider type holds every value
the narrower one did). A file that cannot be read at all (a row with more fields than the
header, text that is not UTF-8) fails here too, before anything of it is sent.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from arrowport.cli._text import common_type

# pyarrow's words for a value its column's type cannot hold (the column is 0-based); the value
# is quoted, unless what did not fit was a time zone, missing or extra.
_MISFIT = re.compile(
    r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to [^:]+: (.*)$", re.DOTALL
)
_VALUE = re.compile(r"invalid value '(.*)'$", re.DOTALL)


def csv_schema(path: Path) -> tuple[pa.Schema, int]:
    """The columns of the CSV file at ``path`` with types that hold every value in it, and its
    number of rows. Raises what pyarrow raises for a file it cannot read."""
    schema = _block_types(path, 0)
    fitted = rows = 0  # rows read with these types (they fit); the reading goes on after them
    # Each misfit widens at least one column, and a column widens a few times at most.
    for _ in range(4 * len(schema) + 1):
        try:
            for batch in _batches(path, fitted, schema):
                rows += batch.num_rows
        except pa.ArrowInvalid as exc:
            misfit = _MISFIT.search(str(exc))
            if misfit is None:
                raise
            wider = _holding_block(schema, _block_types(path, rows))
            column = int(misfit[1])
            field = wider.field(column)
            value = _VALUE.match(misfit[2])
            kind = _holding(field.type, value[1]) if value else pa.string()
            wider = wider.set(column, field.with_type(kind))
            if wider.equals(schema):
                raise
            schema, fitted = wider, rows
            continue
        if fitted:  # rows were skipped by pyarrow's count, which counts empty lines too
            rows = int(ds.dataset(str(path), format="csv").count_rows())
        return schema, rows
    raise AssertionError("a CSV column kept widening")  # pragma: no cover - bounded above


def _batches(path: Path, skipped: int, schema: pa.Schema | None) -> Iterator[pa.RecordBatch]:
    """The file's rows after the first ``skipped`` below its header, in order, read with
    ``schema``'s types (None: those pyarrow infers from the first block read)."""
    read = pacsv.ReadOptions(skip_rows_after_names=skipped)
    convert = pacsv.ConvertOptions(
        column_types=None if schema is None else dict(zip(schema.names, schema.types, strict=True))
    )
    with pa.input_stream(str(path), compression="detect") as source:
        yield from pacsv.open_csv(source, read_options=read, convert_options=convert)


def _block_types(path: Path, skipped: int) -> pa.Schema:
    """The columns' types as pyarrow infers them from the block after the first ``skipped``
    rows alone."""
    read = pacsv.ReadOptions(skip_rows_after_names=skipped)
    with pa.input_stream(str(path), compression="detect") as source:
        schema: pa.Schema = pacsv.open_csv(source, read_options=read).schema
    return schema


def _holding_block(schema: pa.Schema, block: pa.Schema) -> pa.Schema:
    """``schema`` with each column's type widened to hold ``block``'s, text where no other
    does."""
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
