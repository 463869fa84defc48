"""Columns of a query's answer that DuckDB exports to Arrow wrongly, mended as they come out.

DuckDB 1.5.5 exports a ``UHUGEINT`` column as ``decimal128(38, 0)`` holding the value's 128 bits
as they are, so values from 2^127 up read back negative (2^128 - 1 as -1) in every format. Such
a column is answered as ``decimal256(39, 0)``, which holds every ``UHUGEINT``: a value stored
negative is the unsigned one minus 2^128. A ``BIT`` column is exported as DuckDB's own bytes (a
count of padding bits, then the bits padded with ones: ``'0101'`` as ``04 f5``), which mean
nothing to a client; it is answered as text, ``'0101'``, as DuckDB writes it. So are such
values in lists, fixed-size arrays, structs and maps, at any depth (not in a union).

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

from arrowport.storage.schema import struct_fields

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
    """How a column whose DuckDB type is, or holds, one exported wrongly is answered: its Arrow
    type, and its values, put right."""

    retype: Callable[[pa.DataType], pa.DataType]
    apply: Callable[[pa.Array], pa.Array]


# By DuckDB's type id.
_LEAVES = {
    "uhugeint": Mend(lambda _: UNSIGNED_128, _unsigned),
    "bit": Mend(lambda _: pa.string(), _bit_text),
}


def _mend(dtype: Any) -> Mend | None:
    """The mend of a column of DuckDB type ``dtype``; None where it needs none (a union is
    left as it is)."""
    kind = str(getattr(dtype, "id", ""))
    if kind in _LEAVES:
        return _LEAVES[kind]
    if kind not in ("list", "array", "map", "struct"):
        return None  # ``children`` raises for a type that has none
    # (An array's children hold its size too.)
    children = [child for _, child in dtype.children if not isinstance(child, int)]
    if kind in ("list", "array"):
        inner = _mend(children[0])
        return None if inner is None else _list_mend(inner)
    if kind == "map":
        key, item = (_mend(child) for child in children)
        return None if key is None and item is None else _map_mend(key, item)
    if kind == "struct":
        fields = [_mend(child) for child in children]
        return _struct_mend(fields) if any(fields) else None
    return None


def _nulls(array: pa.Array) -> pa.Array | None:
    return array.is_null() if array.null_count else None


def _offsets(array: pa.Array) -> tuple[pa.Array, int, int]:
    """A list or map array's offsets, from 0, and where its values start and how many there
    are (pyarrow builds no list from a slice's offsets and its nulls)."""
    offsets = array.offsets
    if not offsets.offset:
        return offsets, 0, len(array.values)
    start, end = offsets[0].as_py(), offsets[-1].as_py()
    return pc.subtract(offsets, start), start, end - start


def _list_mend(inner: Mend) -> Mend:
    def retype(dtype: pa.DataType) -> pa.DataType:
        field = dtype.value_field.with_type(inner.retype(dtype.value_type))
        if pa.types.is_fixed_size_list(dtype):
            return pa.list_(field, dtype.list_size)
        return pa.large_list(field) if pa.types.is_large_list(dtype) else pa.list_(field)

    def apply(array: pa.Array) -> pa.Array:
        dtype = retype(array.type)
        if isinstance(array, pa.FixedSizeListArray):
            size = array.type.list_size
            values = array.values.slice(array.offset * size, len(array) * size)
            return pa.FixedSizeListArray.from_arrays(
                inner.apply(values), type=dtype, mask=_nulls(array)
            )
        kind = pa.LargeListArray if isinstance(array, pa.LargeListArray) else pa.ListArray
        offsets, start, count = _offsets(array)
        values = inner.apply(array.values.slice(start, count))
        return kind.from_arrays(offsets, values, type=dtype, mask=_nulls(array))

    return Mend(retype, apply)


def _map_mend(key: Mend | None, item: Mend | None) -> Mend:
    def retype(dtype: pa.DataType) -> pa.DataType:
        keys, items = dtype.key_field, dtype.item_field
        keys = keys if key is None else keys.with_type(key.retype(keys.type))
        items = items if item is None else items.with_type(item.retype(items.type))
        return pa.map_(keys, items, keys_sorted=dtype.keys_sorted)

    def apply(array: pa.Array) -> pa.Array:
        offsets, start, count = _offsets(array)
        keys, items = array.keys.slice(start, count), array.items.slice(start, count)
        keys = keys if key is None else key.apply(keys)
        items = items if item is None else item.apply(items)
        return pa.MapArray.from_arrays(
            offsets, keys, items, type=retype(array.type), mask=_nulls(array)
        )

    return Mend(retype, apply)


def _struct_mend(fields: list[Mend | None]) -> Mend:
    def retype(dtype: pa.DataType) -> pa.DataType:
        return pa.struct(
            [
                f if m is None else f.with_type(m.retype(f.type))
                for f, m in zip(dtype, fields, strict=True)
            ]
        )

    def apply(array: pa.Array) -> pa.Array:
        children = [
            c if m is None else m.apply(c)
            for c, m in zip(struct_fields(array), fields, strict=True)
        ]
        return pa.StructArray.from_arrays(
            children, fields=list(retype(array.type)), mask=_nulls(array)
        )

    return Mend(retype, apply)


# The mends of an answer's columns, by position.
Mends = Mapping[int, Mend]


def column_mends(types: Iterable[Any] | None) -> Mends:
    """The mends of the columns among DuckDB's column ``types`` (a relation's ``types``, or a
    cursor's ``description``, whose rows hold the type second)."""
    found = {}
    for position, entry in enumerate(types or ()):
        mend = _mend(entry[1] if isinstance(entry, tuple) else entry)
        if mend is not None:
            found[position] = mend
    return found


def mended_schema(schema: pa.Schema, mends: Mends) -> pa.Schema:
    for position, mend in mends.items():
        field = schema.field(position)
        schema = schema.set(position, field.with_type(mend.retype(field.type)))
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
