"""The types a CSV file's columns are read with, inferred over the whole file.

pyarrow infers a CSV file's types from its first block (about a megabyte) and fails later in the
file on a value that type cannot hold: text in a column of numbers, a fraction among integers,
the first value of a column empty until then. Found while sending, that failure would leave the
requests sent before it landed and the rest not. So the file is read through once before
anything of it is sent: each value that does not fit widens its column's type to one that holds
both (an integer column with a fraction becomes a float one; with text, a text one) and the
reading starts again, until the whole file reads. A file that cannot be read at all (a row with
more fields than the header) fails here too, before anything of it is sent.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

from arrowport.cli._text import common_type

# pyarrow's words for a value its column's type cannot hold (the column is 0-based).
_NOT_CONVERTED = re.compile(
    r"In CSV column #(\d+): Row #\d+: CSV conversion error to [^:]+: invalid value '(.*)'$",
    re.DOTALL,
)


def csv_schema(path: Path) -> tuple[pa.Schema, int]:
    """The columns of the CSV file at ``path`` with types that hold every value in it, and its
    number of rows. Raises what pyarrow raises for a file it cannot read."""
    fragment = next(iter(ds.dataset(str(path), format="csv").get_fragments()))
    schema: pa.Schema = fragment.physical_schema
    # Each pass either reads the whole file or widens one column, at most to text.
    for _ in range(4 * len(schema) + 1):
        try:
            batches = fragment.to_batches(schema=schema, batch_readahead=1, fragment_readahead=1)
            return schema, sum(batch.num_rows for batch in batches)
        except pa.ArrowInvalid as exc:
            misfit = _NOT_CONVERTED.search(str(exc))
            if misfit is None:
                raise
            column = int(misfit[1])
            field = schema.field(column)
            wider = _holding(field.type, misfit[2])
            if wider.equals(field.type):
                raise
            schema = schema.set(column, field.with_type(wider))
    raise AssertionError("a CSV column kept widening")  # pragma: no cover - bounded above


def _holding(kind: pa.DataType, value: str) -> pa.DataType:
    """A type that holds the values of ``kind`` and ``value`` (as pyarrow reads it alone), text
    where no other does."""
    quoted = '"' + value.replace('"', '""') + '"'
    try:
        alone = pacsv.read_csv(io.BytesIO(f"value\n{quoted}\n".encode())).schema.field(0).type
    except pa.ArrowException:
        return pa.string()
    return common_type(kind, alone) or pa.string()
