"""Columns of a query's answer that DuckDB exports to Arrow wrongly, mended as they come out.

DuckDB 1.5.5 exports a ``UHUGEINT`` column as ``decimal128(38, 0)`` holding the value's 128 bits
as they are, so values from 2^127 up read back negative (2^128 - 1 as -1) in every format. Such
a column is answered as ``decimal256(39, 0)``, which holds every ``UHUGEINT``: a value stored
negative is the unsigned one minus 2^128. A ``BIT`` column is exported as DuckDB's own bytes (a
count of padding bits, then the bits padded with ones: ``'0101'`` as ``04 f5``), which mean
nothing to a client; it is answered as text, ``'0101'``, as DuckDB writes it. Only a column
that is itself of such a type is mended: one nested in a list or struct is exported as DuckDB
writes it.

Example::

    mends = column_mends(cursor.description)
    schema = mended_schema(reader.schema, mends)
    batches = (mended_batch(batch, mends) for batch in reader)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

UNSIGNED_128 = pa.decimal256(39, 0)
# Wide enough for a stored value plus 2^128 (pc.add widens its result by a digit).
_WORKING = pa.decimal256(40, 0)
_WRAP = pa.scalar(Decimal(2**128), _WORKING)
_ZERO = pa.scalar(Decimal(0), _WORKING)


def _unsigned(array: pa.Array) -> pa.Array:
    # The cast keeps the stored (signed) value, which fits 39 digits.
    wide = array.cast(_WORKING)
    unsigned = pc.if_else(pc.less(wide, _ZERO), pc.add(wide, _WRAP), wide)
    return unsigned.cast(UNSIGNED_128)


def _bits(data: bytes) -> str:
    """DuckDB's bytes of a BIT value as its digits (the first byte counts the padding)."""
    return "".join(f"{byte:08b}" for byte in data[1:])[data[0] :]


def _bit_text(array: pa.Array) -> pa.Array:
    return pa.array([None if v is None else _bits(v) for v in array.to_pylist()], pa.string())


@dataclass(frozen=True)
class Mend:
    """What a column of one DuckDB type is answered as, and how its values get there."""

    type: pa.DataType
    apply: Callable[[pa.Array], pa.Array]


# By DuckDB's type id.
_MENDS = {"uhugeint": Mend(UNSIGNED_128, _unsigned), "bit": Mend(pa.string(), _bit_text)}

# The mends of an answer's columns, by position.
Mends = Mapping[int, Mend]


def column_mends(types: Iterable[Any] | None) -> Mends:
    """The mends of the columns among DuckDB's column ``types`` (a relation's ``types``, or a
    cursor's ``description``, whose rows hold the type second)."""
    found = {}
    for position, entry in enumerate(types or ()):
        dtype = entry[1] if isinstance(entry, tuple) else entry
        mend = _MENDS.get(str(getattr(dtype, "id", "")))
        if mend is not None:
            found[position] = mend
    return found


def mended_schema(schema: pa.Schema, mends: Mends) -> pa.Schema:
    for position, mend in mends.items():
        schema = schema.set(position, schema.field(position).with_type(mend.type))
    return schema


def mended_batch(batch: pa.RecordBatch, mends: Mends) -> pa.RecordBatch:
    if not mends:
        return batch
    arrays = list(batch.columns)
    for position, mend in mends.items():
        arrays[position] = mend.apply(arrays[position])
    return pa.RecordBatch.from_arrays(arrays, schema=mended_schema(batch.schema, mends))


def relation_schema(relation: duckdb.DuckDBPyRelation) -> pa.Schema:
    """The Arrow schema of ``relation``'s answer, computing none of its rows."""
    schema = relation.limit(0).to_arrow_table().schema
    return mended_schema(schema, column_mends(relation.types))
