"""Every bad input gets a clear 4xx with a stable ``code``, and leaves the data untouched."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import zstandard

from tests.conftest import ARROW_STREAM, ipc_bytes, post_binary, post_json, query
from tests.server import ArrowportProcess

ON_LAKE = True  # every test on the module's server runs on the DuckDB file and on a DuckLake

SMALL_LIMIT = 64 * 1024


def sample(rows: int = 3, offset: int = 0) -> pa.Table:
    ids = list(range(offset, offset + rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"n{i}" for i in ids], pa.string()),
        }
    )


def table_state(client: httpx.Client, table: str) -> int | None:
    """Row count of ``table``, or None when it does not exist."""
    response = client.get(f"/tables/{table}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    count: int = response.json()["row_count"]
    return count


def seed_table(client: httpx.Client, table: str, rows: int = 3) -> int:
    """Land ``rows`` rows in ``table``; returns its row count afterwards."""
    response = client.post(
        f"/stream/{table}", content=ipc_bytes(sample(rows)), headers={"Content-Type": ARROW_STREAM}
    )
    assert response.status_code == 200, response.text
    count = table_state(client, table)
    assert count is not None
    assert count >= rows
    return count


def assert_refused(
    client: httpx.Client,
    response: httpx.Response,
    status: int,
    code: str | tuple[str, ...],
    table: str,
    before: int | None,
) -> dict[str, object]:
    """The response is a clean error, the server is alive and ``table`` did not change."""
    assert "Traceback" not in response.text
    assert response.status_code != 500, response.text
    assert response.status_code == status, response.text
    body: dict[str, object] = response.json()
    assert body["status"] == "error"
    codes = (code,) if isinstance(code, str) else code
    assert body["code"] in codes, body
    assert isinstance(body["message"], str)
    assert body["message"]
    assert client.get("/health").status_code == 200
    assert table_state(client, table) == before
    return body


def large_ipc(rows: int = 200_000) -> bytes:
    data = ipc_bytes(sample(rows), batch_rows=20_000)
    assert len(data) > 1024**2
    return data


# -- malformed bodies ----------------------------------------------------------------------------


def test_malformed_json(client: httpx.Client) -> None:
    before = seed_table(client, "err_json")
    response = client.post(
        "/stream/err_json",
        content=b'{"batch": {"data": ',
        headers={"Content-Type": "application/json"},
    )
    body = assert_refused(client, response, 400, "invalid_json", "err_json", before)
    assert body["stream"] == "err_json"


def test_a_json_number_too_long_for_python_is_invalid_json(client: httpx.Client) -> None:
    """int() refuses more than 4,300 digits: the ValueError was a 500."""
    body = b'{"config": {"chunk_size": 1' + b"0" * 5_000 + b'}, "batch": {"data": ""}}'
    response = client.post(
        "/stream/err_long_number", content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(client, response, 400, "invalid_json", "err_long_number", None)
    assert "too long" in response.json()["message"]


def test_a_lone_surrogate_quoted_in_an_error_is_escaped(client: httpx.Client) -> None:
    """A message quoting a JSON string that holds a lone surrogate (\\ud800) could not be
    encoded as UTF-8: a 500, the connection reset."""
    body = b'{"config": {"target_table": "t\\ud800"}, "batch": {"data": ""}}'
    response = client.post(
        "/stream/err_surrogate", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] in ("invalid_name", "invalid_options")
    assert client.get("/health").status_code == 200


def test_json_missing_batch_is_invalid_options(client: httpx.Client) -> None:
    response = client.post("/stream/err_nobatch", json={"config": {}})
    assert_refused(client, response, 422, "invalid_options", "err_nobatch", None)


def test_bad_base64(client: httpx.Client) -> None:
    before = seed_table(client, "err_b64")
    response = client.post("/stream/err_b64", json={"batch": {"data": "not base64 at all!!"}})
    assert_refused(client, response, 400, "invalid_base64", "err_b64", before)


def test_bad_base64_schema(client: httpx.Client) -> None:
    data = base64.b64encode(ipc_bytes(sample())).decode()
    response = client.post(
        "/stream/err_b64s", json={"batch": {"data": data, "arrow_schema": "%%%"}}
    )
    assert_refused(client, response, 400, "invalid_base64", "err_b64s", None)


def test_garbage_ipc_binary(client: httpx.Client) -> None:
    before = seed_table(client, "err_garbage")
    response = post_binary(client, "err_garbage", b"this is not arrow data at all" * 10)
    assert_refused(client, response, 400, "invalid_ipc", "err_garbage", before)


def test_garbage_ipc_json(client: httpx.Client) -> None:
    response = post_json(client, "err_garbage_json", b"\x00\x01garbage" * 50)
    assert_refused(client, response, 400, "invalid_ipc", "err_garbage_json", None)


def test_garbage_ipc_large(client: httpx.Client) -> None:
    before = seed_table(client, "err_garbage_large")
    body = bytes(range(256)) * 8192  # 2 MiB
    response = post_binary(client, "err_garbage_large", body)
    assert_refused(client, response, 400, "invalid_ipc", "err_garbage_large", before)


def ipc_file_bytes(table: pa.Table) -> bytes:
    """``table`` in the Arrow IPC file format (Feather v2), which starts with ``ARROW1``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=20_000)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("size", ["small", "large"])
def test_an_ipc_file_is_told_to_be_sent_as_a_stream(client: httpx.Client, size: str) -> None:
    table = f"err_ipc_file_{size}"
    before = seed_table(client, table)
    body = ipc_file_bytes(sample(3 if size == "small" else 200_000))
    assert body.startswith(b"ARROW1")
    assert (len(body) > 1024**2) == (size == "large")
    response = post_binary(client, table, body)
    refused = assert_refused(client, response, 400, "invalid_ipc", table, before)
    assert "Arrow IPC file format" in str(refused["message"])
    assert "send an IPC stream" in str(refused["message"])


@pytest.mark.parametrize("size", ["small", "large"])
def test_ipc_cut_mid_message(client: httpx.Client, size: str) -> None:
    table = f"err_cut_{size}"
    before = seed_table(client, table)
    full = ipc_bytes(sample(50), batch_rows=10) if size == "small" else large_ipc()
    response = post_binary(client, table, full[: len(full) // 2 + 3])
    assert_refused(client, response, 400, ("truncated_stream", "invalid_ipc"), table, before)


@pytest.mark.parametrize("size", ["small", "large"])
def test_ipc_missing_end_of_stream(client: httpx.Client, size: str) -> None:
    table = f"err_eos_{size}"
    before = seed_table(client, table)
    full = ipc_bytes(sample(50), batch_rows=10) if size == "small" else large_ipc()
    assert full[-8:] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    response = post_binary(client, table, full[:-8])
    body = assert_refused(client, response, 400, "truncated_stream", table, before)
    assert "end-of-stream" in str(body["message"])


def test_ipc_missing_end_of_stream_json(client: httpx.Client) -> None:
    before = seed_table(client, "err_eos_json")
    response = post_json(client, "err_eos_json", ipc_bytes(sample(20), batch_rows=5)[:-8])
    assert_refused(client, response, 400, "truncated_stream", "err_eos_json", before)


def test_ipc_missing_end_of_stream_chunked(client: httpx.Client) -> None:
    before = seed_table(client, "err_eos_chunked")
    full = large_ipc()[:-8]

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(full), 100_000):
            yield full[start : start + 100_000]

    response = client.post(
        "/stream/err_eos_chunked", content=pieces(), headers={"Content-Type": ARROW_STREAM}
    )
    assert_refused(client, response, 400, "truncated_stream", "err_eos_chunked", before)


def test_bytes_after_end_of_stream(client: httpx.Client) -> None:
    response = post_binary(client, "err_trailing", ipc_bytes(sample()) + b"trailing")
    assert_refused(client, response, 400, "invalid_ipc", "err_trailing", None)


# -- media types and encodings -------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
def test_wrong_media_type(client: httpx.Client, content_type: str | None) -> None:
    before = seed_table(client, "err_media")
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = client.post("/stream/err_media", content=ipc_bytes(sample()), headers=headers)
    assert_refused(client, response, 415, "unsupported_media_type", "err_media", before)


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd, gzip"])
def test_bad_content_encoding(client: httpx.Client, encoding: str) -> None:
    before = seed_table(client, "err_encoding")
    response = post_binary(
        client, "err_encoding", ipc_bytes(sample()), headers={"Content-Encoding": encoding}
    )
    assert_refused(client, response, 415, "unsupported_media_type", "err_encoding", before)


@pytest.mark.parametrize("size", ["small", "large"])
def test_corrupt_zstd_body(client: httpx.Client, size: str) -> None:
    table = f"err_zstd_{size}"
    before = seed_table(client, table)
    junk = b"\x28\xb5\x2f\xfd" + bytes(range(256)) * (8 if size == "small" else 8192)
    response = post_binary(client, table, junk, headers={"Content-Encoding": "zstd"})
    assert_refused(client, response, 400, "invalid_compression", table, before)


def test_truncated_zstd_body(client: httpx.Client) -> None:
    before = seed_table(client, "err_zstd_cut")
    body = zstandard.compress(ipc_bytes(sample(1000)))
    response = post_binary(
        client, "err_zstd_cut", body[: len(body) // 2], headers={"Content-Encoding": "zstd"}
    )
    assert_refused(
        client,
        response,
        400,
        ("invalid_compression", "truncated_stream", "invalid_ipc"),
        "err_zstd_cut",
        before,
    )


def test_corrupt_gzip_body(client: httpx.Client) -> None:
    response = post_binary(
        client, "err_gzip", b"\x1f\x8b" + b"\x00" * 100, headers={"Content-Encoding": "gzip"}
    )
    assert_refused(client, response, 400, "invalid_compression", "err_gzip", None)


def test_corrupt_zstd_frame_in_json(client: httpx.Client) -> None:
    response = post_json(client, "err_zstd_json", b"\x28\xb5\x2f\xfd" + b"\x07" * 300)
    assert_refused(client, response, 400, "invalid_compression", "err_zstd_json", None)


# -- names and options ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bad;name", 'a"b', "x y", "1abc", "a" * 64])
def test_invalid_table_name_query_param(client: httpx.Client, name: str) -> None:
    response = post_binary(client, "err_name", ipc_bytes(sample()), params={"table": name})
    body = assert_refused(client, response, 400, "invalid_name", "err_name", None)
    assert name in str(body["message"])


@pytest.mark.parametrize("name", ["bad;name", 'a"b'])
def test_invalid_table_name_json(client: httpx.Client, name: str) -> None:
    response = post_json(
        client, "err_name_json", ipc_bytes(sample()), config={"target_table": name}
    )
    assert_refused(client, response, 400, "invalid_name", "err_name_json", None)


def test_invalid_stream_name(client: httpx.Client) -> None:
    response = post_binary(client, "bad;stream", ipc_bytes(sample()))
    assert_refused(client, response, 400, "invalid_name", "err_unused", None)
    assert client.post("/query", json={"sql": "SELECT 1"}).status_code == 200


@pytest.mark.parametrize("mode", ["upsert", "APPEND!", ""])
def test_invalid_mode_query_param(client: httpx.Client, mode: str) -> None:
    before = seed_table(client, "err_mode")
    response = post_binary(client, "err_mode", ipc_bytes(sample()), params={"mode": mode})
    # An empty mode is refused too, not taken as no mode: a parameter sent empty is a mistake.
    body = assert_refused(client, response, 422, "invalid_options", "err_mode", before)
    assert mode in str(body["message"])


def test_invalid_mode_header(client: httpx.Client) -> None:
    response = post_binary(
        client, "err_mode_hdr", ipc_bytes(sample()), headers={"X-Arrowport-Mode": "merge"}
    )
    assert_refused(client, response, 422, "invalid_options", "err_mode_hdr", None)


@pytest.mark.parametrize(
    ("params", "headers", "config", "field"),
    [
        ({"table": "err_cfg_a"}, {}, {"target_table": "err_cfg_b"}, "table"),
        ({}, {"X-Arrowport-Table": "err_cfg_a"}, {"target_table": "err_cfg_b"}, "table"),
        ({"mode": "create"}, {}, {"mode": "append"}, "mode"),
        ({"key_columns": "k"}, {}, {"mode": "upsert", "key_columns": ["k", "v"]}, "key_columns"),
    ],
    ids=["table", "table-header", "mode", "key_columns"],
)
def test_an_option_given_in_the_request_and_in_the_json_config_must_agree(
    client: httpx.Client,
    params: dict[str, str],
    headers: dict[str, str],
    config: dict[str, object],
    field: str,
) -> None:
    """Which of two differing values was meant cannot be guessed: nothing lands anywhere."""
    batch = {"data": base64.b64encode(ipc_bytes(sample())).decode()}
    response = client.post(
        "/stream/err_cfg", params=params, headers=headers, json={"config": config, "batch": batch}
    )
    body = assert_refused(client, response, 422, "invalid_options", "err_cfg_b", None)
    assert body["field"] == field
    assert table_state(client, "err_cfg_a") is None
    assert table_state(client, "err_cfg") is None


@pytest.mark.parametrize(
    ("table", "params", "config"),
    [
        ("err_cfg_case", {"table": "Err_Cfg_Case"}, {"target_table": "err_cfg_case"}),
        ("err_cfg_main", {"table": "main.err_cfg_main"}, {"target_table": "err_cfg_main"}),
        ("err_cfg_mode", {"table": "err_cfg_mode", "mode": "create"}, {"mode": "create"}),
        (
            "err_cfg_keys",
            {"table": "err_cfg_keys", "key_columns": "NAME,id"},
            {"mode": "upsert", "key_columns": ["id", "name"]},
        ),
    ],
    ids=["table-case", "main-schema", "mode", "key_columns"],
)
def test_an_option_given_both_ways_alike_is_no_conflict(
    client: httpx.Client, table: str, params: dict[str, str], config: dict[str, object]
) -> None:
    """The same table however spelt (DuckDB's names ignore case; main.t is t), and the same
    upsert keys in any order or case."""
    if table == "err_cfg_keys":
        seed_table(client, table)
    batch = {"data": base64.b64encode(ipc_bytes(sample())).decode()}
    response = client.post(
        "/stream/err_cfg_alike", params=params, json={"config": config, "batch": batch}
    )
    assert response.status_code == 200, response.text
    assert table_state(client, table) == sample().num_rows


def test_invalid_mode_json(client: httpx.Client) -> None:
    response = post_json(client, "err_mode_json", ipc_bytes(sample()), config={"mode": "merge"})
    assert_refused(client, response, 422, "invalid_options", "err_mode_json", None)


@pytest.mark.parametrize(
    ("stream", "params", "config", "field"),
    [
        ("err_upo_append", {"mode": "append", "key_columns": "id"}, None, "key_columns"),
        ("err_upo_default", {"key_columns": "id"}, None, "key_columns"),  # the stream's: append
        (
            "err_upo_replace",
            {"mode": "replace", "duplicate_keys": "last_wins"},
            None,
            "duplicate_keys",
        ),
        ("err_upo_error", {"duplicate_keys": "error"}, None, "duplicate_keys"),
        ("err_upo_json", {}, {"mode": "create", "key_columns": ["id"]}, "key_columns"),
    ],
)
def test_upsert_options_for_another_mode_are_refused(
    client: httpx.Client,
    stream: str,
    params: dict[str, str],
    config: dict[str, object] | None,
    field: str,
) -> None:
    before = seed_table(client, stream)
    if config is None:
        response = post_binary(client, stream, ipc_bytes(sample()), params=params)
    else:
        response = post_json(client, stream, ipc_bytes(sample()), config=config)
    body = assert_refused(client, response, 422, "invalid_options", stream, before)
    assert body["field"] == field
    assert "mode upsert only" in str(body["message"])
    # With mode upsert the same options land (the keys are there: no row is added).
    upsert = post_binary(
        client,
        stream,
        ipc_bytes(sample()),
        params={"mode": "upsert", "key_columns": "id", "duplicate_keys": "last_wins"},
    )
    assert upsert.status_code == 200, upsert.text
    assert table_state(client, stream) == before


@pytest.mark.parametrize("chunk_size", ["0", "-5", "many"])
def test_invalid_chunk_size(client: httpx.Client, chunk_size: str) -> None:
    response = post_binary(
        client, "err_chunk", ipc_bytes(sample()), params={"chunk_size": chunk_size}
    )
    assert_refused(client, response, 422, "invalid_options", "err_chunk", None)


def test_invalid_chunk_size_header(client: httpx.Client) -> None:
    response = post_binary(
        client, "err_chunk_hdr", ipc_bytes(sample()), headers={"X-Arrowport-Chunk-Size": "abc"}
    )
    body = assert_refused(client, response, 422, "invalid_options", "err_chunk_hdr", None)
    assert "chunk" in str(body["message"]).lower()


def test_mode_create_on_existing_table(client: httpx.Client) -> None:
    before = seed_table(client, "err_exists")
    response = post_binary(client, "err_exists", ipc_bytes(sample()), params={"mode": "create"})
    body = assert_refused(client, response, 409, "table_exists", "err_exists", before)
    assert "err_exists" in str(body["message"])


# -- schemas -------------------------------------------------------------------------------------


def test_schema_conflict_unknown_column(client: httpx.Client) -> None:
    before = seed_table(client, "err_unknown_col")
    extra = sample().append_column("surprise_col", pa.array([1, 2, 3]))
    response = post_binary(client, "err_unknown_col", ipc_bytes(extra))
    body = assert_refused(client, response, 409, "schema_conflict", "err_unknown_col", before)
    assert "surprise_col" in str(body["message"])


def test_schema_conflict_incompatible_type(client: httpx.Client) -> None:
    before = seed_table(client, "err_type")
    wrong = pa.table({"id": ["not", "a", "number"], "name": ["a", "b", "c"]})
    response = post_binary(client, "err_type", ipc_bytes(wrong))
    body = assert_refused(client, response, 409, "schema_conflict", "err_type", before)
    assert "id" in str(body["message"])


def test_schema_conflict_missing_not_null_column(client: httpx.Client) -> None:
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("name", pa.string())])
    first = pa.table({"id": [1, 2], "name": ["a", "b"]}, schema=schema)
    response = post_binary(client, "err_notnull", ipc_bytes(first))
    assert response.status_code == 200, response.text
    columns = client.get("/tables/err_notnull").json()["columns"]
    assert columns[0] == {"name": "id", "type": "BIGINT", "nullable": False}
    response = post_binary(client, "err_notnull", ipc_bytes(pa.table({"name": ["c"]})))
    body = assert_refused(client, response, 409, "schema_conflict", "err_notnull", 2)
    assert "id" in str(body["message"])


def test_null_into_not_null_column(client: httpx.Client) -> None:
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    response = post_binary(client, "err_nullval", ipc_bytes(pa.table({"id": [1]}, schema=schema)))
    assert response.status_code == 200, response.text
    nullable = pa.table({"id": pa.array([2, None], pa.int64())})
    response = post_binary(client, "err_nullval", ipc_bytes(nullable))
    assert_refused(
        client, response, 409, ("schema_conflict", "constraint_violation"), "err_nullval", 1
    )


def test_schema_mismatch_between_arrow_schema_and_data(client: httpx.Client) -> None:
    declared = pa.schema([pa.field("other", pa.string())])
    response = post_json(client, "err_mismatch", ipc_bytes(sample()), schema=declared)
    assert_refused(client, response, 400, "schema_mismatch", "err_mismatch", None)


def test_arrow_schema_not_a_schema(client: httpx.Client) -> None:
    data = base64.b64encode(ipc_bytes(sample())).decode()
    junk = base64.b64encode(b"definitely not a schema").decode()
    response = client.post(
        "/stream/err_schema_junk", json={"batch": {"data": data, "arrow_schema": junk}}
    )
    assert_refused(client, response, 400, "invalid_ipc", "err_schema_junk", None)


def test_unsupported_type(client: httpx.Client) -> None:
    table = pa.table({"id": [1, 2], "half_col": pa.array([1.5, 2.5], pa.float16())})
    response = post_binary(client, "err_float16", ipc_bytes(table))
    body = assert_refused(client, response, 422, "unsupported_type", "err_float16", None)
    assert "half_col" in str(body["message"])


def test_unsupported_type_on_existing_table(client: httpx.Client) -> None:
    before = seed_table(client, "err_float16_existing")
    table = sample().append_column("half_col", pa.array([1.5, 2.5, 3.5], pa.float16()))
    response = post_binary(client, "err_float16_existing", ipc_bytes(table))
    body = assert_refused(client, response, 422, "unsupported_type", "err_float16_existing", before)
    assert "half_col" in str(body["message"])


@pytest.mark.parametrize("pad", [10, 2_000_000], ids=["small", "streamed"])
def test_a_json_body_that_repeats_a_key_is_refused_whatever_its_size(
    client: httpx.Client, pad: int
) -> None:
    """A repeated key would otherwise keep its last value when the body is parsed whole (a
    small one) and be refused when it is read as it arrives (a large one)."""
    data = base64.b64encode(ipc_bytes(pa.table({"a": [1], "pad": ["x" * pad]}))).decode()
    config = '"config": {"target_table": "err_rep_a"}'
    for body in (
        f'{{{config}, "batch": {{"data": "{data}"}}, "config": {{"target_table": "err_rep_b"}}}}',
        f'{{{config}, "batch": {{"data": "{data}", "data": "{data}"}}}}',
    ):
        response = client.post(
            "/stream/err_rep", content=body, headers={"Content-Type": "application/json"}
        )
        message = assert_refused(client, response, 422, "invalid_options", "err_rep_a", None)
        assert "repeats the key" in str(message["message"])
        assert table_state(client, "err_rep_b") is None


def duckdb_opaque(name: str, storage: pa.Array) -> pa.Array:
    return pa.ExtensionArray.from_storage(pa.opaque(storage.type, name, "DuckDB"), storage)


OPAQUE_COLUMNS = {
    # A malformed BIGNUM landed, and the first query that computed with it killed the server.
    "bignum": duckdb_opaque("bignum", pa.array([b"\x00"])),
    "bit": duckdb_opaque("bit", pa.array([b"\xff"])),
    "hugeint_too_short": duckdb_opaque("hugeint", pa.array([1], pa.int8())),
    "time_tz_in_a_list": pa.ListArray.from_arrays(
        [0, 1], duckdb_opaque("time_tz", pa.array([b"\xff" * 8]))
    ),
}


@pytest.mark.parametrize("column", OPAQUE_COLUMNS.values(), ids=OPAQUE_COLUMNS.keys())
def test_duckdb_own_encodings_are_refused(client: httpx.Client, column: pa.Array) -> None:
    """DuckDB reads an Arrow opaque type of vendor DuckDB as its own type, bytes unchecked."""
    table = pa.table({"id": [1], "c": column})
    response = post_binary(client, "err_opaque", ipc_bytes(table))
    body = assert_refused(client, response, 422, "unsupported_type", "err_opaque", None)
    assert "opaque" in str(body["message"])


def test_an_opaque_type_of_another_vendor_lands_as_bytes(client: httpx.Client) -> None:
    data = pa.ExtensionArray.from_storage(
        pa.opaque(pa.binary(), "bignum", "elsewhere"), pa.array([b"\x00"])
    )
    response = post_binary(client, "other_opaque", ipc_bytes(pa.table({"c": data})))
    assert response.status_code == 200, response.text
    assert query(client, "SELECT typeof(c) AS t FROM other_opaque").to_pylist() == [{"t": "BLOB"}]


@pytest.mark.parametrize(
    "dates",
    [
        pa.array([0, 86_400_000 * 2**31], pa.date64()),  # was wrapped into 5877642 BC
        pa.array([-86_400_000 * (2**31 + 1)], pa.date64()),
    ],
    ids=["date64_past_the_range", "date64_before_it"],
)
def test_dates_beyond_duckdbs_range_are_refused(client: httpx.Client, dates: pa.Array) -> None:
    before = seed_dates(client)
    response = post_binary(client, "err_dates", ipc_bytes(pa.table({"d": dates})))
    body = assert_refused(client, response, 422, "invalid_value", "err_dates", before)
    assert "DATE range" in str(body["message"])


def seed_dates(client: httpx.Client) -> int:
    days = [0, 19_000]
    table = pa.table({"d": pa.array([day * 86_400_000 for day in days], pa.date64())})
    response = post_binary(client, "err_dates", ipc_bytes(table))
    assert response.status_code == 200, response.text
    count = table_state(client, "err_dates")
    assert count is not None
    return count


@pytest.mark.parametrize("names", [["Value", "value"], ["dup", "dup"]])
def test_duplicate_column_names(client: httpx.Client, names: list[str]) -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=names)
    response = post_binary(client, "err_dup", ipc_bytes(table))
    body = assert_refused(client, response, 400, "invalid_name", "err_dup", None)
    assert names[1] in str(body["message"])


def test_column_case_differs_from_existing_table(client: httpx.Client) -> None:
    """DuckDB column names are case-insensitive: ``ID`` lands in ``id``."""
    before = seed_table(client, "err_case")
    table = pa.table({"ID": pa.array([77], pa.int64()), "Name": ["upper"]})
    response = post_binary(client, "err_case", ipc_bytes(table))
    assert response.status_code == 200, response.text
    assert table_state(client, "err_case") == before + 1
    rows = query(client, "SELECT id, name FROM err_case WHERE id = 77").to_pylist()
    assert rows == [{"id": 77, "name": "upper"}]


def test_names_differing_only_in_non_ascii_case_are_different_columns(
    client: httpx.Client,
) -> None:
    """DuckDB folds the case of A-Z alone: É and é (or K and the Kelvin sign) are two names. As
    one, an é into a table of É was a 422 from DuckDB's binder, even under evolve."""
    first = pa.table({"É": pa.array([1], pa.int64())})
    assert post_binary(client, "err_accents", ipc_bytes(first)).status_code == 200
    second = pa.table({"é": pa.array([2], pa.int64())})
    response = post_binary(client, "err_accents", ipc_bytes(second))
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "schema_conflict"
    evolve = {"schema_policy": "evolve"}
    response = post_binary(client, "err_accents", ipc_bytes(second), params=evolve)
    assert response.status_code == 200, response.text
    both = pa.table({"É": pa.array([3], pa.int64()), "é": pa.array([4], pa.int64())})
    assert post_binary(client, "err_accents", ipc_bytes(both)).status_code == 200
    rows = query(client, 'SELECT "É" AS upper, "é" AS lower FROM err_accents ORDER BY 1, 2')
    assert rows.to_pylist() == [
        {"upper": 1, "lower": None},
        {"upper": 3, "lower": 4},
        {"upper": None, "lower": 2},
    ]


def test_failed_request_is_atomic(client: httpx.Client) -> None:
    """A stream whose later batch conflicts lands nothing, not its first batches."""
    before = seed_table(client, "err_atomic")
    good = sample(100).to_batches()[0]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, good.schema) as writer:
        writer.write_batch(good)
        writer.write_batch(good)
    data = sink.getvalue().to_pybytes()
    # Cut inside the second batch: the first batch is whole and must still not land.
    response = post_binary(client, "err_atomic", data[: len(data) - 40])
    assert_refused(client, response, 400, ("truncated_stream", "invalid_ipc"), "err_atomic", before)


# -- limits --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {"limits": {"max_body_bytes": SMALL_LIMIT, "max_json_body_bytes": SMALL_LIMIT}}
    with ArrowportProcess(Path(tmp_path_factory.mktemp("small")), config=config) as process:
        yield process


@pytest.fixture
def small_client(small_server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=small_server.url, timeout=60) as http:
        yield http


def test_oversized_body_with_content_length(small_client: httpx.Client) -> None:
    before = seed_table(small_client, "big")
    body = ipc_bytes(sample(20_000))
    assert len(body) > SMALL_LIMIT
    response = post_binary(small_client, "big", body)
    assert_refused(small_client, response, 413, "payload_too_large", "big", before)


def test_oversized_chunked_body(small_client: httpx.Client) -> None:
    before = seed_table(small_client, "big_chunked")
    body = ipc_bytes(sample(20_000), batch_rows=1000)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = small_client.post(
        "/stream/big_chunked", content=pieces(), headers={"Content-Type": ARROW_STREAM}
    )
    assert_refused(small_client, response, 413, "payload_too_large", "big_chunked", before)


def test_oversized_after_decompression(small_client: httpx.Client) -> None:
    """A small zstd body that expands past the limit is refused (no zip bombs)."""
    table = pa.table({"id": pa.array([7] * 200_000, pa.int64())})
    body = zstandard.compress(ipc_bytes(table))
    assert len(body) < SMALL_LIMIT
    response = post_binary(small_client, "bomb", body, headers={"Content-Encoding": "zstd"})
    assert_refused(small_client, response, 413, "payload_too_large", "bomb", None)


def test_oversized_json_body(small_client: httpx.Client) -> None:
    response = post_json(small_client, "big_json", ipc_bytes(sample(20_000)))
    assert_refused(small_client, response, 413, "payload_too_large", "big_json", None)


def test_small_server_still_ingests(small_client: httpx.Client) -> None:
    response = post_binary(small_client, "fits", ipc_bytes(sample(10)))
    assert response.status_code == 200, response.text
    assert table_state(small_client, "fits") == 10


# -- read side errors never leak internals -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "payload"),
    [
        ("/stream/x", "GET", None),
        ("/nowhere", "GET", None),
        ("/query", "POST", b"{not json"),
        ("/query", "POST", json.dumps({"sql": 5}).encode()),
    ],
)
def test_misc_errors_are_clean(
    client: httpx.Client, path: str, method: str, payload: bytes | None
) -> None:
    response = client.request(
        method, path, content=payload, headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
    body = response.json()
    assert body["status"] == "error"
    assert isinstance(body["code"], str)
    assert client.get("/health").status_code == 200


# -- failures leave tables exactly as they were --------------------------------------------------


@pytest.mark.parametrize("size", ["small", "large"])
def test_failed_replace_keeps_old_rows(client: httpx.Client, size: str) -> None:
    table = f"err_replace_{size}"
    before = seed_table(client, table, rows=4)
    full = ipc_bytes(sample(30), batch_rows=10) if size == "small" else large_ipc()
    response = post_binary(client, table, full[:-8], params={"mode": "replace"})
    assert_refused(client, response, 400, "truncated_stream", table, before)
    assert query(client, f"SELECT min(id) AS lo FROM {table}").to_pylist() == [{"lo": 0}]


@pytest.mark.parametrize("size", ["small", "large"])
def test_failed_create_creates_nothing(client: httpx.Client, size: str) -> None:
    table = f"err_create_{size}"
    full = ipc_bytes(sample(30), batch_rows=10) if size == "small" else large_ipc()
    response = post_binary(client, table, full[:-8], params={"mode": "create"})
    assert_refused(client, response, 400, "truncated_stream", table, None)
    response = post_binary(client, f"err_append_{size}", full[:-8])
    assert_refused(client, response, 400, "truncated_stream", f"err_append_{size}", None)


def test_cut_inside_schema_message(client: httpx.Client) -> None:
    response = post_binary(client, "err_schema_cut", ipc_bytes(sample())[:12])
    assert_refused(
        client, response, 400, ("truncated_stream", "invalid_ipc"), "err_schema_cut", None
    )


def test_empty_body(client: httpx.Client) -> None:
    """Told that it is empty, not that a stream of no messages lacks its end."""
    for response in (
        post_binary(client, "err_empty_body", b""),
        client.post("/stream/err_empty_body", json={"batch": {"data": ""}}),
    ):
        body = assert_refused(client, response, 400, "truncated_stream", "err_empty_body", None)
        assert str(body["message"]).startswith("the Arrow IPC stream is empty (an empty body")


def test_empty_column_name(client: httpx.Client) -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["ok", ""])
    response = post_binary(client, "err_empty_col", ipc_bytes(table))
    assert_refused(client, response, 400, "invalid_name", "err_empty_col", None)


def test_large_malformed_json(client: httpx.Client) -> None:
    body = b'{"batch": {"data": "' + b"A" * (600 * 1024) + b'"'
    response = client.post(
        "/stream/err_json_large", content=body, headers={"Content-Type": "application/json"}
    )
    assert_refused(client, response, 400, "invalid_json", "err_json_large", None)


def test_json_body_that_is_not_an_object(client: httpx.Client) -> None:
    response = client.post("/stream/err_json_list", json=[1, 2, 3])
    assert_refused(client, response, 422, "invalid_options", "err_json_list", None)


def test_health_and_ready_answer_head_and_other_methods_are_405(client: httpx.Client) -> None:
    for path in ("/health", "/ready"):
        head = client.head(path)
        assert head.status_code == 200, path
        assert head.content == b""
    refused = client.request("PATCH", "/health")
    assert refused.status_code == 405
    assert refused.json()["code"] == "method_not_allowed"
