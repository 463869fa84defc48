"""Arrow values as JSON-ready Python values, for the JSON and CSV renderings of an answer.

``to_pylist`` does for most types; the rest are taken apart here, as it fails or misleads for
them: dates, times and timestamps that Python cannot hold (anywhere in nested values), struct
fields that share a name, unions, DuckDB's BIGNUM.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from typing import Any

import pyarrow as pa

from arrowport.api.calendar_text import calendar_values, is_calendar
from arrowport.storage.schema import struct_fields


def unique_names(names: list[str]) -> list[str]:
    """``names`` with each repeat given the first free suffix (``a``, ``a_2``): the keys of a
    row's object, which would otherwise keep only the last of the values sharing a name."""
    taken = set(names)
    seen: set[str] = set()
    # The next suffix to try for each name: each repeat starts where the last one stopped
    # (trying from 2 each time took 17 s for 10,000 repeats of one name).
    suffix: dict[str, int] = {}
    unique = []
    for name in names:
        if name in seen:
            number = suffix.get(name, 2)
            while f"{name}_{number}" in taken:
                number += 1
            suffix[name] = number + 1
            name = f"{name}_{number}"
            taken.add(name)
        seen.add(name)
        unique.append(name)
    return unique


def json_values(array: pa.Array) -> list[Any]:
    """An array as JSON-ready Python values. ``to_pylist`` does for most types; the rest are
    taken apart here, as it fails or misleads for them: dates, times and timestamps that Python
    cannot hold (anywhere in nested values), struct fields that share a name, DuckDB's BIGNUM."""
    dtype = array.type
    if not _delicate(dtype):
        values: list[Any] = array.to_pylist()
        return values
    if is_calendar(dtype):
        return calendar_values(array)
    if pa.types.is_float32(dtype):
        return _float32_values(array)
    if isinstance(array, pa.ExtensionArray):
        if _is_bignum(dtype):
            return [None if v is None else str(_bignum(v)) for v in array.storage.to_pylist()]
        return json_values(array.storage)
    if isinstance(array, pa.DictionaryArray):
        return json_values(array.dictionary_decode())
    if isinstance(array, pa.StructArray):
        names = unique_names([field.name for field in dtype])
        children = [json_values(child) for child in struct_fields(array)]
        rows = list(zip(*children, strict=True)) if children else [()] * len(array)
        valid = array.is_valid().to_pylist()
        pairs = zip(valid, rows, strict=True)
        return [dict(zip(names, row, strict=True)) if ok else None for ok, row in pairs]
    if isinstance(array, pa.MapArray):
        entries = pa.struct([dtype.key_field, dtype.item_field])
        as_list = array.view(pa.list_(pa.field("entries", entries, nullable=False)))
        keys, items = struct_fields(as_list.flatten())
        return _split(list(zip(json_values(keys), json_values(items), strict=True)), as_list)
    if isinstance(array, pa.ListArray | pa.LargeListArray | pa.FixedSizeListArray):
        return _split(json_values(array.flatten()), array)
    if isinstance(array, pa.UnionArray):
        return _union_values(array)
    values = array.to_pylist()
    return values


def _split(flat: list[Any], lists: pa.Array) -> list[Any]:
    """The values of ``lists``, flattened (nulls' values left out), cut back into its lists."""
    values: list[Any] = []
    position = 0
    for length in lists.value_lengths().to_pylist():
        if length is None:
            values.append(None)
        else:
            values.append(flat[position : position + length])
            position += length
    return values


def _union_values(array: pa.UnionArray) -> list[Any]:
    """Each row's value from the child its type code names. The codes (and a dense union's
    offsets) are read from the buffers at the array's offset: ``type_codes`` ignores a slice's."""
    dtype = array.type
    buffers = array.buffers()
    codes = pa.Array.from_buffers(pa.int8(), len(array), [None, buffers[1]], offset=array.offset)
    child_of = {code: index for index, code in enumerate(dtype.type_codes)}
    children = [json_values(array.field(index)) for index in range(dtype.num_fields)]
    if dtype.mode == "sparse":  # children are as long as the union, sliced with it
        return [children[child_of[code]][row] for row, code in enumerate(codes.to_pylist())]
    offsets = pa.Array.from_buffers(pa.int32(), len(array), [None, buffers[2]], offset=array.offset)
    pairs = zip(codes.to_pylist(), offsets.to_pylist(), strict=True)
    return [children[child_of[code]][offset] for code, offset in pairs]


def _float32_values(array: pa.Array) -> list[float | None]:
    """FLOAT values as the shortest decimals that read back as them: ``to_pylist`` widens them
    to Python's double, 0.1 to 0.10000000149011612 (which CSV, like DuckDB, writes as 0.1).
    Arrow's text for a float32 is that shortest decimal."""
    return [None if text is None else float(text) for text in array.cast(pa.string()).to_pylist()]


def _delicate(dtype: pa.DataType) -> bool:
    """Whether ``to_pylist`` may fail or mislead on this type (see :func:`_values`)."""
    if is_calendar(dtype) or pa.types.is_float32(dtype):
        return True
    if isinstance(dtype, pa.BaseExtensionType):
        return _is_bignum(dtype) or _delicate(dtype.storage_type)
    if isinstance(dtype, pa.DictionaryType):
        return _delicate(dtype.value_type)
    if pa.types.is_struct(dtype):
        names = [field.name for field in dtype]
        return len(set(names)) < len(names) or any(_delicate(field.type) for field in dtype)
    if pa.types.is_map(dtype):
        return _delicate(dtype.key_type) or _delicate(dtype.item_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return _delicate(dtype.value_type)
    if pa.types.is_fixed_size_list(dtype):
        return _delicate(dtype.value_type)
    if pa.types.is_union(dtype):
        return any(_delicate(field.type) for field in dtype)
    return False


def _is_bignum(dtype: pa.DataType) -> bool:
    return isinstance(dtype, pa.OpaqueType) and dtype.type_name == "bignum"


def _bignum(data: bytes) -> int:
    """DuckDB's BIGNUM bytes: a 3-byte header whose top bit is set for a number >= 0, then the
    magnitude big-endian; a negative number has every byte inverted."""
    if data[0] & 0x80:
        return int.from_bytes(data[3:], "big")
    return -int.from_bytes(bytes(byte ^ 0xFF for byte in data[3:]), "big")


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null (anywhere in nested values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def decimal_text(value: decimal.Decimal) -> str:
    """A decimal as plain digits at its scale: ``str`` writes small ones in exponent form
    (``0E-10``, ``1.000E-7``), which is not the number's text in DuckDB or a spreadsheet."""
    return format(value, "f")


def json_value(value: Any) -> Any:
    """What ``json.dumps`` writes for a value it cannot write as it is."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return decimal_text(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)
