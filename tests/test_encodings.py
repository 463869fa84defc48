"""Dictionary and run-end encodings DuckDB 1.5.5 misreads are refused; those it reads land.

Before, through a real server: a dictionary of structs (or of lists, fixed-size lists) failed
with DuckDB's INTERNAL error and left the database invalidated for every client until a
restart; a run-end encoding of a dictionary stored the indices (``['x', 'x', 'y']`` as
``[0, 0, 1]``); an encoding inside a fixed-size list stored the indices, or killed the process.
They are refused (422 ``unsupported_type``) rather than decoded: a few bytes of run ends or
indices can stand for gigabytes of values.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import grpc_error, ipc_bytes, post_binary, query
from tests.server import ArrowportProcess

STRINGS = pa.array(["a", None, "b", "a"])
STRUCTS = pa.array([{"x": 1}, None, {"x": 2}])
RUN_ENDS = pa.array([2, 3, 4], pa.int32())


def ree(values: pa.Array) -> pa.Array:
    return pa.RunEndEncodedArray.from_arrays(RUN_ENDS, values)


def dictionary(values: pa.Array) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 2], pa.int8()), values)


MISREAD = {
    "dictionary_of_structs": dictionary(STRUCTS),
    "dictionary_of_lists": dictionary(pa.array([[1], [2, 3], None])),
    "dictionary_of_fixed_lists": dictionary(
        pa.array([[1, 2], [3, 4], None], pa.list_(pa.int64(), 2))
    ),
    "run_ends_of_a_dictionary": ree(pa.array(["x", "y", None]).dictionary_encode()),
    "run_ends_of_structs": ree(STRUCTS),
    "run_ends_of_lists": ree(pa.array([[1], None, [2, None]])),
    "fixed_list_of_a_dictionary": pa.FixedSizeListArray.from_arrays(
        pa.array(["a", "b", "a", None, "c", "a", "b", "b"]).dictionary_encode(), 2
    ),
    "fixed_list_of_run_ends": pa.FixedSizeListArray.from_arrays(
        pa.RunEndEncodedArray.from_arrays(pa.array([3, 8], pa.int32()), pa.array([1, 2])), 2
    ),
    "list_of_a_dictionary_of_structs": pa.ListArray.from_arrays(
        pa.array([0, 1, 3, 3, 4], pa.int32()), dictionary(STRUCTS)
    ),
    "map_to_a_dictionary_of_structs": pa.MapArray.from_arrays(
        pa.array([0, 2, 2, 3, 4], pa.int32()), pa.array(["k", "l", "m", "n"]), dictionary(STRUCTS)
    ),
    "struct_of_a_fixed_list_of_a_dictionary": pa.StructArray.from_arrays(
        [pa.FixedSizeListArray.from_arrays(pa.array(["p", "q"] * 4).dictionary_encode(), 2)],
        ["f"],
    ),
    # An extension type whose storage holds one (a crash through its storage).
    "tensor_of_a_dictionary": pa.ExtensionArray.from_storage(
        pa.fixed_shape_tensor(pa.dictionary(pa.int8(), pa.int64()), [2]),
        pa.FixedSizeListArray.from_arrays(
            pa.DictionaryArray.from_arrays(pa.array([0, 1, 0, 1], pa.int8()), pa.array([1, 2])), 2
        ),
    ),
}
# Read well as they are: kept encoded.
LANDING = {
    "dictionary_of_strings": STRINGS.dictionary_encode(),
    "run_ends_of_strings": ree(pa.array(["x", None, "y"])),
    "list_of_a_dictionary_of_strings": pa.ListArray.from_arrays(
        pa.array([0, 2, 2, 4], pa.int32()), pa.array(["a", "b", "b", "c"]).dictionary_encode()
    ),
    "struct_of_run_ends": pa.StructArray.from_arrays([ree(pa.array([1, 2, None]))], ["r"]),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("encodings")) as process:
        yield process


@pytest.fixture
def client(server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def table_of(column: pa.Array) -> pa.Table:
    return pa.table({"i": pa.array(range(len(column)), pa.int32()), "c": column})


@pytest.mark.parametrize("case", sorted(MISREAD))
def test_an_encoding_duckdb_misreads_is_refused(client: httpx.Client, case: str) -> None:
    response = post_binary(client, case, ipc_bytes(table_of(MISREAD[case])))
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["code"], body["columns"]) == ("unsupported_type", ["c"])
    assert "without the encoding" in body["message"]
    assert client.get(f"/tables/{case}").status_code == 404
    # The database is still whole: another write and a query work.
    assert post_binary(client, "after", ipc_bytes(pa.table({"n": [1]}))).status_code == 200
    assert query(client, "SELECT 42 AS n").to_pylist() == [{"n": 42}]


@pytest.mark.parametrize("case", sorted(LANDING))
def test_an_encoding_duckdb_reads_lands_as_its_values(client: httpx.Client, case: str) -> None:
    column = LANDING[case]
    response = post_binary(client, case, ipc_bytes(table_of(column)))
    assert response.status_code == 200, response.text
    back = query(client, f"SELECT c FROM {case} ORDER BY i").column("c").to_pylist()
    assert back == column.to_pylist()


def _sliced_cases() -> dict[str, pa.Array]:
    rows = 10_000
    runs = pa.RunEndEncodedArray.from_arrays(
        pa.array(range(100, rows + 1, 100), pa.int32()),
        pa.array([None if i % 3 == 0 else i for i in range(rows // 100)], pa.int64()),
    )
    labels = pa.array([f"l{i % 7}" for i in range(rows * 2)])
    return {
        "struct_of_run_ends": pa.StructArray.from_arrays([runs], ["r"]),
        "list_of_a_dictionary": pa.ListArray.from_arrays(
            pa.array(range(0, rows * 2 + 1, 2), pa.int32()), labels.dictionary_encode()
        ),
    }


@pytest.mark.parametrize("case", ["struct_of_run_ends", "list_of_a_dictionary"])
def test_an_encoding_nested_in_a_sliced_batch_lands_as_its_values(
    client: httpx.Client, case: str
) -> None:
    """The server slices a request's batches (chunk_size, row groups); DuckDB 1.5.5 misreads a
    run-end encoding or a dictionary with null indices inside a sliced list or struct, with no
    error: most of a struct of run ends' rows landed NULL."""
    column = _sliced_cases()[case]
    name = f"sliced_{case}"
    sent = ipc_bytes(table_of(column))
    response = post_binary(client, name, sent, params={"chunk_size": "2500"})
    assert response.status_code == 200, response.text
    back = query(client, f"SELECT c FROM {name} ORDER BY i").column("c").to_pylist()
    assert back == column.to_pylist()


@pytest.mark.parametrize("shape", ["list", "map"])
def test_a_null_index_of_a_dictionary_in_a_list_is_refused(
    client: httpx.Client, shape: str
) -> None:
    """DuckDB 1.5.5 corrupts its heap reading a null index of a dictionary inside a list or a
    map's items (malloc(): corrupted top size): the process died."""
    labels = pa.array([None if i % 5 == 0 else f"l{i % 7}" for i in range(4_000)])
    offsets = pa.array(range(0, 4_001, 2), pa.int32())
    column = (
        pa.ListArray.from_arrays(offsets, labels.dictionary_encode())
        if shape == "list"
        else pa.MapArray.from_arrays(
            offsets, pa.array(["k", "v"] * 2_000), labels.dictionary_encode()
        )
    )
    name = f"null_index_{shape}"
    response = post_binary(client, name, ipc_bytes(table_of(column)))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_value"
    assert client.get(f"/tables/{name}").status_code == 404
    assert query(client, "SELECT 42 AS n").to_pylist() == [{"n": 42}]


def test_flight_puts_refuse_them_too(server: ArrowportProcess, client: httpx.Client) -> None:
    sent = table_of(MISREAD["dictionary_of_structs"])
    with flight.connect(server.flight_url) as conn:
        descriptor = flight.FlightDescriptor.for_path("flight_structs")
        writer, _ = conn.do_put(descriptor, sent.schema)

        def put() -> None:
            writer.write_table(sent)
            writer.close()

        with pytest.raises((flight.FlightError, pa.ArrowInvalid)) as caught:
            put()
    code, message = grpc_error(caught.value)
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("unsupported_type")
    assert client.get("/tables/flight_structs").status_code == 404


def _other_interval(unit: int) -> bytes:
    """An IPC stream of one interval column of Arrow's ``unit`` (0: months, 1: days and
    milliseconds), which pyarrow reads but cannot build: a month_day_nano one, retyped."""
    table = pa.table({"iv": pa.array([(1, 2, 3_000_000)], pa.month_day_nano_interval())})
    body = bytearray(ipc_bytes(table))
    length = struct.unpack_from("<i", body, 4)[0]
    for pos in range(8, 8 + length - 1):
        if body[pos] == 2 and body[pos + 1] == 0:  # IntervalUnit.MONTH_DAY_NANO
            retyped = bytearray(body)
            retyped[pos] = unit
            try:
                schema = pa.ipc.read_schema(pa.py_buffer(bytes(retyped[: 8 + length])))
            except (pa.ArrowException, OSError):
                continue
            if "month_day_nano" not in str(schema.field(0).type):
                return bytes(retyped)
    raise AssertionError("no interval unit found in the schema message")


@pytest.mark.parametrize("unit", [0, 1], ids=["month_interval", "day_time_interval"])
def test_intervals_duckdb_would_misread_are_refused(client: httpx.Client, unit: int) -> None:
    """A day_time interval of 1 day 2 ms was stored as about 272 years."""
    response = post_binary(client, f"interval_{unit}", _other_interval(unit))
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "unsupported_type"
    assert "month_day_nano" in response.json()["message"]
    assert client.get(f"/tables/interval_{unit}").status_code == 404
