"""Arrow's ``arrow.json`` columns: DuckDB takes them as JSON unparsed, so text that is not JSON
is refused (422 ``invalid_value``, Flight INVALID_ARGUMENT) and nothing of the request lands."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import (
    ARROW_STREAM,
    batches_ipc,
    grpc_error,
    ipc_bytes,
    post_binary,
    post_json,
    query,
)
from tests.server import ArrowportProcess
from tests.test_errors import assert_refused, table_state

STORAGES = {"string": pa.string(), "large_string": pa.large_string(), "view": pa.string_view()}
# DuckDB's cast to JSON accepts these (Python's json.loads refuses some: NaN, trailing commas).
VALID = ['{"a": 1}', "[1, 2]", '"text"', "3", "null", "true", " {} ", "NaN", "[1,]", '{"a":1,}']
INVALID = ["{not json", "abc", "", '{"a":1} {"b":2}', "'single'", '{"a":1', "01", "// c\n1"]
# The first batch of a streamed request fills a row group, so it reaches DuckDB on its own.
ROW_GROUP = 122_880


def json_array(values: Sequence[str | None], storage: pa.DataType | None = None) -> pa.Array:
    storage = storage or pa.string()
    return pa.ExtensionArray.from_storage(pa.json_(storage), pa.array(values, storage))


def documents(count: int) -> pa.Table:
    keys = range(count)
    return pa.table(
        {
            "k": pa.array(keys, pa.int64()),
            "j": json_array([f'{{"k": {k}, "tag": "t{k % 7}"}}' for k in keys]),
        }
    )


def chunked(body: bytes) -> Iterator[bytes]:
    step = 256 * 1024
    for start in range(0, len(body), step):
        yield body[start : start + step]


def refused(client: httpx.Client, response: httpx.Response, table: str, before: int | None) -> str:
    body = assert_refused(client, response, 422, "invalid_value", table, before)
    message = str(body["message"])
    assert "not valid JSON" in message, message
    return message


def put(client: flight.FlightClient, table: str, batches: list[pa.RecordBatch]) -> None:
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), batches[0].schema)
    for batch in batches:
        writer.write_batch(batch)
    writer.done_writing()
    reader.read()
    writer.close()


@pytest.fixture
def fc(server: ArrowportProcess) -> Iterator[flight.FlightClient]:
    client = flight.connect(server.flight_url)
    yield client
    client.close()


# -- valid JSON lands ----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES.values(), ids=STORAGES.keys())
def test_valid_json_and_nulls_land_and_read_back(
    client: httpx.Client, storage: pa.DataType
) -> None:
    table = f"json_ok_{storage}"
    values: list[str | None] = [*VALID, None]
    data = pa.table(
        {"k": pa.array(range(len(values)), pa.int64()), "j": json_array(values, storage)}
    )
    response = post_binary(client, table, ipc_bytes(data))
    assert response.status_code == 200, response.text
    assert [c["type"] for c in client.get(f"/tables/{table}").json()["columns"]] == [
        "BIGINT",
        "JSON",
    ]
    rows = query(
        client, f"SELECT j::VARCHAR AS j, json_type(j) AS t FROM {table} ORDER BY k"
    ).to_pylist()
    assert [row["j"] for row in rows] == values
    assert [rows[0]["t"], rows[-1]["t"]] == ["OBJECT", None]


def test_nested_valid_json_lands(client: httpx.Client) -> None:
    docs = json_array(['{"a": 1}', "[2]", None])
    data = pa.table(
        {
            "l": pa.ListArray.from_arrays(pa.array([0, 2, 3], pa.int32()), docs),
            "s": pa.StructArray.from_arrays([docs.slice(0, 2)], ["x"]),
            "m": pa.MapArray.from_arrays(pa.array([0, 1, 2], pa.int32()), ["a", "b"], docs[:2]),
        }
    )
    response = post_binary(client, "json_nested_ok", ipc_bytes(data))
    assert response.status_code == 200, response.text
    columns = client.get("/tables/json_nested_ok").json()["columns"]
    assert [c["type"] for c in columns] == ["JSON[]", "STRUCT(x JSON)", "MAP(VARCHAR, JSON)"]
    rows = query(
        client, "SELECT l[1]->>'$.a' AS a, s.x->>'$[0]' AS x FROM json_nested_ok ORDER BY rowid"
    ).to_pylist()
    assert rows == [{"a": "1", "x": None}, {"a": None, "x": "2"}]


def test_a_null_over_text_that_is_not_json_lands(client: httpx.Client) -> None:
    """A null's bytes are never read: whatever they hold, it lands as NULL."""
    text = pa.array(["[1]", "{not json"], pa.string())
    storage = pa.Array.from_buffers(
        pa.string(), 2, [pa.py_buffer(b"\x01"), *text.buffers()[1:]], null_count=1
    )
    data = pa.table({"j": pa.ExtensionArray.from_storage(pa.json_(pa.string()), storage)})
    response = post_binary(client, "json_masked", ipc_bytes(data))
    assert response.status_code == 200, response.text
    rows = query(client, "SELECT j::VARCHAR AS j FROM json_masked ORDER BY rowid").to_pylist()
    assert rows == [{"j": "[1]"}, {"j": None}]


# -- text that is not JSON is refused ------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES.values(), ids=STORAGES.keys())
@pytest.mark.parametrize("bad", INVALID)
def test_text_that_is_not_json_is_refused(
    client: httpx.Client, bad: str, storage: pa.DataType
) -> None:
    data = pa.table({"k": [1, 2, 3], "payload": json_array(['{"a": 1}', None, bad], storage)})
    response = post_binary(client, "json_bad", ipc_bytes(data))
    message = refused(client, response, "json_bad", None)
    assert f"column 'payload' has a value that is not valid JSON at row 2 ({bad!r})" in message
    assert response.json()["column"] == "payload"
    assert response.json()["row"] == 2


def test_refused_in_an_existing_table_changes_nothing(client: httpx.Client) -> None:
    assert post_binary(client, "json_kept", ipc_bytes(documents(5))).status_code == 200
    bad = pa.table({"k": [9, 10], "j": json_array(["[1]", "{oops"])})
    for response in (
        post_binary(client, "json_kept", ipc_bytes(bad)),
        post_json(client, "json_kept", ipc_bytes(bad)),
    ):
        refused(client, response, "json_kept", 5)


def test_the_excerpt_of_a_long_value_is_short(client: httpx.Client) -> None:
    bad = "{" + "x" * 5_000
    response = post_binary(client, "json_long", ipc_bytes(pa.table({"j": json_array([bad])})))
    message = refused(client, response, "json_long", None)
    assert f"at row 0 ({bad[:40] + '…'!r})" in message, message
    assert len(message) < 200, message


NESTED = {
    "list": pa.ListArray.from_arrays(
        pa.array([0, 1, 3], pa.int32()), json_array(["[1]", "2", "{bad"])
    ),
    "large_list_of_structs": pa.LargeListArray.from_arrays(
        pa.array([0, 1, 2], pa.int64()),
        pa.StructArray.from_arrays([json_array(["1", "nope"]), pa.array([1, 2])], ["d", "n"]),
    ),
    "struct": pa.StructArray.from_arrays([json_array(["{}", "{x"])], ["d"]),
    "map_value": pa.MapArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()), ["a", "b"], json_array(["1", "tru"])
    ),
    "map_key": pa.MapArray.from_arrays(
        pa.array([0, 1, 2], pa.int32()), json_array(['"a"', "b"]), pa.array([1, 2])
    ),
    "fixed_size_list": pa.FixedSizeListArray.from_arrays(json_array(["1", "2", "3", ","]), 2),
    # Out of order: the second row's list comes first.
    "list_view": pa.ListViewArray.from_arrays(
        pa.array([1, 0], pa.int32()), pa.array([1, 1], pa.int32()), json_array(["[,]", "[]"])
    ),
    "run_end_encoded": pa.RunEndEncodedArray.from_arrays(
        pa.array([1, 3], pa.int32()), json_array(["{}", "}"])
    ),
}


@pytest.mark.parametrize("column", NESTED.values(), ids=NESTED.keys())
def test_text_that_is_not_json_nested_is_refused(client: httpx.Client, column: pa.Array) -> None:
    response = post_binary(client, "json_nested_bad", ipc_bytes(pa.table({"c": column})))
    message = refused(client, response, "json_nested_bad", None)
    assert "column 'c' has a value that is not valid JSON at row 1 " in message, message


@pytest.mark.parametrize("streamed", [False, True], ids=["group_committed", "streamed"])
def test_a_bad_value_in_a_later_batch_lands_nothing(client: httpx.Client, streamed: bool) -> None:
    """Streamed, the first batch is a whole row group: DuckDB has inserted it when the second
    is refused, and the transaction takes it back."""
    table = f"json_later_{'streamed' if streamed else 'grouped'}"
    assert post_binary(client, table, ipc_bytes(documents(3))).status_code == 200
    first = documents(ROW_GROUP if streamed else 10).to_batches()[0]
    second = pa.record_batch(
        {"k": [-1, -2, -3], "j": json_array(["[]", None, "{truncated"])}, schema=first.schema
    )
    body = batches_ipc([first, second])
    if streamed:
        assert len(body) > 1024**2
        response = client.post(
            f"/stream/{table}", content=chunked(body), headers={"Content-Type": ARROW_STREAM}
        )
    else:
        response = post_binary(client, table, body)
    message = refused(client, response, table, 3)
    assert f"row {first.num_rows + 2}" in message, message


# -- over Flight ---------------------------------------------------------------------------------


@pytest.mark.parametrize("first_rows", [10, ROW_GROUP], ids=["small", "streamed"])
def test_refused_over_flight_as_invalid_argument(
    client: httpx.Client, fc: flight.FlightClient, first_rows: int
) -> None:
    table = f"json_flight_{first_rows}"
    first = documents(first_rows).to_batches()[0]
    second = pa.record_batch({"k": [0], "j": json_array(["abc"])}, schema=first.schema)
    with pytest.raises(pa.ArrowException) as caught:
        put(fc, table, [first, second])
    status, message = grpc_error(caught.value)
    assert status == "INVALID_ARGUMENT", str(caught.value)
    assert message.startswith("invalid_value: "), message
    assert f"column 'j' has a value that is not valid JSON at row {first_rows} " in message
    assert table_state(client, table) is None
    # The same data without the bad value lands.
    put(fc, table, [first])
    assert table_state(client, table) == first_rows


def test_valid_json_lands_over_flight(client: httpx.Client, fc: flight.FlightClient) -> None:
    put(fc, "json_flight_ok", pa.table({"j": json_array(VALID)}).to_batches())
    rows = query(client, "SELECT j::VARCHAR AS j FROM json_flight_ok ORDER BY rowid")
    assert [row["j"] for row in rows.to_pylist()] == VALID
