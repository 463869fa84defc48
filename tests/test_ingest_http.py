"""``POST /stream/{name}``: both body formats, every accepted compression, large and chunked bodies."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator

import httpx
import pyarrow as pa
import pytest
import zstandard

from arrowport.api.body_chunks import BodyChunks
from arrowport.auth import ANONYMOUS
from arrowport.config import load_settings
from arrowport.ingest.streams import Streams
from arrowport.options import IngestRequest
from tests.conftest import (
    ARROW_STREAM,
    batches_ipc,
    ipc_bytes,
    mixed_batches,
    post_binary,
    post_json,
    query,
    stored_order,
    stored_rows,
)

ON_LAKE = True  # every test on the module's server runs on the DuckDB file and on a DuckLake

SEED_FIELDS = ["status", "stream", "rows_processed", "message"]


def sample(rows: int = 5, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"n{i}" for i in ids], pa.string()),
            "score": pa.array([i / 2 for i in ids], pa.float64()),
        }
    )


def assert_success(response: httpx.Response, stream: str, rows: int) -> dict[str, object]:
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    assert list(body)[:4] == SEED_FIELDS
    assert body["status"] == "success"
    assert body["stream"] == stream
    assert body["rows_processed"] == rows
    return body


def rows_of(client: httpx.Client, table: str) -> list[dict[str, object]]:
    return query(client, f'SELECT * FROM "{table}" ORDER BY id').to_pylist()


def compressed_ipc(table: pa.Table, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=codec)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=2)
    return sink.getvalue().to_pybytes()


# -- binary body ---------------------------------------------------------------------------------


def test_binary_body_with_query_params(client: httpx.Client) -> None:
    first, second = sample(4), sample(3, offset=100)
    response = post_binary(
        client,
        "qp_stream",
        ipc_bytes(first),
        params={"table": "qp_table", "mode": "create", "chunk_size": "2"},
    )
    body = assert_success(response, "qp_stream", 4)
    assert body["table"] == "qp_table"
    assert rows_of(client, "qp_table") == first.to_pylist()
    assert client.get("/tables/qp_stream").status_code == 404

    response = post_binary(
        client, "qp_stream", ipc_bytes(second), params={"table": "qp_table", "mode": "replace"}
    )
    assert_success(response, "qp_stream", 3)
    assert rows_of(client, "qp_table") == second.to_pylist()

    response = post_binary(
        client, "qp_stream", ipc_bytes(first), params={"table": "qp_table", "mode": "append"}
    )
    assert_success(response, "qp_stream", 4)
    assert rows_of(client, "qp_table") == first.to_pylist() + second.to_pylist()


def test_binary_body_with_headers(client: httpx.Client) -> None:
    first, second = sample(3), sample(2, offset=10)
    headers = {"X-Arrowport-Table": "hdr_table", "X-Arrowport-Mode": "create"}
    response = post_binary(client, "hdr_stream", ipc_bytes(first), headers=headers)
    assert_success(response, "hdr_stream", 3)
    headers = {
        "X-Arrowport-Table": "hdr_table",
        "X-Arrowport-Mode": "replace",
        "X-Arrowport-Chunk-Size": "1",
    }
    response = post_binary(client, "hdr_stream", ipc_bytes(second), headers=headers)
    assert_success(response, "hdr_stream", 2)
    assert rows_of(client, "hdr_table") == second.to_pylist()
    assert client.get("/tables/hdr_stream").status_code == 404


def test_query_param_wins_over_header(client: httpx.Client) -> None:
    table = sample(2)
    response = post_binary(
        client,
        "prec_stream",
        ipc_bytes(table),
        params={"table": "prec_param"},
        headers={"X-Arrowport-Table": "prec_header"},
    )
    assert_success(response, "prec_stream", 2)
    assert rows_of(client, "prec_param") == table.to_pylist()
    assert client.get("/tables/prec_header").status_code == 404


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_content_encoding(client: httpx.Client, encoding: str) -> None:
    table = sample(50)
    raw = ipc_bytes(table, batch_rows=7)
    body = zstandard.compress(raw) if encoding == "zstd" else gzip.compress(raw)
    response = post_binary(client, f"enc_{encoding}", body, headers={"Content-Encoding": encoding})
    assert_success(response, f"enc_{encoding}", 50)
    assert rows_of(client, f"enc_{encoding}") == table.to_pylist()


def test_large_zstd_content_encoding_streams(client: httpx.Client) -> None:
    table = sample(300_000)
    body = zstandard.ZstdCompressor(level=1).compress(ipc_bytes(table, batch_rows=50_000))
    assert len(body) > 1024**2
    response = post_binary(client, "enc_large", body, headers={"Content-Encoding": "zstd"})
    assert_success(response, "enc_large", 300_000)
    counted = query(client, "SELECT count(*) AS n, sum(id) AS s FROM enc_large").to_pylist()
    assert counted == [{"n": 300_000, "s": sum(range(300_000))}]


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_ipc_buffer_compression(client: httpx.Client, codec: str, body_format: str) -> None:
    table = sample(9)
    data = compressed_ipc(table, codec)
    stream = f"ipcbuf_{codec}_{body_format}"
    if body_format == "binary":
        response = post_binary(client, stream, data)
    else:
        response = post_json(client, stream, data)
    assert_success(response, stream, 9)
    assert rows_of(client, stream) == table.to_pylist()


def _lz4_frame(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "lz4") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_json_data_compressed_frame(client: httpx.Client, codec: str) -> None:
    table = sample(12)
    raw = ipc_bytes(table)
    data = zstandard.compress(raw) if codec == "zstd" else _lz4_frame(raw)
    assert data[:4] != raw[:4]
    stream = f"frame_{codec}"
    response = post_json(
        client, stream, data, config={"compression": {"algorithm": codec, "level": 3}}
    )
    assert_success(response, stream, 12)
    assert rows_of(client, stream) == table.to_pylist()


def test_large_binary_body(client: httpx.Client) -> None:
    table = sample(300_000)
    body = ipc_bytes(table, batch_rows=65_536)
    assert len(body) > 1024**2
    response = post_binary(client, "large_binary", body, params={"chunk_size": "10000"})
    body_json = assert_success(response, "large_binary", 300_000)
    assert body_json["bytes"] == len(body)
    counted = query(
        client, "SELECT count(*) AS n, sum(id) AS s, max(name) AS m FROM large_binary"
    ).to_pylist()
    assert counted == [{"n": 300_000, "s": sum(range(300_000)), "m": "n99999"}]


def test_large_json_body(client: httpx.Client) -> None:
    table = sample(100_000)
    data = ipc_bytes(table)
    assert len(data) > 1024**2
    response = post_json(client, "large_json", data)
    assert_success(response, "large_json", 100_000)
    assert query(client, "SELECT count(*) AS n FROM large_json").to_pylist() == [{"n": 100_000}]


def test_chunked_upload_without_content_length(client: httpx.Client) -> None:
    table = sample(200_000)
    body = ipc_bytes(table, batch_rows=20_000)

    def pieces() -> Iterator[bytes]:
        step = 256 * 1024
        for start in range(0, len(body), step):
            yield body[start : start + step]

    response = client.post(
        "/stream/chunked",
        content=pieces(),
        headers={"Content-Type": ARROW_STREAM},
    )
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_success(response, "chunked", 200_000)
    counted = query(client, "SELECT count(*) AS n, sum(id) AS s FROM chunked").to_pylist()
    assert counted == [{"n": 200_000, "s": sum(range(200_000))}]


def test_small_chunked_upload(client: httpx.Client) -> None:
    table = sample(3)
    body = ipc_bytes(table)

    def pieces() -> Iterator[bytes]:
        yield body[:5]
        yield body[5:]

    response = client.post(
        "/stream/chunked_small", content=pieces(), headers={"Content-Type": ARROW_STREAM}
    )
    assert "content-length" not in response.request.headers
    assert_success(response, "chunked_small", 3)
    assert rows_of(client, "chunked_small") == table.to_pylist()


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_empty_stream(client: httpx.Client, body_format: str) -> None:
    data = ipc_bytes(sample(0))
    stream = f"empty_{body_format}"
    if body_format == "binary":
        response = post_binary(client, stream, data)
    else:
        response = post_json(client, stream, data)
    assert_success(response, stream, 0)
    described = client.get(f"/tables/{stream}")
    if described.status_code == 200:
        assert described.json()["row_count"] == 0
    else:
        assert described.status_code == 404
    # The same schema with rows still lands afterwards.
    assert_success(post_binary(client, stream, ipc_bytes(sample(2))), stream, 2)
    assert rows_of(client, stream) == sample(2).to_pylist()


def test_unconfigured_stream_lands_in_table_named_after_it(client: httpx.Client) -> None:
    table = sample(4)
    response = post_binary(client, "sensor_readings", ipc_bytes(table))
    body = assert_success(response, "sensor_readings", 4)
    assert body["table"] == "sensor_readings"
    described = client.get("/tables/sensor_readings").json()
    assert described["row_count"] == 4
    response = post_json(client, "sensor_readings_json", ipc_bytes(table))
    assert_success(response, "sensor_readings_json", 4)
    assert rows_of(client, "sensor_readings_json") == table.to_pylist()


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_chunk_size_honoured(client: httpx.Client, body_format: str) -> None:
    table = sample(10_000)
    data = ipc_bytes(table)  # one batch of 10,000 rows, sliced to 2,500 rows at a time
    stream = f"chunks_{body_format}"
    if body_format == "binary":
        response = post_binary(client, stream, data, params={"chunk_size": "2500"})
    else:
        response = post_json(client, stream, data, config={"chunk_size": 2500})
    assert_success(response, stream, 10_000)
    assert rows_of(client, stream) == table.to_pylist()


@pytest.mark.parametrize(("asked", "handed"), [(1, 2048), (2047, 2048), (5000, 5000)])
def test_a_tiny_chunk_size_still_hands_duckdb_whole_vectors(asked: int, handed: int) -> None:
    """chunk_size=1 had DuckDB insert a 100,000-row request one row at a time: the writer
    held for 9 s, then DuckDB could run out of memory (a 503, which producers retry)."""
    streams = Streams(load_settings(environ={}))
    options = streams.resolve(IngestRequest("tiny", chunk_size=asked), ANONYMOUS)
    assert (options.chunk_size, options.policy.batch_rows) == (handed, handed)


def test_concurrent_small_ingests_all_land(client: httpx.Client, server_url: str) -> None:
    errors: list[str] = []

    def send(worker: int) -> None:
        with httpx.Client(base_url=server_url, timeout=60) as own:
            for i in range(5):
                data = ipc_bytes(sample(10, offset=worker * 1000 + i * 10))
                response = post_binary(own, "concurrent", data)
                if response.status_code != 200:
                    errors.append(response.text)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    counted = query(client, "SELECT count(*) AS n, count(DISTINCT id) AS d FROM concurrent")
    assert counted.to_pylist() == [{"n": 200, "d": 200}]


@pytest.fixture
def server_url(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


# -- column matching -----------------------------------------------------------------------------


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_columns_matched_by_name_not_position(client: httpx.Client, body_format: str) -> None:
    stream = f"order_{body_format}"
    assert_success(post_binary(client, stream, ipc_bytes(sample(2))), stream, 2)
    shuffled = pa.table(
        {
            "score": pa.array([7.5], pa.float64()),
            "id": pa.array([42], pa.int64()),
            "name": pa.array(["shuffled"], pa.string()),
        }
    )
    if body_format == "binary":
        response = post_binary(client, stream, ipc_bytes(shuffled))
    else:
        response = post_json(client, stream, ipc_bytes(shuffled))
    assert_success(response, stream, 1)
    rows = query(client, f"SELECT id, name, score FROM {stream} WHERE id = 42").to_pylist()
    assert rows == [{"id": 42, "name": "shuffled", "score": 7.5}]
    columns = [c["name"] for c in client.get(f"/tables/{stream}").json()["columns"]]
    assert columns == ["id", "name", "score"]


def test_subset_of_nullable_columns_fills_nulls(client: httpx.Client) -> None:
    assert_success(post_binary(client, "subset", ipc_bytes(sample(1))), "subset", 1)
    partial = pa.table({"name": ["only-name"], "id": pa.array([9], pa.int64())})
    assert_success(post_binary(client, "subset", ipc_bytes(partial)), "subset", 1)
    rows = query(client, "SELECT id, name, score FROM subset WHERE id = 9").to_pylist()
    assert rows == [{"id": 9, "name": "only-name", "score": None}]


def test_types_keep_their_meaning(client: httpx.Client) -> None:
    table = pa.table(
        {
            "id": pa.array([1], pa.int64()),
            "ts": pa.array([1_700_000_000_000_000], pa.timestamp("us", tz="UTC")),
            "amount": pa.array(["12.34"], pa.string()).cast(pa.decimal128(10, 2)),
            "tags": pa.array([["a", "b"]], pa.list_(pa.string())),
            "point": pa.array(
                [{"x": 1, "y": 2}], pa.struct([("x", pa.int32()), ("y", pa.int32())])
            ),
            "kind": pa.array(["red"]).dictionary_encode(),
        }
    )
    assert_success(post_binary(client, "typed", ipc_bytes(table)), "typed", 1)
    types = {c["name"]: c["type"] for c in client.get("/tables/typed").json()["columns"]}
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert types["amount"] == "DECIMAL(10,2)"
    assert types["tags"] == "VARCHAR[]"
    assert types["point"] == "STRUCT(x INTEGER, y INTEGER)"
    assert types["kind"] in ("VARCHAR", "ENUM('red')")
    row = query(client, "SELECT tags, point, kind FROM typed").to_pylist()
    assert row == [{"tags": ["a", "b"], "point": {"x": 1, "y": 2}, "kind": "red"}]


# -- batches joined into row groups for DuckDB -----------------------------------------------------

MIXED_TYPES = {
    "k": "BIGINT",
    "d": "VARCHAR",
    "l": "INTEGER[]",
    "s": "STRUCT(x INTEGER, y VARCHAR)",
    "m": "MAP(VARCHAR, BIGINT)",
}


def post_as(client: httpx.Client, body_format: str, stream: str, data: bytes) -> httpx.Response:
    if body_format == "binary":
        return post_binary(client, stream, data)
    return post_json(client, stream, data)


@pytest.mark.parametrize("body_format", ["binary", "json"])
@pytest.mark.parametrize("count", [40, 5_000], ids=["group_committed", "streamed"])
def test_tiny_batches_land_every_row_in_order_with_their_types(
    client: httpx.Client, target: str, body_format: str, count: int
) -> None:
    # Batches of 7 rows, each with a dictionary of its own: joined into row groups server-side.
    batches = mixed_batches(count, 7)
    stream = f"tiny_{body_format}_{count}"
    body = assert_success(
        post_as(client, body_format, stream, batches_ipc(batches)), stream, count * 7
    )
    assert body["batches"] == count
    assert stored_rows(client, stream, target) == pa.Table.from_batches(batches).to_pylist()
    columns = client.get(f"/tables/{stream}").json()["columns"]
    assert {c["name"]: c["type"] for c in columns} == MIXED_TYPES


@pytest.mark.parametrize("body_format", ["binary", "json"])
def test_one_huge_batch_is_sliced_and_lands_in_order(
    client: httpx.Client, target: str, body_format: str
) -> None:
    (batch,) = mixed_batches(1, 300_000)
    stream = f"huge_batch_{body_format}"
    body = assert_success(
        post_as(client, body_format, stream, batches_ipc([batch])), stream, 300_000
    )
    assert body["batches"] == 1
    back = query(client, f'SELECT * FROM "{stream}" ORDER BY {stored_order(target)}')
    assert back.column("k").to_pylist() == list(range(300_000))
    for start in (0, 122_879, 245_759, 299_997):  # across every slice boundary
        assert back.slice(start, 3).to_pylist() == batch.slice(start, 3).to_pylist()


def test_dictionaries_too_many_to_join_land_as_sent(client: httpx.Client, target: str) -> None:
    # int8 indices cannot address the union of these dictionaries (300 values): the batches are
    # handed to DuckDB as they came.
    batches = [
        pa.record_batch(
            {
                "k": pa.array(range(n * 100, (n + 1) * 100), pa.int64()),
                "d": pa.DictionaryArray.from_arrays(
                    pa.array(range(100), pa.int8()), pa.array([f"v{n}_{i}" for i in range(100)])
                ),
            }
        )
        for n in range(3)
    ]
    assert_success(post_binary(client, "dict_int8", batches_ipc(batches)), "dict_int8", 300)
    assert stored_rows(client, "dict_int8", target) == pa.Table.from_batches(batches).to_pylist()


def test_chunk_size_below_the_row_group_joins_and_slices_to_it(
    client: httpx.Client, target: str
) -> None:
    batches = mixed_batches(30, 1_000)
    response = post_binary(
        client, "chunk_joined", batches_ipc(batches), params={"chunk_size": "2500"}
    )
    assert_success(response, "chunk_joined", 30_000)
    assert stored_rows(client, "chunk_joined", target) == pa.Table.from_batches(batches).to_pylist()


def test_identifiers_are_quoted(client: httpx.Client) -> None:
    table = pa.table({'we"ird col': [1], "select": ["x"], "Robert'); DROP TABLE x;--": [True]})
    response = post_binary(client, "quoted_cols", ipc_bytes(table))
    assert_success(response, "quoted_cols", 1)
    columns = [c["name"] for c in client.get("/tables/quoted_cols").json()["columns"]]
    assert columns == table.column_names
    assert query(client, 'SELECT "we""ird col" AS v FROM quoted_cols').to_pylist() == [{"v": 1}]


def test_table_names_are_case_insensitive(client: httpx.Client) -> None:
    assert_success(
        post_binary(client, "casey", ipc_bytes(sample(2)), params={"table": "MixedCase"}),
        "casey",
        2,
    )
    assert_success(
        post_binary(client, "casey", ipc_bytes(sample(3, 10)), params={"table": "mixedcase"}),
        "casey",
        3,
    )
    assert client.get("/tables/MIXEDCASE").json()["row_count"] == 5


def test_paused_large_upload_does_not_block_others(client: httpx.Client, server_url: str) -> None:
    """While one large body is half-received, health checks, reads and other ingests proceed."""
    body = ipc_bytes(sample(200_000), batch_rows=20_000)
    sent_first = threading.Event()
    resume = threading.Event()
    result: list[httpx.Response] = []

    def pieces() -> Iterator[bytes]:
        yield body[: 1024**2]
        sent_first.set()
        resume.wait(60)
        yield body[1024**2 :]

    def send() -> None:
        with httpx.Client(base_url=server_url, timeout=120) as own:
            result.append(post_binary(own, "paused_large", pieces()))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert sent_first.wait(30)
        assert client.get("/health", timeout=10).status_code == 200
        assert_success(
            post_binary(client, "beside_paused", ipc_bytes(sample(3))), "beside_paused", 3
        )
        assert rows_of(client, "beside_paused") == sample(3).to_pylist()
        assert client.get("/tables/paused_large").status_code == 404  # nothing visible yet
    finally:
        resume.set()
        sender.join(120)
    assert_success(result[0], "paused_large", 200_000)
    assert client.get("/tables/paused_large").json()["row_count"] == 200_000


def test_body_chunks_are_handed_on_without_copies() -> None:
    pending = BodyChunks()
    first = b"x" * 300_000
    pending += first
    pending += b""
    assert len(pending) == 300_000
    assert bytes(pending) is first  # one chunk: the very object uvicorn received
    pending += b"tail"
    assert len(pending) == 300_004
    assert bytes(pending) == first + b"tail"


def empty_dictionary(value_type: pa.DataType, rows: int) -> pa.Array:
    """An all-null categorical column: its dictionary is empty."""
    return pa.DictionaryArray.from_arrays(pa.nulls(rows, pa.int32()), pa.array([], value_type))


# Each column, and whether its values are null (or hold the nulls within them).
EMPTY_DICTIONARIES: dict[str, tuple[Callable[[int], pa.Array], bool]] = {
    "int64": (lambda rows: empty_dictionary(pa.int64(), rows), True),
    "float64": (lambda rows: empty_dictionary(pa.float64(), rows), True),
    "timestamp": (lambda rows: empty_dictionary(pa.timestamp("us"), rows), True),
    "date_in_a_struct": (
        lambda rows: pa.StructArray.from_arrays([empty_dictionary(pa.date32(), rows)], names=["d"]),
        False,
    ),
    "int64_in_a_list": (
        lambda rows: pa.ListArray.from_arrays(
            pa.array(range(rows + 1), pa.int32()), empty_dictionary(pa.int64(), rows)
        ),
        False,
    ),
}


@pytest.mark.parametrize("rows", [3, 400_000], ids=["small", "streamed"])
@pytest.mark.parametrize("case", EMPTY_DICTIONARIES.values(), ids=EMPTY_DICTIONARIES.keys())
def test_an_all_null_categorical_column_lands(
    client: httpx.Client, case: tuple[Callable[[int], pa.Array], bool], rows: int
) -> None:
    """Read from IPC, an empty dictionary of fixed-width values has no values buffer, which
    DuckDB read (and the server died of it)."""
    column, null = case
    table = pa.table({"id": pa.array(range(rows), pa.int64()), "c": column(rows)})
    name = f"empty_dict_{rows}"
    response = post_binary(client, name, ipc_bytes(table), params={"mode": "replace"})
    assert response.status_code == 200, response.text
    assert response.json()["rows_processed"] == rows
    counted = query(client, f"SELECT count(*) AS n, count(c) AS c FROM {name}").to_pylist()
    assert counted == [{"n": rows, "c": 0 if null else rows}]
