"""Dates, times and timestamps as text, for any value DuckDB holds.

Python's calendar stops at years 1 and 9999 and its times at microseconds, and Arrow writes
values outside its own range wrongly or not at all; DuckDB holds ``infinity`` and ``-infinity``,
years far past 9999 and ``24:00:00``. These are written here, from the integers under them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_DAY_SECONDS = 86_400
# Python's calendar: 0001-01-01 to 9999-12-31, as days since 1970-01-01.
_FIRST_DAY = -719_162
_LAST_DAY = 2_932_896
# DuckDB's infinity and -infinity: the largest value of the storage and its negation.
_DATE_INFINITY = 2**31 - 1
_TIMESTAMP_INFINITY = 2**63 - 1


def is_calendar(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_date(dtype) or pa.types.is_time(dtype) or pa.types.is_timestamp(dtype))


def calendar_storage(array: pa.Array) -> pa.Array:
    """The integers under a date, time or timestamp array."""
    return array.view(pa.int32() if array.type.bit_width == 32 else pa.int64())


def outside_calendar(array: pa.Array) -> pa.Array | None:
    """Where ``array`` holds values that Python's and Arrow's calendars do not (or not
    truthfully), or None if nowhere: DuckDB's infinities, years before 1 or after 9999,
    ``24:00:00``."""
    dtype = array.type
    if pa.types.is_date32(dtype):
        low, high = _FIRST_DAY, _LAST_DAY
    elif pa.types.is_date64(dtype):
        low, high = _FIRST_DAY * _DAY_SECONDS * 1_000, (_LAST_DAY + 1) * _DAY_SECONDS * 1_000 - 1
    elif pa.types.is_time(dtype):
        low, high = 0, _DAY_SECONDS * _PER_SECOND[dtype.unit] - 1
    else:
        per_second = _PER_SECOND[dtype.unit]
        # Nanoseconds since 1970 reach only 1677 to 2262: there just the infinities are out.
        low = max(_FIRST_DAY * _DAY_SECONDS * per_second, 1 - _TIMESTAMP_INFINITY)
        high = min((_LAST_DAY + 1) * _DAY_SECONDS * per_second - 1, _TIMESTAMP_INFINITY - 1)
    storage = calendar_storage(array)
    outside = pc.fill_null(pc.or_(pc.less(storage, low), pc.greater(storage, high)), False)
    return outside if pc.any(outside).as_py() else None


def calendar_values(array: pa.Array) -> list[Any]:
    """Python's dates, times and datetimes, and ISO text for the values they cannot hold."""
    dtype = array.type
    if not pa.types.is_date(dtype) and dtype.unit == "ns":
        # Python holds microseconds only (and pandas, whose Timestamp holds nanoseconds, is
        # not a dependency): every value is written here, the same way.
        raw = calendar_storage(array).to_pylist()
        return [None if value is None else calendar_text(value, dtype, iso=True) for value in raw]
    outside = outside_calendar(array)
    if outside is None:
        values: list[Any] = array.to_pylist()
        return values
    values = pc.if_else(outside, None, array).to_pylist()
    raw = calendar_storage(array).to_pylist()
    for index in pc.indices_nonzero(outside).to_pylist():
        values[index] = calendar_text(raw[index], dtype, iso=True)
    return values


def calendar_text(value: int, dtype: pa.DataType, iso: bool) -> str:
    """A date, time or timestamp's storage ``value`` as text: ``infinity`` and ``-infinity`` by
    name, anything else (any year) as ISO (``iso``, the way Python writes its values) or the way
    Arrow writes CSV."""
    infinity = _DATE_INFINITY if pa.types.is_date32(dtype) else _TIMESTAMP_INFINITY
    if abs(value) == infinity and not pa.types.is_time(dtype):
        return "infinity" if value > 0 else "-infinity"
    if pa.types.is_date32(dtype):
        return _date_text(value)
    if pa.types.is_date64(dtype):
        return _date_text(value // (_DAY_SECONDS * 1_000))
    per_second = _PER_SECOND[dtype.unit]
    if pa.types.is_time(dtype):
        return _time_text(value, per_second, iso)
    days, rest = divmod(value, _DAY_SECONDS * per_second)
    text = _date_text(days) + ("T" if iso else " ") + _time_text(rest, per_second, iso)
    if dtype.tz is None:
        return text
    # Arrow's timestamps with a time zone hold UTC instants; the server's zone is UTC.
    return text + ("+00:00" if iso else "Z")


def _date_text(days: int) -> str:
    """Days since 1970-01-01 as a proleptic Gregorian date of any year (year 0 is 1 BC)."""
    # Howard Hinnant's civil_from_days: 400-year eras starting on March 1st.
    shifted = days + 719_468
    era = shifted // 146_097
    day_of_era = shifted - era * 146_097
    year_of_era = (
        day_of_era - day_of_era // 1_460 + day_of_era // 36_524 - day_of_era // 146_096
    ) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    year = year_of_era + era * 400 + (month <= 2)
    sign = "-" if year < 0 else ""
    return f"{sign}{abs(year):04d}-{month:02d}-{day:02d}"


def _time_text(value: int, per_second: int, iso: bool) -> str:
    """A time of day (``24:00:00`` included) in ``1/per_second`` units: ISO with microseconds
    or nanoseconds when there are any, as Python writes it, or Arrow's fixed digits."""
    seconds, fraction = divmod(value, per_second)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    text = f"{hour:02d}:{minute:02d}:{second:02d}"
    digits = len(str(per_second)) - 1
    if not iso:
        return f"{text}.{fraction:0{digits}d}" if digits else text
    nanoseconds = fraction * (1_000_000_000 // per_second)
    if nanoseconds % 1_000:
        return f"{text}.{nanoseconds:09d}"
    return f"{text}.{nanoseconds // 1_000:06d}" if nanoseconds else text
