"""How a read's result comes out of DuckDB: how many rows each Arrow batch holds, and how far
DuckDB computes ahead of the reader.

DuckDB builds a whole batch in memory of its own, outside ``duckdb.memory_limit``, before the
server sees it, so a batch's rows are chosen by what a row may weigh: about :data:`BATCH_BYTES`
a batch when every column has a fixed width (whole vectors of :data:`MIN_BATCH_ROWS`, at most a
row group, :data:`MAX_BATCH_ROWS`; fewer rows where a row is wider than 4 KB, an ARRAY of
thousands), and :data:`VARIABLE_BATCH_ROWS` when any column does not (text, blobs, lists, maps,
structs holding them): a row of those weighs what the query makes it. A
5,000-character literal over 122,880 rows took 1.3 GB as one batch; in batches of 8,192 rows it
takes 40 MB a batch. (Fewer rows a batch cost reads: 2,048-row batches made a 10M-row scan
~20 % slower; 8,192-row ones ran as fast as row groups.)

DuckDB also computes a streaming result ahead of its reader, up to ``streaming_buffer_size``
(976.5 KiB by default) as it counts them, and it counts text short: the same literal query held
~300 MB before its first batch was read, ``repeat(r::varchar, 5000)`` over 12,288 rows all of
its 270 MB. :func:`streaming` sets :data:`STREAMING_BUFFER` on a read's connection (the literal:
~80 MB; reads of a 10M-row table ran as fast as with the default, 64 KiB ~10 % slower). A query
that computes large text per row still gets ahead by more than that: see the README.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import duckdb

MIN_BATCH_ROWS = 2_048  # one DuckDB vector
VARIABLE_BATCH_ROWS = 8_192
MAX_BATCH_ROWS = 122_880  # one row group
BATCH_BYTES = 8 * 1024**2
STREAMING_BUFFER = "256KiB"

# What a value of each fixed-width DuckDB type takes in an Arrow batch (by DuckDB's type id).
_FIXED_BYTES = {
    "boolean": 1,
    "tinyint": 1,
    "utinyint": 1,
    "smallint": 2,
    "usmallint": 2,
    "integer": 4,
    "uinteger": 4,
    "float": 4,
    "date": 4,
    "bigint": 8,
    "ubigint": 8,
    "double": 8,
    "time": 8,
    "time_ns": 8,
    "time with time zone": 8,
    "timestamp": 8,
    "timestamp_s": 8,
    "timestamp_ms": 8,
    "timestamp_ns": 8,
    "timestamp with time zone": 8,
    "hugeint": 16,
    "uhugeint": 16,
    "decimal": 16,
    "interval": 16,
    "uuid": 40,  # as text: 36 characters and an offset
    "enum": 4,  # an index (its dictionary comes once a batch, whatever its rows)
}


def batch_rows(description: Sequence[Sequence[Any]] | None, widest_input: int = 0) -> int:
    """Rows per batch for a result whose columns a cursor's ``description`` gives, of a query
    holding text of up to ``widest_input`` bytes (literal or bound), which any of its rows may
    hold: a 1 MB literal selected over 8,192 rows is an 8 GB batch, over 8 rows 8 MB."""
    widths = [_width(column[1]) for column in description or ()]
    if not widths or any(width is None for width in widths):
        return max(1, min(VARIABLE_BATCH_ROWS, BATCH_BYTES // max(1, widest_input)))
    row_bytes = sum(width for width in widths if width is not None) + 1  # and validity
    rows = BATCH_BYTES // row_bytes
    if rows < MIN_BATCH_ROWS:  # wide rows (an ARRAY of thousands): fewer than a vector
        return max(1, rows)
    return min(MAX_BATCH_ROWS, rows // MIN_BATCH_ROWS * MIN_BATCH_ROWS)


def _width(dtype: Any) -> int | None:
    """The bytes a value of a DuckDB type takes in an Arrow batch; None where values vary (an
    ARRAY of a fixed-width type is as wide as its size makes it)."""
    kind = str(getattr(dtype, "id", ""))
    if kind != "array":
        return _FIXED_BYTES.get(kind)
    parts = dict(getattr(dtype, "children", ()))
    child = _width(parts.get("child"))
    size = parts.get("size")
    return None if child is None or not isinstance(size, int) else child * size + 1


def streaming(cursor: duckdb.DuckDBPyConnection) -> None:
    """Set up ``cursor`` for reads: DuckDB computes at most :data:`STREAMING_BUFFER` ahead."""
    cursor.execute(f"SET streaming_buffer_size = '{STREAMING_BUFFER}'")
