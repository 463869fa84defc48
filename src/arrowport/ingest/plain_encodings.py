"""Encodings DuckDB 1.5.5 misreads, decoded before it scans them.

DuckDB reads a dictionary or run-end encoding of flat values (strings, numbers, dates...) as
those values, at the top of a column or inside a list, struct or map. Others it does not:

* a dictionary of nested values (structs, lists, fixed-size lists) fails with an INTERNAL error
  that invalidates the whole database until a restart;
* a run-end encoding of a dictionary, or of nested values, is read as the dictionary's indices
  (``['a', 'a', 'b']`` stored as ``[0, 0, 1]``) or fails the same way;
* any encoding inside a fixed-size list is read as its indices, or kills the process (SIGSEGV).

So those arrays are replaced by their values (``dictionary.take(indices)``, ``run_end_decode``)
before DuckDB sees them; the column's type is its values' type, as for every dictionary.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from arrowport.storage.schema import child_types

_ENCODED = (pa.DictionaryType, pa.RunEndEncodedType)
_LIST_TYPES = (pa.ListType, pa.LargeListType, pa.ListViewType, pa.LargeListViewType)


def _flat(dtype: pa.DataType) -> bool:
    """Values DuckDB reads through an encoding: no children, no encoding of their own."""
    return not child_types(dtype)


def plain_type(dtype: pa.DataType, in_fixed_list: bool = False) -> pa.DataType:
    """``dtype`` with each encoding DuckDB misreads replaced by its values' type."""
    if isinstance(dtype, _ENCODED):
        values = dtype.value_type
        if in_fixed_list or not _flat(values):
            return plain_type(values, in_fixed_list)
        return dtype
    if isinstance(dtype, pa.FixedSizeListType):
        item = dtype.value_field
        return pa.list_(item.with_type(plain_type(item.type, True)), dtype.list_size)
    if isinstance(dtype, _LIST_TYPES):
        item = dtype.value_field.with_type(plain_type(dtype.value_type, in_fixed_list))
        return _list_like(dtype, item)
    if isinstance(dtype, pa.MapType):
        key = dtype.key_field.with_type(plain_type(dtype.key_type, in_fixed_list))
        item = dtype.item_field.with_type(plain_type(dtype.item_type, in_fixed_list))
        return pa.map_(key, item, dtype.keys_sorted)
    if isinstance(dtype, pa.StructType):
        return pa.struct([f.with_type(plain_type(f.type, in_fixed_list)) for f in dtype])
    return dtype  # extension types keep their storage as sent


def _list_like(dtype: pa.DataType, item: pa.Field) -> pa.DataType:
    if isinstance(dtype, pa.LargeListType):
        return pa.large_list(item)
    if isinstance(dtype, pa.ListViewType):
        return pa.list_view(item)
    if isinstance(dtype, pa.LargeListViewType):
        return pa.large_list_view(item)
    return pa.list_(item)


def plain_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` as DuckDB is handed it: see :func:`plain_type`."""
    return pa.schema(
        [field.with_type(plain_type(field.type)) for field in schema], metadata=schema.metadata
    )


def plain_array(array: pa.Array, target: pa.DataType) -> pa.Array:
    """``array`` decoded to ``target`` (its :func:`plain_type`)."""
    if array.type == target:
        return array
    if isinstance(array, pa.DictionaryArray):
        return plain_array(array.dictionary.take(array.indices), target)
    if isinstance(array, pa.RunEndEncodedArray):
        # run_end_decode has no kernel for dictionaries or nested values: decode each row's
        # position among the values instead, and take them.
        values = array.values
        positions = pa.RunEndEncodedArray.from_arrays(
            array.run_ends, pa.array(range(len(values)), pa.int64())
        )
        taken = pc.run_end_decode(positions).slice(array.offset, len(array))
        return plain_array(values.take(taken), target)
    mask = array.is_null() if array.null_count else None
    if isinstance(array, pa.FixedSizeListArray):
        size = array.type.list_size
        values = array.values.slice(array.offset * size, len(array) * size)
        items = plain_array(values, target.value_type)
        return pa.FixedSizeListArray.from_arrays(items, type=target, mask=mask)
    if isinstance(array, pa.ListViewArray | pa.LargeListViewArray):
        items = plain_array(array.values, target.value_type)
        return type(array).from_arrays(array.offsets, array.sizes, items, target, mask=mask)
    if isinstance(array, pa.MapArray):
        # All the entries: the offsets of a slice point into them.
        keys, items = array.values.flatten()
        keys = plain_array(keys, target.key_type)
        items = plain_array(items, target.item_type)
        return pa.MapArray.from_arrays(array.offsets, keys, items, target, mask=mask)
    if isinstance(array, pa.ListArray | pa.LargeListArray):
        items = plain_array(array.values, target.value_type)
        return type(array).from_arrays(array.offsets, items, target, mask=mask)
    if isinstance(array, pa.StructArray):
        children = [
            plain_array(child, field.type)
            for child, field in zip(array.flatten(), target, strict=True)
        ]
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    raise AssertionError(f"no plain form of {array.type} as {target}")


def plain_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with its columns decoded to ``schema`` (its :func:`plain_schema`)."""
    columns = [
        plain_array(column, field.type) for column, field in zip(batch.columns, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
