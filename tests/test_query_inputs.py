"""What a query may be given, on every protocol: SQL and parameters that DuckDB cannot take, or
could take only at a cost no limit covers, and answers whose type Arrow cannot carry, refused
with a client error (never a 500 or INTERNAL) before anything is bound; Flight SQL parameters
bound exactly as sent, or refused."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import adbc_driver_flightsql.dbapi as dbapi
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
from adbc_driver_manager import AdbcStatusCode

from tests.conftest import ARROW_STREAM, grpc_error
from tests.server import ArrowportProcess

TIMEOUT_SECONDS = 5
# Arrow carries at most this many levels of lists, structs and maps in a column of an answer.
ARROW_LEVELS = 62


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {"limits": {"query_timeout_seconds": TIMEOUT_SECONDS}}
    with ArrowportProcess(tmp_path_factory.mktemp("query_inputs"), config=config) as process:
        yield process


@pytest.fixture
def conn(server: ArrowportProcess) -> Iterator[dbapi.Connection]:
    connection = dbapi.connect(server.flight_url)
    yield connection
    connection.close()


def post(server: ArrowportProcess, body: dict[str, Any]) -> httpx.Response:
    """``POST /query`` with ``body`` as JSON, escapes and all (a lone surrogate is ``\\ud800``).
    A connection of its own: the server closes one that it answered with a 500."""
    return httpx.post(
        server.url + "/query",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": ARROW_STREAM},
        timeout=120,
    )


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["code"] == code, answer
    return str(answer["message"])


def nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def nested_object(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def flight_calls(client: flight.FlightClient, command: bytes) -> dict[str, Callable[[], object]]:
    """DoGet, GetFlightInfo and GetSchema of one JSON ticket (or descriptor command)."""
    descriptor = flight.FlightDescriptor.for_command(command)
    return {
        "do_get": lambda: client.do_get(flight.Ticket(command)).read_all(),
        "get_flight_info": lambda: client.get_flight_info(descriptor),
        "get_schema": lambda: client.get_schema(descriptor),
    }


def flight_refusals(server: ArrowportProcess, body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The gRPC code and message each of DoGet, GetFlightInfo and GetSchema answers ``body``
    with (each must fail)."""
    answers = {}
    with flight.connect(server.flight_url) as client:
        for name, call in flight_calls(client, json.dumps(body).encode()).items():
            with pytest.raises(pa.ArrowException) as raised:
                call()
            answers[name] = grpc_error(raised.value)
    return answers


def adbc_refusal(
    connection: dbapi.Connection, sql_text: str, params: Any = None
) -> tuple[AdbcStatusCode, str]:
    with connection.cursor() as cur, pytest.raises(dbapi.Error) as raised:
        cur.execute(sql_text, params)
    assert "Traceback" not in str(raised.value)
    return raised.value.status_code, str(raised.value)


def adbc_value(connection: dbapi.Connection, column: pa.Array) -> Any:
    """What ``SELECT ?`` answers with ``column`` bound, as Arrow."""
    with connection.cursor() as cur:
        cur.execute("SELECT ? AS v", pa.record_batch({"p": column}))
        return cur.fetch_arrow_table().column("v")[0]


# -- text that is not valid Unicode ---------------------------------------------------------------


def test_a_lone_surrogate_in_the_sql_or_a_parameter_is_refused_over_http(
    server: ArrowportProcess,
) -> None:
    message = refused(post(server, {"sql": "SELECT '\ud800' AS s"}), 422, "invalid_options")
    assert "not valid Unicode" in message
    assert "U+D800" in message
    for params in (
        ["\udfff", 1],
        [["ok", "\ud800"], 2],
        [{"\ud800": 1}, 3],
        [1, {"a": ["\udc00"]}],
    ):
        message = refused(
            post(server, {"sql": "SELECT ?, ?", "params": params}), 422, "invalid_value"
        )
        assert "not valid Unicode" in message
    answer = post(server, {"sql": "SELECT ? AS s", "params": ["\U0001f600"]})  # a valid pair
    assert answer.status_code == 200, answer.text
    assert pa.ipc.open_stream(answer.content).read_all().to_pylist() == [{"s": "\U0001f600"}]
    assert server.healthy()


def test_a_lone_surrogate_is_invalid_argument_on_every_flight_read(
    server: ArrowportProcess,
) -> None:
    cases: dict[str, dict[str, Any]] = {
        "invalid_options": {"sql": "SELECT '\ud800' AS s"},
        "invalid_value": {"sql": "SELECT ? AS s", "params": ["\ud800"]},
    }
    for code, body in cases.items():
        for call, (status, message) in flight_refusals(server, body).items():
            assert status == "INVALID_ARGUMENT", (call, message)
            assert message.startswith(f"{code}: "), (call, message)
            assert "not valid Unicode" in message
    assert server.healthy()


# -- answers nested deeper than Arrow carries -----------------------------------------------------


TOO_DEEP_ANSWERS = {
    "a cast": "SELECT NULL::INTEGER" + "[]" * (ARROW_LEVELS + 1) + " AS v",
    "a list": "SELECT " + "[" * 70 + "1" + "]" * 70 + " AS v",
    "a struct": "SELECT " + "{'a': " * 70 + "1" + "}" * 70 + " AS v",
}


@pytest.mark.parametrize("sql_text", TOO_DEEP_ANSWERS.values(), ids=TOO_DEEP_ANSWERS.keys())
def test_an_answer_nested_deeper_than_arrow_carries_is_refused_everywhere(
    server: ArrowportProcess, conn: dbapi.Connection, sql_text: str
) -> None:
    message = refused(post(server, {"sql": sql_text}), 422, "unsupported_type")
    assert "nested deeper than Arrow" in message
    for call, (status, message) in flight_refusals(server, {"sql": sql_text}).items():
        assert status == "INVALID_ARGUMENT", (call, message)
        assert message.startswith("unsupported_type: "), (call, message)
    # Prepared: its answer's schema is planned then.
    adbc_status, message = adbc_refusal(conn, sql_text)
    assert adbc_status == AdbcStatusCode.INVALID_ARGUMENT, message
    assert "unsupported_type" in message
    # As deep as Arrow goes is answered.
    deepest = post(server, {"sql": "SELECT NULL::INTEGER" + "[]" * ARROW_LEVELS + " AS v"})
    assert deepest.status_code == 200, deepest.text
    assert server.healthy()


# -- parameters that would take DuckDB long to bind ------------------------------------------------


def test_deeply_nested_parameters_are_refused_at_once(server: ArrowportProcess) -> None:
    # 800 levels took DuckDB 6.8 s per parameter to bind, out of the query timeout's reach.
    deep = nested_list(800)
    started = time.monotonic()
    answer = post(server, {"sql": "SELECT ?, ?, ?", "params": [deep, deep, deep]})
    assert time.monotonic() - started < TIMEOUT_SECONDS
    assert "deeper than 32 levels" in refused(answer, 422, "invalid_value")
    assert answer.json()["parameter"] == 1
    for params in ([nested_object(500)], [1, nested_list(33)], [nested_object(33)]):
        refused(post(server, {"sql": "SELECT ?, ?", "params": params}), 422, "invalid_value")
    for call, (status, message) in flight_refusals(
        server, {"sql": "SELECT ? AS v", "params": [deep]}
    ).items():
        assert status == "INVALID_ARGUMENT", (call, message)
        assert message.startswith("invalid_value: "), (call, message)
    # 32 levels are bound as sent.
    answer = post(server, {"sql": "SELECT ? AS v", "params": [nested_list(32)]})
    assert answer.status_code == 200, answer.text
    assert pa.ipc.open_stream(answer.content).read_all().column("v")[0].as_py() == nested_list(32)
    assert server.healthy()


def test_objects_whose_fields_add_up_past_the_bound_are_refused_at_once(
    server: ArrowportProcess,
) -> None:
    # 4,000 objects of one key each: DuckDB types them as 4,000 structs of 4,000 fields, which
    # took it 18 s to build (60,000 of them, hours) while the query timeout could not stop it.
    objects = [{f"k{i}": i} for i in range(4_000)]
    started = time.monotonic()
    answer = post(server, {"sql": "SELECT len(?) AS n", "params": [objects]})
    assert time.monotonic() - started < TIMEOUT_SECONDS
    message = refused(answer, 422, "invalid_value")
    assert "100,000 values" in message
    assert "16,004,001" in message
    # The same objects, with the same keys, are 8,001 values: bound.
    same_keys = [{"k": i} for i in range(4_000)]
    answer = post(server, {"sql": "SELECT len(?) AS n", "params": [same_keys]})
    assert answer.status_code == 200, answer.text
    assert pa.ipc.open_stream(answer.content).read_all().to_pylist() == [{"n": 4_000}]
    assert server.healthy()


# -- Flight SQL parameters --------------------------------------------------------------------------


def test_flight_sql_parameters_bind_exactly(conn: dbapi.Connection) -> None:
    pairs = pa.array([[("a", 1), ("b", 2)]], pa.map_(pa.string(), pa.int64()))
    assert adbc_value(conn, pairs).as_py() == [("a", 1), ("b", 2)]
    assert pa.types.is_map(adbc_value(conn, pairs).type)
    wide = pa.array([Decimal("123456789012345678901234567890123456.12")], pa.decimal256(40, 2))
    assert adbc_value(conn, wide).as_py() == Decimal("123456789012345678901234567890123456.12")
    nanos = pa.array([1_000_000_001], pa.timestamp("ns"))
    assert adbc_value(conn, nanos).value == 1_000_000_001
    interval = pa.array([pa.MonthDayNano([1, -2, 3_000])], pa.month_day_nano_interval())
    assert adbc_value(conn, interval).as_py() == pa.MonthDayNano([1, -2, 3_000])
    for zone in ("Europe/Paris", "+05:30"):
        stamp = pa.array([1_000_000], pa.timestamp("us", zone))
        assert adbc_value(conn, stamp).cast(pa.int64()).as_py() == 1_000_000


FLIGHT_SQL_REFUSED = {
    "a struct naming a field twice": (
        pa.StructArray.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]),
        "unsupported_type",
    ),
    "a timestamp past year 9999": (pa.array([2**62], pa.timestamp("s")), "invalid_value"),
    "a date past year 9999": (pa.array([2**31 - 1], pa.date32()), "invalid_value"),
    "a duration past Python's": (pa.array([2**62], pa.duration("s")), "invalid_value"),
    "a decimal of 40 digits": (
        pa.array([Decimal("1234567890123456789012345678901234567890")], pa.decimal256(40, 0)),
        "invalid_value",
    ),
    "a duration with nanoseconds": (pa.array([1_001], pa.duration("ns")), "invalid_value"),
    "a timestamp in no known time zone": (
        pa.array([0], pa.timestamp("us", "Nowhere/Zone")),
        "invalid_value",
    ),
}


@pytest.mark.parametrize(
    ("column", "code"), FLIGHT_SQL_REFUSED.values(), ids=FLIGHT_SQL_REFUSED.keys()
)
def test_flight_sql_parameters_that_cannot_be_bound_exactly_are_invalid_arguments(
    server: ArrowportProcess, conn: dbapi.Connection, column: pa.Array, code: str
) -> None:
    status, message = adbc_refusal(conn, "SELECT ? AS v", pa.record_batch({"p": column}))
    assert status == AdbcStatusCode.INVALID_ARGUMENT, message
    assert f"{code}: parameter 1" in message
    assert adbc_value(conn, pa.array([7])).as_py() == 7  # the connection carries on
    assert server.healthy()


def test_a_timestamp_parameter_in_an_unknown_time_zone_says_so(conn: dbapi.Connection) -> None:
    # It was refused as "out of range: parameters bind timestamps from year 1 to 9999".
    column = pa.array([0], pa.timestamp("us", "Nowhere/Zone"))
    status, message = adbc_refusal(conn, "SELECT ? AS v", pa.record_batch({"p": column}))
    assert status == AdbcStatusCode.INVALID_ARGUMENT, message
    assert "time zone 'Nowhere/Zone'" in message
