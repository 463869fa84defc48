"""Bound parameters of Flight SQL: Arrow values as Python values that DuckDB binds unchanged.

DuckDB binds Python values by what they look like, and ``as_py()`` does not always give a value
that keeps its meaning: a map becomes a list of pairs (DuckDB would bind a list of lists), a
nanosecond is dropped, a decimal of more than 38 digits becomes a double, a date past year 9999
has no Python form at all. So each Arrow type is turned into what DuckDB reads back as the same
value: a map into DuckDB's ``{"key": [...], "value": [...]}`` form, decimals, nanosecond
timestamps and times, and intervals into a literal of DuckDB's type (:class:`duckdb.Value`).
What cannot be bound exactly is refused, naming the parameter: 422 ``invalid_value`` for a value
(out of range, finer than DuckDB keeps), 422 ``unsupported_type`` for a type (a struct with a
repeated or no field name).

Example::

    python_value(pa.array([[("a", 1)]], pa.map_(pa.string(), pa.int64()))[0], "parameter 1")
    # {'key': ['a'], 'value': [1]}
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
from duckdb.sqltypes import INTERVAL, TIME_NS, TIMESTAMP_NS, DuckDBPyType

from arrowport.errors import InvalidValue, UnsupportedType
from arrowport.storage.schema import is_list_type

# DuckDB's widest decimal.
MAX_DECIMAL_DIGITS = 38
_NANOS_PER_MICRO = 1000
_MILLIS_PER_DAY = 86_400_000
# What converting to Python's datetime types raises for a value outside their range.
_OUT_OF_RANGE = (OverflowError, ValueError, pa.ArrowException)
# A fixed offset as Arrow writes one in a timestamp's time zone.
_OFFSET = re.compile(r"[+-]\d\d:\d\d")


def python_value(scalar: pa.Scalar, where: str) -> Any:
    """``scalar`` as DuckDB binds it without change (None for NULL); 422 when it cannot be.
    ``where`` names it in errors ("parameter 2")."""
    kind = scalar.type
    if isinstance(kind, pa.BaseExtensionType):
        if isinstance(kind, pa.UuidType):
            return scalar.as_py()  # uuid.UUID: DuckDB's UUID
        return python_value(scalar.value, where)
    if pa.types.is_dictionary(kind) or pa.types.is_run_end_encoded(kind):
        value = scalar.value if scalar.is_valid else None
        return None if value is None else python_value(value, where)
    if pa.types.is_union(kind):
        value = scalar.value
        return None if value is None else python_value(value, where)
    if not scalar.is_valid:
        return None
    if pa.types.is_struct(kind):
        _check_struct(kind, where)
        return {
            kind.field(i).name: python_value(scalar[i], f"{where}.{kind.field(i).name}")
            for i in range(kind.num_fields)
        }
    if pa.types.is_map(kind):
        entries = scalar.values
        keys = [python_value(key, where) for key in entries.field(0)]
        items = [python_value(item, where) for item in entries.field(1)]
        return {"key": keys, "value": items}  # DuckDB binds this form as a MAP
    if is_list_type(kind):
        return [python_value(item, where) for item in scalar.values]
    if pa.types.is_decimal(kind):
        return _decimal(scalar, kind, where)
    if pa.types.is_timestamp(kind):
        return _timestamp(scalar, kind, where)
    if pa.types.is_date(kind):
        if pa.types.is_date64(kind) and scalar.value % _MILLIS_PER_DAY:
            raise InvalidValue(f"{where} is a date64 that is not a whole day")
        return _within_python(scalar, where, "dates from year 1 to 9999")
    if pa.types.is_time64(kind) and kind.unit == "ns":
        return duckdb.Value(scalar.cast(pa.string()).as_py(), TIME_NS)
    if pa.types.is_duration(kind):
        return _duration(scalar, kind, where)
    if kind == pa.month_day_nano_interval():
        return _interval(scalar, where)
    if (
        pa.types.is_null(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_floating(kind)  # float16 too: a Python float holds it exactly
        or pa.types.is_time(kind)
        or _is_text(kind)
    ):
        try:
            return scalar.as_py()
        except UnicodeDecodeError:
            raise InvalidValue(f"{where} is not valid UTF-8 text") from None
    raise UnsupportedType(f"{where} is of type {kind}, which cannot be bound")


def _is_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    )


def _check_struct(kind: pa.StructType, where: str) -> None:
    """422 for a struct DuckDB cannot hold as it is: one without fields, one that names a field
    twice, and one DuckDB would read as a MAP (exactly the fields ``key`` and ``value``, both
    lists)."""
    names = [kind.field(i).name for i in range(kind.num_fields)]
    if not names:
        raise UnsupportedType(f"{where} is a struct without fields")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UnsupportedType(
            f"{where} is a struct that names the field {repeated[0]!r} more than once"
        )
    if sorted(names) == ["key", "value"] and all(is_list_type(field.type) for field in kind):
        raise UnsupportedType(
            f"{where} is a struct of two lists named key and value, which DuckDB would bind "
            "as a MAP: name its fields otherwise"
        )


def _decimal(scalar: pa.Scalar, kind: Any, where: str) -> duckdb.Value:
    """A decimal as a literal of DuckDB's DECIMAL: DuckDB's own reading of a Python Decimal
    turns one of over 38 digits into a double, and misreads some with an exponent."""
    value: Decimal = scalar.as_py()
    scale = max(int(kind.scale), 0)
    if scale > MAX_DECIMAL_DIGITS:
        raise InvalidValue(
            f"{where} has {scale} digits after the point; DuckDB's decimals hold at most "
            f"{MAX_DECIMAL_DIGITS} digits"
        )
    # A negative scale: whole numbers, with that many more digits.
    declared = int(kind.precision) - min(int(kind.scale), 0)
    precision = min(declared, MAX_DECIMAL_DIGITS)
    if value and value.adjusted() >= precision - scale:
        widest = f": DuckDB's decimals hold at most {MAX_DECIMAL_DIGITS} digits"
        raise InvalidValue(
            f"{where} ({value}) does not fit DECIMAL({precision},{scale})"
            + (widest if declared > precision else "")
        )
    # Its digits as they are: Arrow gives it ``scale`` places (none for a negative scale).
    return duckdb.Value(format(value, "f"), _decimal_type(precision, scale))


@functools.cache
def _decimal_type(precision: int, scale: int) -> DuckDBPyType:
    return DuckDBPyType(f"DECIMAL({max(precision, scale, 1)},{scale})")


def _timestamp(scalar: pa.Scalar, kind: Any, where: str) -> Any:
    if kind.unit == "ns":
        if kind.tz is None:
            # DuckDB's TIMESTAMP_NS, from its text (Python's datetime keeps microseconds).
            return duckdb.Value(scalar.cast(pa.string()).as_py(), TIMESTAMP_NS)
        if scalar.value % _NANOS_PER_MICRO:
            raise InvalidValue(
                f"{where} has nanoseconds, which DuckDB's TIMESTAMP WITH TIME ZONE does not "
                "keep (it keeps microseconds)"
            )
        scalar = scalar.cast(pa.timestamp("us", kind.tz))
    if kind.tz is not None and not _known_zone(kind.tz):
        raise InvalidValue(
            f"{where} has the time zone {kind.tz!r}, which is neither a time zone name (as "
            "'Europe/Paris') nor an offset (as '+05:00')"
        )
    return _within_python(scalar, where, "timestamps from year 1 to 9999")


@functools.cache
def _known_zone(name: str) -> bool:
    if _OFFSET.fullmatch(name):
        return True
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError):
        return False
    return True


def _duration(scalar: pa.Scalar, kind: Any, where: str) -> Any:
    if kind.unit == "ns":
        if scalar.value % _NANOS_PER_MICRO:
            raise InvalidValue(f"{where} has nanoseconds, which DuckDB's INTERVAL does not keep")
        scalar = scalar.cast(pa.duration("us"))
    return _within_python(scalar, where, "durations of at most 999,999,999 days")


def _interval(scalar: pa.Scalar, where: str) -> duckdb.Value:
    value = scalar.value
    if value.nanoseconds % _NANOS_PER_MICRO:
        raise InvalidValue(f"{where} has nanoseconds, which DuckDB's INTERVAL does not keep")
    micros = value.nanoseconds // _NANOS_PER_MICRO
    text = f"{value.months} months {value.days} days {micros} microseconds"
    return duckdb.Value(text, INTERVAL)


def _within_python(scalar: pa.Scalar, where: str, range_: str) -> Any:
    try:
        return scalar.as_py()
    except _OUT_OF_RANGE:
        raise InvalidValue(f"{where} is out of range: parameters bind {range_}") from None
