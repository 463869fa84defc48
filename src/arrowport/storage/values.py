"""Values DuckDB would change silently, refused batch by batch (422 ``invalid_value``).

DuckDB keeps microseconds in ``TIMESTAMP WITH TIME ZONE`` and ``INTERVAL``, so a nanosecond
timestamp with a time zone, a nanosecond duration or an interval with a sub-microsecond part is
refused rather than truncated, and so is a duration too long to read back as Arrow's
``month_day_nano_interval`` (about 292 years) or a timestamp with a time zone outside DuckDB's
range. So is a ``date64`` whose day does not fit in 32 bits: DuckDB keeps a DATE's days in 32
bits and would wrap it into another date, and an ``arrow.json`` value that is not JSON, which
DuckDB would take unparsed (:mod:`arrowport.storage.json_values`). Only columns of those types
(or nesting them) are looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from arrowport.errors import InvalidValue
from arrowport.storage.json_values import check_json, holds_json
from arrowport.storage.schema import child_arrays, child_types, is_list_type

# Raises InvalidValue for a batch (starting at a request's row ``first_row``) it refuses.
BatchCheck = Callable[[pa.RecordBatch, int], None]
_INT64_MAX = 2**63 - 1
_NANOS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_MICROS_PER = {"s": 1_000_000, "ms": 1_000}
# DuckDB's DATE: days since 1970 in 32 bits (a date32 is read as it is).
_DATE64_MS = (-(2**31) * 86_400_000, (2**31 - 1) * 86_400_000)


def _checked(dtype: pa.DataType) -> bool:
    """True when values of ``dtype`` (or nested in it) need :func:`check_values`."""
    if pa.types.is_timestamp(dtype):
        return dtype.tz is not None
    if pa.types.is_duration(dtype) or pa.types.is_interval(dtype) or pa.types.is_date64(dtype):
        return True
    return any(_checked(child) for child in child_types(dtype))


def _dictionary_in_list(dtype: pa.DataType, in_list: bool = False) -> bool:
    """True when a dictionary sits inside a list or map of ``dtype`` (at any depth)."""
    if isinstance(dtype, pa.DictionaryType):
        return in_list
    inside = in_list or pa.types.is_map(dtype) or is_list_type(dtype)
    return any(_dictionary_in_list(child, inside) for child in child_types(dtype))


def needs_value_check(schema: pa.Schema) -> bool:
    """True when some column's values must pass :func:`check_values` before DuckDB scans them."""
    return any(
        _checked(field.type) or holds_json(field.type) or _dictionary_in_list(field.type)
        for field in schema
    )


def _null_index_in_list(array: pa.Array, in_list: bool = False) -> bool:
    """Whether a dictionary inside a list or map of ``array`` has a null index: DuckDB 1.5.5
    corrupts its heap reading one (malloc(): corrupted top size, then the process dies)."""
    if isinstance(array, pa.DictionaryArray):
        # An empty dictionary (an all-null categorical, given one by empty_dictionaries) reads
        # well: every index is null there.
        return in_list and array.indices.null_count > 0 and len(array.dictionary) > 0
    inside = in_list or pa.types.is_map(array.type) or is_list_type(array.type)
    return any(_null_index_in_list(child, inside) for child in child_arrays(array))


def _sub_micro(ints: pa.Array) -> bool:
    whole = pc.multiply(pc.divide(ints, 1000), 1000)
    return bool(pc.any(pc.not_equal(ints, whole)).as_py())


def _beyond(ints: pa.Array, limit: int) -> bool:
    return bool(pc.any(pc.greater(pc.abs(ints), limit)).as_py())


def _interval_nanos(array: pa.Array) -> pa.Array:
    # month_day_nano values are (int32 months, int32 days, int64 nanoseconds): read the
    # nanoseconds in place as the second int64 of each 16-byte value.
    pairs = pa.Array.from_buffers(
        pa.int64(), 2 * (array.offset + len(array)), [None, array.buffers()[1]]
    )
    as_lists = pa.Array.from_buffers(
        pa.list_(pa.int64(), 2),
        len(array),
        [array.buffers()[0]],
        offset=array.offset,
        children=[pairs],
    )
    return pc.list_element(as_lists, 1)


def _value_problem(array: pa.Array) -> str | None:
    dtype = array.type
    if not _checked(dtype) or len(array) == 0:
        return None
    if pa.types.is_timestamp(dtype):
        ints = array.cast(pa.int64())
        if dtype.unit == "ns" and _sub_micro(ints):
            return (
                "has a timestamp with nanoseconds; DuckDB's TIMESTAMP WITH TIME ZONE keeps "
                "microseconds: round it to microseconds, or send it without a time zone"
            )
        if dtype.unit in _MICROS_PER and _beyond(ints, _INT64_MAX // _MICROS_PER[dtype.unit]):
            return "has a timestamp outside DuckDB's TIMESTAMP WITH TIME ZONE range"
        return None
    if pa.types.is_date64(dtype):
        bounds = pc.min_max(array.cast(pa.int64())).as_py()
        if bounds["min"] is not None and (
            bounds["min"] < _DATE64_MS[0] or bounds["max"] > _DATE64_MS[1]
        ):
            return "has a date outside DuckDB's DATE range (about 5,877,642 BC to 5,881,580 AD)"
        return None
    if pa.types.is_duration(dtype):
        ints = array.cast(pa.int64())
        if dtype.unit == "ns" and _sub_micro(ints):
            return (
                "has a duration with nanoseconds; DuckDB's INTERVAL keeps microseconds: "
                "round it to microseconds"
            )
        if dtype.unit != "ns" and _beyond(ints, _INT64_MAX // _NANOS[dtype.unit]):
            return "has a duration longer than about 292 years, which cannot be read back"
        return None
    if pa.types.is_interval(dtype):
        if _sub_micro(_interval_nanos(array)):
            return (
                "has an interval with a sub-microsecond part; DuckDB's INTERVAL keeps "
                "microseconds: round it to microseconds"
            )
        return None
    return next(filter(None, map(_value_problem, child_arrays(array))), None)


def check_values(batch: pa.RecordBatch, first_row: int = 0) -> None:
    """422 ``invalid_value`` naming the first column whose values DuckDB would change silently
    (or take unparsed as JSON); ``first_row`` is the row of the request the batch starts at."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        problem = _value_problem(column)
        if problem is None and _dictionary_in_list(field.type) and _null_index_in_list(column):
            problem = (
                "has a null index in a dictionary inside a list or map, which crashes DuckDB "
                "1.5.5: send the values without the dictionary (a list of strings), or no nulls"
            )
        if problem is not None:
            raise InvalidValue(f"column {field.name!r} {problem}", column=field.name)
        if holds_json(field.type):
            check_json(field.name, column, first_row)


class ValueGuard:
    """Wraps Arrow data so every batch passes :func:`check_values` as DuckDB scans it.

    DuckDB reports an exception raised inside the scan as its own error, so the caller re-raises
    :attr:`error` when the scan fails::

        guard = ValueGuard(data)
        cur.register(source, guard.reader)
        try:
            cur.execute(insert_sql)
        except duckdb.Error:
            guard.raise_error()
            raise
    """

    def __init__(
        self, data: pa.RecordBatchReader | pa.Table, also: BatchCheck | None = None
    ) -> None:
        """``also``: a check of the storage's own, run on every batch after these."""
        self.error: InvalidValue | None = None
        self.reader: pa.RecordBatchReader | pa.Table = data
        self._also = also
        if not needs_value_check(data.schema) and also is None:
            return
        if isinstance(data, pa.Table):
            # In memory already: check it all now, and keep a table (it may be scanned twice).
            first_row = 0
            for batch in data.to_batches():
                self._check(batch, first_row)
                first_row += batch.num_rows
        else:
            self.reader = pa.RecordBatchReader.from_batches(data.schema, self._checked(data))

    def _check(self, batch: pa.RecordBatch, first_row: int) -> None:
        check_values(batch, first_row)
        if self._also is not None:
            self._also(batch, first_row)

    def _checked(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        first_row = 0
        for batch in batches:
            try:
                self._check(batch, first_row)
            except InvalidValue as exc:
                self.error = exc
                raise
            first_row += batch.num_rows
            yield batch

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error
