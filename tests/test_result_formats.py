"""How ``POST /query`` renders values as JSON and CSV: every type DuckDB answers with is written,
none is lost or misread (nested values, BLOBs, BIGNUMs, DuckDB's infinities, extreme dates,
columns that share a name), and the two formats agree."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pyarrow as pa
import pytest

from tests.server import ArrowportProcess

JSON = "application/json"
CSV = "text/csv"
ARROW = "application/vnd.apache.arrow.stream"


def answer(client: httpx.Client, sql: str, accept: str) -> httpx.Response:
    response = client.post("/query", json={"sql": sql}, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(accept)
    return response


def json_rows(client: httpx.Client, sql: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = answer(client, sql, JSON).json()["rows"]
    return rows


def csv_text(client: httpx.Client, sql: str) -> str:
    return answer(client, sql, CSV).text


@pytest.fixture(autouse=True)
def server_stays_up(server: ArrowportProcess) -> Iterator[None]:
    """Every test ends with the module's server still serving."""
    yield
    assert server.healthy()


# -- CSV of values with no plain text form ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT [1,2] AS l", '"l"\n"[1,2]"\n'),
        ("SELECT {'a': 1, 'b': 'x,y'} AS s", '"s"\n"{""a"":1,""b"":""x,y""}"\n'),
        ("SELECT map([1],[2]) AS m", '"m"\n"[[1,2]]"\n'),
        ("SELECT union_value(a := 1) AS u", '"u"\n"1"\n'),
        ("SELECT union_value(a := 'text') AS u", '"u"\n"text"\n'),
        ("SELECT [1,2]::INTEGER[2] AS a", '"a"\n"[1,2]"\n'),
        ("SELECT (-12345678901234567890123)::BIGNUM AS b", '"b"\n"-12345678901234567890123"\n'),
        ("SELECT INTERVAL '1 month 2 days 3.5 seconds' AS i", '"i"\n"[1,2,3500000000]"\n'),
        ("SELECT [NULL, 1] AS l, NULL::INTEGER[] AS n, 7 AS k", '"l","n","k"\n"[null,1]",,7\n'),
        ("SELECT row(1, 'x') AS r", '"r"\n"{"""":1,""_2"":""x""}"\n'),
    ],
)
def test_csv_writes_nested_values_as_json_text(
    client: httpx.Client, sql: str, expected: str
) -> None:
    assert csv_text(client, sql) == expected


def test_csv_cells_of_nested_values_read_back_as_the_json_answer(client: httpx.Client) -> None:
    sql = (
        "SELECT i, [i, NULL] AS l, {'k': i, 'd': DATE '2024-01-01' + i::INTEGER} AS s, "
        "map(['x'], [i * 1.5]) AS m FROM range(3) t(i) ORDER BY i"
    )
    rows = list(csv.DictReader(io.StringIO(csv_text(client, sql))))
    expected = json_rows(client, sql)
    for row, reference in zip(rows, expected, strict=True):
        assert int(row["i"]) == reference["i"]
        assert {name: json.loads(row[name]) for name in ("l", "s", "m")} == {
            name: reference[name] for name in ("l", "s", "m")
        }
    assert [json.loads(row["s"])["d"] for row in rows] == ["2024-01-01", "2024-01-02", "2024-01-03"]


# -- BLOBs -------------------------------------------------------------------------------------


def test_csv_writes_blobs_as_base64_like_json(client: httpx.Client) -> None:
    sql = "SELECT '\\xff'::BLOB AS b, 'ab'::BLOB AS c, ['\\xff'::BLOB] AS l, NULL::BLOB AS n"
    assert csv_text(client, sql) == '"b","c","l","n"\n"/w==","YWI=","[""/w==""]",\n'
    assert json_rows(client, sql) == [{"b": "/w==", "c": "YWI=", "l": ["/w=="], "n": None}]


# -- BIGNUM ------------------------------------------------------------------------------------


def test_bignum_is_written_as_its_digits(client: httpx.Client) -> None:
    sql = (
        "SELECT 1::BIGNUM AS a, (-256)::BIGNUM AS b, NULL::BIGNUM AS c, "
        f"'{2**100}'::BIGNUM AS d, [0::BIGNUM] AS e"
    )
    assert json_rows(client, sql) == [
        {"a": "1", "b": "-256", "c": None, "d": str(2**100), "e": ["0"]}
    ]
    assert csv_text(client, sql) == f'"a","b","c","d","e"\n"1","-256",,"{2**100}","[""0""]"\n'


# -- DECIMAL -----------------------------------------------------------------------------------


def test_decimals_are_plain_digits_at_their_scale(client: httpx.Client) -> None:
    """Small decimals came out in exponent form (``0E-10``, ``1.000E-7``), as Python's and
    Arrow's decimal text writes them: in JSON and in CSV alike."""
    sql = (
        "SELECT 0::DECIMAL(18, 10) AS z, 0.0000001::DECIMAL(18, 10) AS s, "
        "(-0.00000005)::DECIMAL(10, 8) AS n, 123.45::DECIMAL(5, 2) AS d, "
        "[0.0000001::DECIMAL(18, 10), NULL] AS l, NULL::DECIMAL(20, 12) AS e"
    )
    assert json_rows(client, sql) == [
        {
            "z": "0.0000000000",
            "s": "0.0000001000",
            "n": "-0.00000005",
            "d": "123.45",
            "l": ["0.0000001000", None],
            "e": None,
        }
    ]
    assert csv_text(client, sql) == (
        '"z","s","n","d","l","e"\n'
        '"0.0000000000","0.0000001000","-0.00000005",123.45,"[""0.0000001000"",null]",\n'
    )


# -- UHUGEINT ----------------------------------------------------------------------------------

UNSIGNED = (
    "SELECT x::UHUGEINT AS u FROM (VALUES (1, '0'), (2, '170141183460469231731687303715884105728'), "
    "(3, '340282366920938463463374607431768211455'), (4, NULL)) v(i, x) ORDER BY i"
)
UNSIGNED_VALUES = [0, 2**127, 2**128 - 1, None]


def test_uhugeints_past_2_to_the_127_read_back_as_they_are(client: httpx.Client) -> None:
    """DuckDB exports UHUGEINT as a decimal128 holding its bits, so 2^128 - 1 read back as -1
    (and 2^127 as -2^127) in every format."""
    table = pa.ipc.open_stream(answer(client, UNSIGNED, ARROW).content).read_all()
    assert table.schema.field("u").type == pa.decimal256(39, 0)
    assert [None if v is None else int(v) for v in table.column("u").to_pylist()] == (
        UNSIGNED_VALUES
    )
    rows = json_rows(client, UNSIGNED)
    assert [row["u"] for row in rows] == [None if v is None else str(v) for v in UNSIGNED_VALUES]
    lines = csv_text(client, UNSIGNED).splitlines()
    assert lines == ['"u"', "0", str(2**127), str(2**128 - 1), ""]


NESTED = (
    "SELECT [NULL, '340282366920938463463374607431768211455'::UHUGEINT] AS l, "
    "{'u': '170141183460469231731687303715884105728'::UHUGEINT, 'b': '0101'::BIT} AS s, "
    "map(['0101'::BIT], [['1'::BIT]]) AS m, "
    "['170141183460469231731687303715884105728'::UHUGEINT]::UHUGEINT[1] AS a"
)


def test_uhugeints_and_bits_nested_in_lists_structs_and_maps_read_back_as_they_are(
    client: httpx.Client,
) -> None:
    table = pa.ipc.open_stream(answer(client, NESTED, ARROW).content).read_all()
    assert str(table.schema.field("s").type) == "struct<u: decimal256(39, 0), b: string>"
    assert table.to_pylist() == [
        {
            "l": [None, Decimal(2**128 - 1)],
            "s": {"u": Decimal(2**127), "b": "0101"},
            "m": [("0101", ["1"])],
            "a": [Decimal(2**127)],
        }
    ]
    assert json_rows(client, NESTED) == [
        {
            "l": [None, str(2**128 - 1)],
            "s": {"u": str(2**127), "b": "0101"},
            "m": [["0101", ["1"]]],
            "a": [str(2**127)],
        }
    ]


# -- FLOAT -------------------------------------------------------------------------------------

FLOATS = (
    "SELECT 0.1::REAL AS f, [0.1::REAL, NULL, 'nan'::REAL] AS l, {'x': 3.4028235e38::REAL} AS s, "
    "16777217::REAL AS w, 0.1::DOUBLE AS d"
)


def test_floats_are_their_shortest_decimal_in_json_and_csv(client: httpx.Client) -> None:
    """A FLOAT was written as the double it widens to (0.1 as 0.10000000149011612) in JSON, and
    in CSV where nested, though a plain CSV cell of it said 0.1."""
    body = answer(client, FLOATS, JSON).text
    assert "0.10000000149011612" not in body
    assert json.loads(body)["rows"] == [
        {"f": 0.1, "l": [0.1, None, None], "s": {"x": 3.4028235e38}, "w": 16777216, "d": 0.1}
    ]
    assert csv_text(client, FLOATS) == (
        '"f","l","s","w","d"\n0.1,"[0.1,null,null]","{""x"":3.4028235e+38}",16777216,0.1\n'
    )


# -- BIT ---------------------------------------------------------------------------------------

BITS = "SELECT '0101'::BIT AS b, '1'::BIT AS one, '10000000011'::BIT AS long, NULL::BIT AS n"


def test_bits_are_answered_as_their_digits(client: httpx.Client) -> None:
    """DuckDB exports BIT as its own bytes: '0101' was answered as the bytes 04 f5 (base64
    "BPU=" in JSON and CSV)."""
    table = pa.ipc.open_stream(answer(client, BITS, ARROW).content).read_all()
    assert table.schema.types == [pa.string()] * 4
    expected = {"b": "0101", "one": "1", "long": "10000000011", "n": None}
    assert table.to_pylist() == [expected]
    assert json_rows(client, BITS) == [expected]
    assert csv_text(client, BITS) == '"b","one","long","n"\n"0101","1","10000000011",\n'


# -- DuckDB's infinities and dates Python cannot hold ------------------------------------------------

INFINITIES = (
    "SELECT 'infinity'::TIMESTAMP AS t, '-infinity'::TIMESTAMP AS nt, "
    "'infinity'::TIMESTAMPTZ AS tz, '-infinity'::TIMESTAMPTZ AS ntz, "
    "'infinity'::DATE AS d, '-infinity'::DATE AS nd, 'infinity'::TIMESTAMP_NS AS ns, "
    "'-infinity'::TIMESTAMP_S AS s, 'infinity'::TIMESTAMP_MS AS ms"
)


def test_infinities_are_named_in_json(client: httpx.Client) -> None:
    assert json_rows(client, INFINITIES) == [
        {
            "t": "infinity",
            "nt": "-infinity",
            "tz": "infinity",
            "ntz": "-infinity",
            "d": "infinity",
            "nd": "-infinity",
            "ns": "infinity",
            "s": "-infinity",
            "ms": "infinity",
        }
    ]


def test_infinities_are_named_in_csv(client: httpx.Client) -> None:
    header = '"t","nt","tz","ntz","d","nd","ns","s","ms"'
    row = ",".join(f'"{v}"' for v in ["infinity", "-infinity"] * 4 + ["infinity"])
    assert csv_text(client, INFINITIES) == f"{header}\n{row}\n"


def test_infinities_in_unions_and_nested_values_render_as_at_top_level(
    client: httpx.Client,
) -> None:
    sql = (
        "SELECT union_value(a := 'infinity'::DATE) AS u, "
        "union_value(a := '-infinity'::TIMESTAMPTZ) AS v, "
        "[union_value(a := 'infinity'::TIMESTAMP)] AS l, "
        "[TIMESTAMPTZ '2020-01-01 00:00:00+00', 'infinity'::TIMESTAMPTZ] AS tzs, "
        "{'d': '-infinity'::DATE} AS s, map(['k'], ['infinity'::DATE]) AS m"
    )
    assert json_rows(client, sql) == [
        {
            "u": "infinity",
            "v": "-infinity",
            "l": ["infinity"],
            "tzs": ["2020-01-01T00:00:00+00:00", "infinity"],
            "s": {"d": "-infinity"},
            "m": [["k", "infinity"]],
        }
    ]
    assert csv_text(client, sql) == (
        '"u","v","l","tzs","s","m"\n'
        '"infinity","-infinity","[""infinity""]",'
        '"[""2020-01-01T00:00:00+00:00"",""infinity""]",'
        '"{""d"":""-infinity""}","[[""k"",""infinity""]]"\n'
    )


def test_structs_and_maps_holding_unions_render(client: httpx.Client) -> None:
    """pyarrow's ``StructArray.flatten`` aborts the process on a struct holding a union: a
    struct of an ENUM and a union, asked for as JSON or CSV, killed the server."""
    enum = "'a'::ENUM('a', 'b')"
    sql = (
        f"SELECT {{'e': {enum}, 'u': union_value(x := i::INTEGER)}} AS s, "
        "if(i = 1, NULL, {'d': 'infinity'::DATE, 'u': union_value(x := 'y')}) AS n, "
        f"map([i], [union_value(x := {enum})]) AS m, "
        f"union_value(x := {{'e': {enum}}}) AS v "
        "FROM range(2) r(i) ORDER BY i"
    )
    assert json_rows(client, sql) == [
        {
            "s": {"e": "a", "u": i},
            "n": None if i == 1 else {"d": "infinity", "u": "y"},
            "m": [[i, "a"]],
            "v": {"e": "a"},
        }
        for i in range(2)
    ]
    assert csv_text(client, sql) == (
        '"s","n","m","v"\n'
        '"{""e"":""a"",""u"":0}","{""d"":""infinity"",""u"":""y""}","[[0,""a""]]",'
        '"{""e"":""a""}"\n'
        '"{""e"":""a"",""u"":1}",,"[[1,""a""]]","{""e"":""a""}"\n'
    )
    table = pa.ipc.open_stream(answer(client, sql, ARROW).content).read_all()
    assert table.column("s").to_pylist() == [{"e": "a", "u": 0}, {"e": "a", "u": 1}]


def test_a_column_with_an_infinity_keeps_the_format_of_its_other_values(
    client: httpx.Client,
) -> None:
    sql = (
        "SELECT if(i = 1, 'infinity'::TIMESTAMP, TIMESTAMP '2020-01-01 00:00:01') AS t, "
        "[if(i = 1, 'infinity'::TIMESTAMP, TIMESTAMP '2020-01-01 00:00:01')] AS l "
        "FROM range(3) r(i) ORDER BY i"
    )
    assert json_rows(client, sql) == [
        {"t": "2020-01-01T00:00:01", "l": ["2020-01-01T00:00:01"]},
        {"t": "infinity", "l": ["infinity"]},
        {"t": "2020-01-01T00:00:01", "l": ["2020-01-01T00:00:01"]},
    ]
    assert [row["t"] for row in csv.DictReader(io.StringIO(csv_text(client, sql)))] == [
        "2020-01-01 00:00:01.000000",
        "infinity",
        "2020-01-01 00:00:01.000000",
    ]


def test_times_and_dates_beyond_python_are_written_as_they_are(client: httpx.Client) -> None:
    sql = (
        "SELECT '294247-01-10 04:00:54.775806'::TIMESTAMP AS t, "
        "'294247-01-10 04:00:54.775806+00'::TIMESTAMPTZ AS tz, '5877642-06-25'::DATE AS d, "
        "'24:00:00'::TIME AS e, '12:00:00.123456789'::TIME_NS AS f, "
        "'2020-01-01 00:00:00.123456789'::TIMESTAMP_NS AS g"
    )
    assert json_rows(client, sql) == [
        {
            "t": "294247-01-10T04:00:54.775806",
            "tz": "294247-01-10T04:00:54.775806+00:00",
            "d": "5877642-06-25",
            "e": "24:00:00",
            "f": "12:00:00.123456789",
            "g": "2020-01-01T00:00:00.123456789",
        }
    ]
    assert csv_text(client, sql) == (
        '"t","tz","d","e","f","g"\n"294247-01-10 04:00:54.775806",'
        '"294247-01-10 04:00:54.775806Z","5877642-06-25","24:00:00.000000",'
        "12:00:00.123456789,2020-01-01 00:00:00.123456789\n"
    )


def test_large_answers_with_unions_and_infinities_render_in_every_slice(
    client: httpx.Client,
) -> None:
    """Answers over a megabyte are rendered in row slices, each taken apart on its own."""
    rows = 300_000
    sql = (
        "SELECT i, if(i % 2 = 0, union_value(a := 'infinity'::DATE)::UNION(a DATE, b INTEGER), "
        "union_value(b := i::INTEGER)::UNION(a DATE, b INTEGER)) AS u, "
        "if(i % 3 = 0, '-infinity'::TIMESTAMPTZ, TIMESTAMPTZ '2020-01-01 00:00:00+00') AS t "
        f"FROM range({rows}) r(i) ORDER BY i"
    )
    body = answer(client, sql, JSON).json()
    assert body["row_count"] == rows
    for row in body["rows"][:: rows // 97]:
        i = row["i"]
        assert row["u"] == ("infinity" if i % 2 == 0 else i)
        assert row["t"] == ("-infinity" if i % 3 == 0 else "2020-01-01T00:00:00+00:00")
    lines = csv_text(client, sql).splitlines()
    assert len(lines) == rows + 1
    for i in range(0, rows, rows // 97):
        u = "infinity" if i % 2 == 0 else str(i)
        t = "-infinity" if i % 3 == 0 else "2020-01-01 00:00:00.000000Z"
        assert next(csv.reader([lines[i + 1]])) == [str(i), u, t]


# -- columns that share a name ---------------------------------------------------------------


def test_json_keeps_every_column_that_shares_a_name(client: httpx.Client) -> None:
    body = answer(client, "SELECT 1 AS a, 2 AS a", JSON).json()
    assert body["columns"] == [{"name": "a", "type": "int32"}, {"name": "a_2", "type": "int32"}]
    assert body["rows"] == [{"a": 1, "a_2": 2}]
    body = answer(client, "SELECT 1 AS a, 2 AS a, 3 AS a_2, 4 AS a", JSON).json()
    assert [column["name"] for column in body["columns"]] == ["a", "a_3", "a_2", "a_4"]
    assert body["rows"] == [{"a": 1, "a_3": 2, "a_2": 3, "a_4": 4}]


def test_json_keeps_both_sides_of_a_join(client: httpx.Client) -> None:
    sql = "SELECT * FROM (SELECT 1 AS id, 'x' AS v) l JOIN (SELECT 1 AS id, 'y' AS v) r USING (id)"
    plain = answer(client, sql, JSON).json()
    sql = "SELECT * FROM (SELECT 1 AS id, 'x' AS v) l JOIN (SELECT 1 AS id, 'y' AS v) r ON true"
    body = answer(client, sql, JSON).json()
    assert body["rows"] == [{"id": 1, "v": "x", "id_2": 1, "v_2": "y"}]
    assert plain["rows"] == [{"id": 1, "v": "x", "v_2": "y"}]
    assert csv_text(client, sql) == '"id","v","id","v"\n1,"x",1,"y"\n'


# -- which format: the Accept header -----------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0, text/csv", CSV),
        ("application/json;q=0.5, text/csv;q=0.9", CSV),
        ("text/*", CSV),
        ("text/csv;q=0.2, */*;q=0.1", CSV),
        ("*/*", ARROW),
        ("application/jsonfoo", ARROW),
        ("TEXT/CSV; charset=utf-8", CSV),
        (f"{JSON}, {ARROW};q=0.8", JSON),
        ("", ARROW),
    ],
)
def test_the_accept_header_picks_the_format_by_quality(
    client: httpx.Client, accept: str, expected: str
) -> None:
    """Quality values and wildcards count; a type named only as part of another is not it (the
    header was searched for the served types as substrings, so ``application/json;q=0,
    text/csv`` got JSON)."""
    response = client.post("/query", json={"sql": "SELECT 1 AS one"}, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(expected)
