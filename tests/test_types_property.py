"""Random Arrow schemas and data land and read back with the same values and a faithful type.

Read-back types follow DuckDB's own Arrow mapping, which this module writes down as the documented
contract (``Kind.back``): decimal32/64 read back as decimal128, string_view and large_string as
string, large/view/fixed-size binary as binary, dictionary<V> as V, time32 as time64[us], date64 as
date32, timestamps with a time zone as timestamp[us] in the server's time zone (DuckDB's TIMESTAMP
WITH TIME ZONE holds instants in microseconds), durations as DuckDB INTERVAL, which reads back as
month_day_nano_interval, large lists and list views as list, fixed-size lists as DuckDB ARRAY
(fixed_size_list), and the null type as an all-NULL INTEGER column.

Values must be equal after that normalisation. Types DuckDB cannot store are refused with 422
``unsupported_type`` naming the column; values DuckDB would change silently (sub-microsecond parts
of timestamps with a time zone, durations and intervals, durations too long to read back) are
refused with 422 ``invalid_value`` naming the column.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ARROW_STREAM, ipc_bytes, query

INT64_MAX = 2**63 - 1
NANOS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
MICROS = {"s": 1_000_000, "ms": 1_000, "us": 1}
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "+05:30", "-08:00"]

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _same(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class Kind:
    """One Arrow type: how to draw its values and what DuckDB gives back."""

    arrow: pa.DataType
    back: pa.DataType  # documented read-back type; a timestamp's tz is the server's time zone
    values: st.SearchStrategy[Any]  # non-null values, accepted by pa.array(values, arrow)
    expect: Callable[[Any], Any] = _same  # value -> read-back value in the "plain" domain
    duck: str | None = None  # DuckDB column type, where the module documents it
    key: bool = False  # usable as a map key


def _ints(dtype: pa.DataType, duck: str) -> Kind:
    bits = dtype.bit_width
    if pa.types.is_signed_integer(dtype):
        values = st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    else:
        values = st.integers(0, 2**bits - 1)
    return Kind(dtype, dtype, values, duck=duck, key=True)


def _scaled(factor: int) -> Callable[[Any], Any]:
    return lambda v: v * factor


def _duration(unit: str) -> Kind:
    if unit == "ns":
        # Whole microseconds: sub-microsecond durations are refused, see test_lossy_values_*.
        values = st.integers(-(INT64_MAX // 1000), INT64_MAX // 1000).map(lambda v: v * 1000)
    else:
        limit = INT64_MAX // NANOS[unit]
        values = st.integers(-limit, limit)
    return Kind(
        pa.duration(unit),
        pa.month_day_nano_interval(),
        values,
        lambda v: pa.MonthDayNano([0, 0, v * NANOS[unit]]),
        duck="INTERVAL",
    )


def _timestamp_tz(unit: str, zone: str) -> Kind:
    if unit == "ns":
        values = st.integers(-(INT64_MAX // 1000), INT64_MAX // 1000).map(lambda v: v * 1000)
        expect: Callable[[Any], Any] = lambda v: v // 1000  # noqa: E731
    else:
        limit = INT64_MAX // MICROS[unit]
        values = st.integers(-limit, limit)
        expect = _scaled(MICROS[unit])
    return Kind(
        pa.timestamp(unit, zone),
        pa.timestamp("us", "UTC"),
        values,
        expect,
        duck="TIMESTAMP WITH TIME ZONE",
    )


def _decimal(width: int, precision: int, scale: int) -> Kind:
    maker = {32: pa.decimal32, 64: pa.decimal64, 128: pa.decimal128}[width]
    # Built from integers: Decimal arithmetic (and st.decimals) round to 28 digits.
    limit = 10**precision - 1
    values = st.integers(-limit, limit).map(lambda i: Decimal(f"{i}E-{scale}"))
    return Kind(
        maker(precision, scale),
        pa.decimal128(precision, scale),
        values,
        duck=f"DECIMAL({precision},{scale})",
    )


@st.composite
def decimals(draw: st.DrawFn) -> Kind:
    width = draw(st.sampled_from([32, 64, 128]))
    precision = draw(st.integers(1, {32: 9, 64: 18, 128: 38}[width]))
    return _decimal(width, precision, draw(st.integers(0, precision)))


INTERVAL_VALUES = st.tuples(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(INT64_MAX // 1000), INT64_MAX // 1000).map(lambda v: v * 1000),
)
text = st.text(max_size=12)
binary = st.binary(max_size=12)
DAY_MS = 86_400_000

LEAVES: list[Kind] = [
    _ints(pa.int8(), "TINYINT"),
    _ints(pa.int16(), "SMALLINT"),
    _ints(pa.int32(), "INTEGER"),
    _ints(pa.int64(), "BIGINT"),
    _ints(pa.uint8(), "UTINYINT"),
    _ints(pa.uint16(), "USMALLINT"),
    _ints(pa.uint32(), "UINTEGER"),
    _ints(pa.uint64(), "UBIGINT"),
    Kind(pa.float32(), pa.float32(), st.floats(width=32), duck="FLOAT"),
    Kind(pa.float64(), pa.float64(), st.floats(), duck="DOUBLE"),
    Kind(pa.bool_(), pa.bool_(), st.booleans(), duck="BOOLEAN"),
    _decimal(32, 5, 2),
    _decimal(64, 18, 0),
    _decimal(128, 38, 10),
    _decimal(128, 38, 38),
    Kind(pa.date32(), pa.date32(), st.integers(-(2**31), 2**31 - 1), duck="DATE"),
    Kind(
        pa.date64(),
        pa.date32(),
        st.integers(-(2**31), 2**31 - 1).map(lambda d: d * DAY_MS),
        lambda ms: ms // DAY_MS,
        duck="DATE",
    ),
    Kind(pa.time32("s"), pa.time64("us"), st.integers(0, 86_399), _scaled(10**6), "TIME"),
    Kind(pa.time32("ms"), pa.time64("us"), st.integers(0, 86_399_999), _scaled(1000), "TIME"),
    Kind(pa.time64("us"), pa.time64("us"), st.integers(0, 86_399_999_999), duck="TIME"),
    Kind(pa.time64("ns"), pa.time64("ns"), st.integers(0, 86_399_999_999_999), duck="TIME_NS"),
    *[
        Kind(pa.timestamp(u), pa.timestamp(u), st.integers(-INT64_MAX, INT64_MAX), duck=d)
        for u, d in [
            ("s", "TIMESTAMP_S"),
            ("ms", "TIMESTAMP_MS"),
            ("us", "TIMESTAMP"),
            ("ns", "TIMESTAMP_NS"),
        ]
    ],
    *[_timestamp_tz(u, z) for u, z in zip(["s", "ms", "us", "ns"], ZONES, strict=False)],
    _timestamp_tz("ns", "+05:30"),
    *[_duration(u) for u in ["s", "ms", "us", "ns"]],
    Kind(
        pa.month_day_nano_interval(),
        pa.month_day_nano_interval(),
        INTERVAL_VALUES,
        lambda v: pa.MonthDayNano(list(v)),
        duck="INTERVAL",
    ),
    Kind(pa.string(), pa.string(), text, duck="VARCHAR", key=True),
    Kind(pa.large_string(), pa.string(), text, duck="VARCHAR"),
    Kind(pa.string_view(), pa.string(), text, duck="VARCHAR"),
    Kind(pa.binary(), pa.binary(), binary, duck="BLOB"),
    Kind(pa.large_binary(), pa.binary(), binary, duck="BLOB"),
    Kind(pa.binary_view(), pa.binary(), binary, duck="BLOB"),
    Kind(pa.binary(3), pa.binary(), st.binary(min_size=3, max_size=3), duck="BLOB"),
]
NULL_KIND = Kind(pa.null(), pa.int32(), st.nothing(), duck="INTEGER")

INDEX_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64()]
DICTIONARY_VALUES = [
    (pa.string(), pa.string(), "VARCHAR", st.sampled_from(["red", "green", "", "blue sky"])),
    (pa.large_string(), pa.string(), "VARCHAR", st.sampled_from(["x", "y", "zz"])),
    (pa.int64(), pa.int64(), "BIGINT", st.sampled_from([0, -1, 2**62])),
    (pa.binary(), pa.binary(), "BLOB", st.sampled_from([b"", b"\x00", b"ab"])),
]


@st.composite
def dictionaries(draw: st.DrawFn) -> Kind:
    index = draw(st.sampled_from(INDEX_TYPES))
    value, back, duck, values = draw(st.sampled_from(DICTIONARY_VALUES))
    return Kind(pa.dictionary(index, value), back, values, duck=duck)


def nullable(kind: Kind) -> st.SearchStrategy[Any]:
    return st.none() | kind.values


def _optional(expect: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else expect(v)


def list_of(child: Kind, maker: str, size: int = 0) -> Kind:
    item = _optional(child.expect)
    expect = lambda v: [item(x) for x in v]  # noqa: E731
    if maker == "fixed":
        values = st.lists(nullable(child), min_size=size, max_size=size)
        return Kind(pa.list_(child.arrow, size), pa.list_(child.back, size), values, expect)
    arrow = {"list": pa.list_, "large": pa.large_list, "view": pa.list_view}[maker](child.arrow)
    return Kind(arrow, pa.list_(child.back), st.lists(nullable(child), max_size=4), expect)


FIELD_NAMES = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=8
)


@st.composite
def structs(draw: st.DrawFn, depth: int) -> Kind:
    names = draw(st.lists(FIELD_NAMES, min_size=1, max_size=3, unique_by=str.lower))
    children = [draw(kinds(depth - 1)) for _ in names]
    arrow = pa.struct([(n, c.arrow) for n, c in zip(names, children, strict=True)])
    back = pa.struct([(n, c.back) for n, c in zip(names, children, strict=True)])
    values = st.fixed_dictionaries({n: nullable(c) for n, c in zip(names, children, strict=True)})
    expects = {n: _optional(c.expect) for n, c in zip(names, children, strict=True)}
    return Kind(arrow, back, values, lambda v: {n: f(v[n]) for n, f in expects.items()})


@st.composite
def maps(draw: st.DrawFn, depth: int) -> Kind:
    key = draw(st.sampled_from([k for k in LEAVES if k.key]))
    value = draw(kinds(depth - 1))
    entries = st.lists(st.tuples(key.values, nullable(value)), max_size=4, unique_by=lambda e: e[0])
    item = _optional(value.expect)
    return Kind(
        pa.map_(key.arrow, value.arrow),
        pa.map_(key.back, value.back),
        entries,
        lambda v: [(key.expect(k), item(x)) for k, x in v],
    )


def kinds(depth: int) -> st.SearchStrategy[Kind]:
    leaves = st.sampled_from(LEAVES) | decimals()
    if depth <= 0:
        return leaves
    nested = (
        st.builds(list_of, kinds(depth - 1), st.sampled_from(["list", "large", "view"]))
        | st.builds(list_of, kinds(depth - 1), st.just("fixed"), st.integers(1, 3))
        | structs(depth)
        | maps(depth)
    )
    return st.one_of(leaves, leaves, nested)


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool


COLUMN_NAMES = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=10
).filter(lambda n: n.lower() != "rid")


@st.composite
def columns(draw: st.DrawFn, column_kinds: Sequence[Kind] | None = None) -> list[Column]:
    if column_kinds is None:
        count = draw(st.integers(1, 6))
        pool = kinds(2) | dictionaries() | st.just(NULL_KIND)
        column_kinds = [draw(pool) for _ in range(count)]
    names = draw(
        st.lists(
            COLUMN_NAMES,
            min_size=len(column_kinds),
            max_size=len(column_kinds),
            unique_by=str.lower,
        )
    )
    return [
        Column(name, kind, kind is NULL_KIND or draw(st.booleans()))
        for name, kind in zip(names, column_kinds, strict=True)
    ]


@st.composite
def tables(
    draw: st.DrawFn, column_kinds: Sequence[Kind] | None = None
) -> tuple[list[Column], list[list[Any]]]:
    cols = draw(columns(column_kinds))
    rows = draw(st.integers(0, 50))
    data = [
        draw(
            st.lists(
                nullable(c.kind) if c.nullable else c.kind.values, min_size=rows, max_size=rows
            )
        )
        for c in cols
    ]
    return cols, data


# -- comparing ----------------------------------------------------------------------------------


def plain(dtype: pa.DataType) -> pa.DataType:
    """The type values are compared in: temporal types as their integers, nesting kept."""
    if pa.types.is_timestamp(dtype) or pa.types.is_time64(dtype):
        return pa.int64()
    if pa.types.is_date32(dtype):
        return pa.int32()
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(dtype.value_field.with_type(plain(dtype.value_type)), dtype.list_size)
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(plain(dtype.value_type)))
    if pa.types.is_map(dtype):
        return pa.map_(plain(dtype.key_type), plain(dtype.item_type))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(plain(f.type)) for f in dtype])
    return dtype


def shape(dtype: pa.DataType, zone: str | None = None) -> str:
    """A type's structure, ignoring child field names DuckDB renames (list ``l``, array ``""``)."""
    if pa.types.is_timestamp(dtype):
        return f"timestamp[{dtype.unit}, tz={zone if dtype.tz and zone else dtype.tz}]"
    if pa.types.is_fixed_size_list(dtype):
        return f"fixed_size_list<{shape(dtype.value_type, zone)}>[{dtype.list_size}]"
    if pa.types.is_list(dtype):
        return f"list<{shape(dtype.value_type, zone)}>"
    if pa.types.is_map(dtype):
        return f"map<{shape(dtype.key_type, zone)}, {shape(dtype.item_type, zone)}>"
    if pa.types.is_struct(dtype):
        return "struct<" + ", ".join(f"{f.name!r}: {shape(f.type, zone)}" for f in dtype) + ">"
    return str(dtype)


def same(a: Any, b: Any) -> bool:
    """Deep equality where NaN equals NaN and -0.0 differs from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def server_zone(client: httpx.Client) -> str:
    """The time zone the server's TIMESTAMPTZ values read back in (as Arrow labels them)."""
    answer = query(client, "SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' AS t")
    return str(answer.schema.field("t").type.tz)


def send(client: httpx.Client, table: pa.Table, name: str) -> httpx.Response:
    return client.post(
        "/stream/types",
        params={"table": name},
        content=ipc_bytes(table),
        headers={"Content-Type": ARROW_STREAM},
    )


def build(cols: list[Column], data: list[list[Any]]) -> pa.Table:
    rows = len(data[0]) if data else 0
    arrays = [pa.array(range(rows), pa.int32())] + [
        pa.array(values, c.kind.arrow) if c.kind is not NULL_KIND else pa.nulls(rows)
        for c, values in zip(cols, data, strict=True)
    ]
    fields = [pa.field("rid", pa.int32(), nullable=False)] + [
        pa.field(c.name, c.kind.arrow, nullable=c.nullable) for c in cols
    ]
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def check_round_trip(client: httpx.Client, cols: list[Column], data: list[list[Any]]) -> None:
    table_name = "t_" + uuid.uuid4().hex
    sent = build(cols, data)
    response = send(client, sent, table_name)
    assert response.status_code == 200, response.text
    assert response.json()["rows_processed"] == sent.num_rows

    back = query(client, f"SELECT * FROM {table_name} ORDER BY rid")
    assert back.column_names == ["rid"] + [c.name for c in cols]
    zone = server_zone(client)
    for c, values in zip(cols, data, strict=True):
        actual_type = back.schema.field(c.name).type
        assert shape(actual_type) == shape(c.kind.back, zone), (
            f"column {c.name!r}: sent {c.kind.arrow}, read back {actual_type}, "
            f"documented {c.kind.back}"
        )
        column = back.column(c.name).combine_chunks()
        actual = column.cast(plain(actual_type)).to_pylist()
        expected = [None if v is None else c.kind.expect(v) for v in values]
        assert same(actual, expected), f"column {c.name!r} ({c.kind.arrow}): {actual!r}"

    described = client.get(f"/tables/{table_name}")
    assert described.status_code == 200, described.text
    info = {col["name"]: col for col in described.json()["columns"]}
    for c in cols:
        assert info[c.name]["nullable"] is (c.nullable or c.kind is NULL_KIND), c.name
        if c.kind.duck is not None:
            assert info[c.name]["type"] == c.kind.duck, (c.name, c.kind.arrow)


# -- the properties -----------------------------------------------------------------------------


@SETTINGS
@given(case=tables())
def test_random_tables_round_trip(
    client: httpx.Client, case: tuple[list[Column], list[list[Any]]]
) -> None:
    cols, data = case
    check_round_trip(client, cols, data)


EVERY_TOP_LEVEL_KIND = [
    *LEAVES,
    NULL_KIND,
    *[
        Kind(pa.dictionary(index, value), back, values, duck=duck)
        for index, (value, back, duck, values) in zip(
            INDEX_TYPES, DICTIONARY_VALUES * 2, strict=False
        )
    ],
]


@settings(SETTINGS, max_examples=8)
@given(case=tables(EVERY_TOP_LEVEL_KIND))
def test_every_type_in_one_table_round_trips(
    client: httpx.Client, case: tuple[list[Column], list[list[Any]]]
) -> None:
    cols, data = case
    check_round_trip(client, cols, data)


# -- what is refused ----------------------------------------------------------------------------

UNSUPPORTED = [
    pa.float16(),
    pa.decimal256(20, 2),
    pa.decimal256(40, 2),
    pa.decimal128(10, -3),
    pa.decimal128(5, 7),
    pa.dense_union([pa.field("a", pa.int32()), pa.field("b", pa.string())]),
    pa.sparse_union([pa.field("a", pa.int32()), pa.field("b", pa.string())]),
    pa.struct([]),
    pa.struct([("a", pa.int32()), ("A", pa.int32())]),
    pa.struct([("", pa.int32())]),
    pa.list_(pa.int32(), 0),
    pa.list_(pa.int32(), 100_001),
]


def wrapped(dtype: pa.DataType, how: str) -> pa.DataType:
    if how == "list":
        return pa.list_(dtype)
    if how == "struct":
        return pa.struct([("ok", pa.int32()), ("inner", dtype)])
    if how == "map":
        return pa.map_(pa.string(), dtype)
    return dtype


@SETTINGS
@given(
    good=columns(),
    bad_type=st.sampled_from(UNSUPPORTED),
    how=st.sampled_from(["top", "list", "struct", "map"]),
    position=st.integers(0, 6),
    rows=st.integers(0, 5),
    bad_name=COLUMN_NAMES,
)
def test_unsupported_types_are_refused_naming_the_column(
    client: httpx.Client,
    good: list[Column],
    bad_type: pa.DataType,
    how: str,
    position: int,
    rows: int,
    bad_name: str,
) -> None:
    good = [c for c in good if c.name.lower() != bad_name.lower()]
    dtype = wrapped(bad_type, how)
    fields = [pa.field(c.name, c.kind.arrow) for c in good]
    fields.insert(min(position, len(fields)), pa.field(bad_name, dtype))
    table = pa.Table.from_arrays([pa.nulls(rows, f.type) for f in fields], schema=pa.schema(fields))
    table_name = "t_" + uuid.uuid4().hex

    response = send(client, table, table_name)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "unsupported_type"
    assert body["columns"] == [bad_name]  # only the bad column is blamed
    assert repr(bad_name) in body["message"]
    assert client.get(f"/tables/{table_name}").status_code == 404


LOSSY = {
    "timestamp_ns_tz": pa.array([1_000, 1_001], pa.timestamp("ns", "UTC")),
    "timestamp_ns_tz_in_list": pa.array(
        [[5_000], None, [7_000, 1]], pa.list_(pa.timestamp("ns", "Asia/Tokyo"))
    ),
    "timestamp_s_tz_out_of_range": pa.array([0, 2**62], pa.timestamp("s", "UTC")),
    "duration_ns": pa.array([1_000, -1], pa.duration("ns")),
    "duration_us_too_long": pa.array([0, 2**62], pa.duration("us")),
    "duration_in_struct": pa.array([{"d": 1}], pa.struct([("d", pa.duration("ns"))])),
    "interval_sub_microsecond": pa.array([(1, 2, 3_000), (0, 0, 1)], pa.month_day_nano_interval()),
    "interval_in_map": pa.array(
        [[("k", (0, 0, 999))]], pa.map_(pa.string(), pa.month_day_nano_interval())
    ),
}


@pytest.mark.parametrize("case", list(LOSSY))
def test_lossy_values_are_refused_naming_the_column(client: httpx.Client, case: str) -> None:
    values = LOSSY[case]
    table = pa.table({"id": pa.array(range(len(values)), pa.int32()), case: values})
    table_name = "t_" + uuid.uuid4().hex

    response = send(client, table, table_name)

    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_value"
    assert repr(case) in body["message"]
    assert body.get("column") == case
    tables = client.get(f"/tables/{table_name}")
    assert tables.status_code == 404 or tables.json()["row_count"] == 0


def test_lossless_neighbours_of_lossy_values_land(client: httpx.Client) -> None:
    """The same types with values DuckDB keeps exactly are stored, not refused."""
    table = pa.table(
        {
            "ts": pa.array([1_000, None, -2_000], pa.timestamp("ns", "UTC")),
            "d": pa.array([1_000, None, -(INT64_MAX // 1000) * 1000], pa.duration("ns")),
            "i": pa.array([(1, 2, 3_000), None, (0, -1, 0)], pa.month_day_nano_interval()),
        }
    )
    table_name = "t_" + uuid.uuid4().hex
    response = send(client, table, table_name)
    assert response.status_code == 200, response.text
    back = query(client, f"SELECT * FROM {table_name} ORDER BY rowid")
    assert back.column("ts").cast(pa.int64()).to_pylist() == [1, None, -2]
    assert back.column("d").to_pylist() == [
        pa.MonthDayNano([0, 0, 1_000]),
        None,
        pa.MonthDayNano([0, 0, -(INT64_MAX // 1000) * 1000]),
    ]
    assert back.column("i").to_pylist() == [(1, 2, 3_000), None, (0, -1, 0)]


def test_map_with_duplicate_keys_is_refused(client: httpx.Client) -> None:
    bad = pa.array([[("a", 1), ("a", 2)]], pa.map_(pa.string(), pa.int32()))
    response = send(client, pa.table({"m": bad}), "dup_map_keys")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_value"
    assert client.get("/tables/dup_map_keys").status_code == 404
    assert client.get("/health").status_code == 200


def test_a_map_of_checked_values_with_null_maps_lands_in_slices(client: httpx.Client) -> None:
    """A batch sliced to chunk_size whose map column (of values that are checked) holds null
    maps: its entries were rebuilt with a null mask over sliced offsets, a 500."""
    rows = 5_000
    maps = pa.array(
        [None if i % 7 == 0 else [("k", i * 1_000)] for i in range(rows)],
        pa.map_(pa.string(), pa.timestamp("ns", "UTC")),
    )
    table = pa.table({"rid": pa.array(range(rows), pa.int32()), "m": maps})
    response = client.post(
        "/stream/types",
        params={"table": "sliced_maps", "chunk_size": "2048"},
        content=ipc_bytes(table),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert response.status_code == 200, response.text
    back = query(client, "SELECT count(*) AS n, count(m) AS maps FROM sliced_maps")
    assert back.to_pylist() == [{"n": rows, "maps": rows - len(range(0, rows, 7))}]


def test_time_zone_columns_read_back_in_utc(client: httpx.Client) -> None:
    assert server_zone(client) == "UTC"
