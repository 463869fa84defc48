"""Empty dictionaries given a values buffer before DuckDB scans them.

Arrow's IPC reader gives an empty dictionary of fixed-width values (int64, float64, dates,
timestamps...) no values buffer at all, a null pointer, and DuckDB 1.5.5 reads that buffer while
it scans the column even though every row is null (which is all an empty dictionary allows): the
process dies of SIGSEGV. An all-null categorical column, as pandas and polars write one, is
enough. Such arrays are rebuilt here with an allocated, empty dictionary, their type and values
unchanged.
"""

from __future__ import annotations

import pyarrow as pa

from arrowport.errors import InvalidIPC
from arrowport.storage.schema import has_dictionary


def with_allocated_dictionaries(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch``, its columns holding an empty dictionary (at any depth) rebuilt."""
    columns = list(batch.columns)
    changed = False
    for index, column in enumerate(columns):
        if has_dictionary(column.type) and _empty_dictionary(column):
            columns[index] = _rebuilt(column)
            changed = True
    if not changed:
        return batch
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)


def _empty_dictionary(array: pa.Array) -> bool:
    if isinstance(array, pa.DictionaryArray):
        return len(array.dictionary) == 0 or _empty_dictionary(array.dictionary)
    if isinstance(array, pa.ExtensionArray):
        return _empty_dictionary(array.storage)
    if isinstance(array, pa.RunEndEncodedArray):
        return _empty_dictionary(array.values)
    if isinstance(array, pa.StructArray):
        return any(_empty_dictionary(array.field(i)) for i in range(array.type.num_fields))
    values = getattr(array, "values", None)  # lists, list views, maps
    return isinstance(values, pa.Array) and _empty_dictionary(values)


def _rebuilt(array: pa.Array) -> pa.Array:
    """``array`` with each empty dictionary in it allocated; nothing else is copied."""
    if not _empty_dictionary(array):
        return array
    nulls = array.is_null() if array.null_count else None
    if isinstance(array, pa.DictionaryArray):
        dictionary = array.dictionary
        empty = pa.array([], dictionary.type)
        return pa.DictionaryArray.from_arrays(
            array.indices, empty if len(dictionary) == 0 else _rebuilt(dictionary)
        )
    if isinstance(array, pa.StructArray):
        children = [_rebuilt(array.field(i)) for i in range(array.type.num_fields)]
        return pa.StructArray.from_arrays(children, fields=list(array.type), mask=nulls)
    if isinstance(array, pa.MapArray):
        return pa.MapArray.from_arrays(
            array.offsets, _rebuilt(array.keys), _rebuilt(array.items), array.type, mask=nulls
        )
    if isinstance(array, pa.ListArray | pa.LargeListArray):
        values = _rebuilt(array.values)
        return type(array).from_arrays(array.offsets, values, array.type, mask=nulls)
    if isinstance(array, pa.FixedSizeListArray):
        size = array.type.list_size
        values = _rebuilt(array.values.slice(array.offset * size, len(array) * size))
        return pa.FixedSizeListArray.from_arrays(values, type=array.type, mask=nulls)
    # Anything else nesting one (list views, run-end encoding, extension types): rare enough
    # to be rebuilt from its values.
    try:
        return pa.array(array.to_pylist(), array.type)
    except (pa.ArrowException, ValueError, OverflowError) as exc:
        raise InvalidIPC(
            f"a column of type {array.type} holds an empty dictionary that cannot be read: {exc}"
        ) from None
