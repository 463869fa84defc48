"""Every batch carries exactly the field nodes and buffers its schema implies
(:mod:`arrowport.ingest.ipc_layout`): the rule, derived again from Arrow's columnar format and
checked against what pyarrow writes for every type, and a batch written for another schema
refused over HTTP and Flight with nothing landed."""

from __future__ import annotations

import grpc
import httpx
import pyarrow as pa
import pytest

from arrowport.flight.protocol import flight_pb2
from arrowport.ingest.ipc_layout import BUFFERS, V5
from arrowport.ingest.ipc_messages import (
    DICTIONARY_BATCH,
    END_OF_STREAM,
    SCHEMA,
    Message,
    PayloadBudget,
    PayloadLimits,
    _Table,
)
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from tests.conftest import ipc_bytes, post_binary, post_json, query
from tests.server import ArrowportProcess

LIMITS = PayloadLimits(2**40, 2**40, 100_000)
V4 = pa.ipc.IpcWriteOptions(metadata_version=pa.ipc.MetadataVersion.V4)
ZSTD = pa.ipc.IpcWriteOptions(compression="zstd")


def _views() -> pa.Array:
    """A string view array with two data buffers (and inline values)."""
    long_ones = pa.array(["x" * 20, None, "short"], pa.string_view())
    return pa.concat_arrays([long_ones, pa.array(["y" * 30], pa.string_view())])


def _sparse_union() -> pa.Array:
    types = pa.array([0, 1, 0], pa.int8())
    return pa.UnionArray.from_sparse(types, [pa.array([1, 2, 3]), pa.array(["a", "b", "c"])])


def _dense_union() -> pa.Array:
    types = pa.array([0, 1, 0], pa.int8())
    offsets = pa.array([0, 0, 1], pa.int32())
    return pa.UnionArray.from_dense(types, offsets, [pa.array([1, 2]), pa.array(["a"])])


def _dictionary(values: pa.Array) -> pa.Array:
    indices = pa.array([0, None, len(values) - 1], pa.int16())
    return pa.DictionaryArray.from_arrays(indices, values)


def _nulls(dtype: pa.DataType) -> pa.Array:
    return pa.nulls(3, dtype)


STRUCT = pa.struct([("a", pa.int32()), ("b", pa.string())])
ARRAYS: dict[str, pa.Array] = {
    "null": pa.nulls(3),
    "bool": pa.array([True, None, False]),
    "int8": pa.array([1, None, 3], pa.int8()),
    "uint64": pa.array([1, None, 3], pa.uint64()),
    "float16": _nulls(pa.float16()),
    "float64": pa.array([1.5, None, 3.0]),
    "decimal32": _nulls(pa.decimal32(7, 2)),
    "decimal64": _nulls(pa.decimal64(12, 2)),
    "decimal128": _nulls(pa.decimal128(20, 2)),
    "decimal256": _nulls(pa.decimal256(50, 2)),
    "date32": _nulls(pa.date32()),
    "date64": _nulls(pa.date64()),
    "time32": _nulls(pa.time32("ms")),
    "time64": _nulls(pa.time64("ns")),
    "timestamp": pa.array([1, None, 3], pa.timestamp("us", "UTC")),
    "duration": _nulls(pa.duration("s")),
    "interval": _nulls(pa.month_day_nano_interval()),
    "fixed_size_binary": pa.array([b"abc", None, b"def"], pa.binary(3)),
    "binary": pa.array([b"a", None, b"bc"]),
    "string": pa.array(["a", None, "bc"]),
    "large_binary": pa.array([b"a", None], pa.large_binary()),
    "large_string": pa.array(["a", None], pa.large_string()),
    "binary_view": pa.array([b"z" * 40, None], pa.binary_view()),
    "string_view": _views(),
    "string_view inline": pa.array(["a", None], pa.string_view()),
    "list": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
    "large_list": pa.array([[1, 2], None], pa.large_list(pa.int64())),
    "list_view": pa.array([[1, 2], None], pa.list_view(pa.int64())),
    "large_list_view": pa.array([["a"], None], pa.large_list_view(pa.string())),
    "fixed_size_list": pa.array([[1, 2], None, [3, 4]], pa.list_(pa.int8(), 2)),
    "struct": pa.array([{"a": 1, "b": "x"}, None, {"a": None, "b": None}], STRUCT),
    "struct of no fields": _nulls(pa.struct([])),
    "map": pa.array([[("k", 1)], None, []], pa.map_(pa.string(), pa.int64())),
    "sparse_union": _sparse_union(),
    "dense_union": _dense_union(),
    "run_end_encoded": pa.RunEndEncodedArray.from_arrays([2, 3], pa.array(["a", None])),
    "dictionary": _dictionary(pa.array(["a", "b"])),
    "dictionary of int64": _dictionary(pa.array([10, 20])),
    "dictionary of string_view": _dictionary(_views()),
    "dictionary of lists": _dictionary(pa.array([[1, 2], [3]])),
    "dictionary of structs": _dictionary(pa.array([{"a": 1, "b": "x"}], STRUCT)),
    "uuid (extension)": pa.array([b"0123456789abcdef", None], pa.uuid()),
    "json (extension)": pa.array(['{"a": 1}', None], pa.json_()),
    "list of string_view": pa.array([["x" * 20], None, ["y"]], pa.list_(pa.string_view())),
    "list of dictionaries": pa.ListArray.from_arrays(
        pa.array([0, 2, 3], pa.int32()), _dictionary(pa.array(["a", "b"]))
    ),
    "struct of dictionaries and views": pa.StructArray.from_arrays(
        [_dictionary(pa.array(["a", "b"])), _views()[:3], pa.nulls(3)], ["d", "v", "n"]
    ),
    "deep": pa.array(
        [[{"m": [("k", [1, None])], "s": "x" * 20}], None],
        pa.list_(
            pa.struct(
                [
                    ("m", pa.map_(pa.string(), pa.large_list_view(pa.int16()))),
                    ("s", pa.string_view()),
                ]
            )
        ),
    ),
}


def stream(batches: list[pa.RecordBatch], options: pa.ipc.IpcWriteOptions | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def spec_layout(dtype: pa.DataType) -> tuple[int, int, int]:
    """(field nodes, buffers, view fields) of a field of ``dtype`` in a record batch, per the
    buffer listing of Arrow's columnar format (V5 metadata; a view field's data buffers aside;
    a dictionary-encoded field's values are in its dictionary batches, see
    :func:`spec_dictionaries`)."""
    if isinstance(dtype, pa.BaseExtensionType):
        return spec_layout(dtype.storage_type)
    if isinstance(dtype, pa.DictionaryType):
        return 1, 2, 0  # the indices
    if pa.types.is_null(dtype) or pa.types.is_run_end_encoded(dtype):
        buffers = 0
    elif pa.types.is_struct(dtype) or pa.types.is_fixed_size_list(dtype):
        buffers = 1
    elif pa.types.is_union(dtype):
        buffers = 1 if dtype.mode == "sparse" else 2  # type ids (and offsets)
    elif (
        pa.types.is_binary(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_binary(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_large_list_view(dtype)
    ):
        buffers = 3
    else:  # fixed width, boolean, fixed-size binary, list, large list, map, views
        assert dtype.num_fields <= 1, dtype
        buffers = 2
    views = int(pa.types.is_binary_view(dtype) or pa.types.is_string_view(dtype))
    nodes = 1
    for index in range(dtype.num_fields):
        child = spec_layout(dtype.field(index).type)
        nodes, buffers, views = nodes + child[0], buffers + child[1], views + child[2]
    return nodes, buffers, views


def spec_dictionaries(dtype: pa.DataType) -> list[tuple[int, int, int]]:
    """The layouts of the dictionaries of a field of ``dtype``, depth first."""
    if isinstance(dtype, pa.BaseExtensionType):
        return spec_dictionaries(dtype.storage_type)
    found = []
    if isinstance(dtype, pa.DictionaryType):
        found.append(spec_layout(dtype.value_type))
        dtype = dtype.value_type
    for index in range(dtype.num_fields):
        found += spec_dictionaries(dtype.field(index).type)
    return found


def carried(message: Message) -> tuple[int, int, list[int], int]:
    """(field nodes, buffers, variadic buffer counts, metadata version) of a batch message, as
    its flatbuffer has them."""
    root = message._root()
    batch = message._header(root)
    if message.kind == DICTIONARY_BATCH:
        inner = batch.table(1)
        assert inner is not None
        batch = inner
    nodes = batch.vector(1, 16)
    return (
        nodes[1] if nodes else 0,
        len(batch.longs(2, 2)) // 2,
        list(batch.longs(4)),
        root.scalar(0, "<h"),
    )


def type_ids(message: Message) -> set[int]:
    """The Type union members of every field of a schema message."""
    found: set[int] = set()
    pending: list[_Table] = list(message._header().tables(1))
    while pending:
        field = pending.pop()
        found.add(field.scalar(2, "<B"))
        pending += field.tables(5)
    return found


CASES = [(name, None) for name in ARRAYS] + [
    (name, options)
    for name in ("sparse_union", "dense_union", "null", "struct", "deep")
    for options in ("V4", "zstd")
]


@pytest.mark.parametrize(("name", "options"), CASES)
def test_what_pyarrow_writes_is_what_the_schema_implies(name: str, options: str | None) -> None:
    array = ARRAYS[name]
    batch = pa.record_batch({"id": pa.array(range(len(array)), pa.int32()), "c": array})
    written = {"V4": V4, "zstd": ZSTD, None: None}[options]
    data = stream([batch, batch.slice(1)], written)
    messages = list(stream_messages(ViewReader(data), LIMITS))
    layout = messages[0].layout(LIMITS.max_columns)

    # The module's rule is the columnar format's, as derived here from pyarrow's types.
    nodes, buffers, views = spec_layout(array.type)
    assert (layout.batch.nodes, layout.batch.buffers, layout.batch.views) == (
        1 + nodes,
        2 + buffers,
        views,
    )
    dictionaries = spec_dictionaries(array.type)
    assert [(d.nodes, d.buffers, d.views) for d in layout.dictionaries.values()] == dictionaries

    # And it is what pyarrow writes, batch after batch, dictionary batches too.
    seen = 0
    for message in messages[1:]:
        expected = layout.batch
        if message.kind == DICTIONARY_BATCH:
            expected = layout.dictionary(message._header().scalar(0, "<q"))
            seen += 1
        found_nodes, found_buffers, counts, version = carried(message)
        assert found_nodes == expected.nodes
        assert len(counts) == expected.views
        unions = expected.unions if version < V5 else 0
        assert found_buffers == expected.buffers + sum(counts) + unions
    assert seen >= len(dictionaries)
    assert version == (V5 - 1 if options == "V4" else V5)

    budget = PayloadBudget(LIMITS)
    for message in messages:
        budget.admit(message)


def test_every_type_of_the_format_is_written_and_checked() -> None:
    """The streams above hold a field of every member of Arrow's Type union, so none of
    :data:`BUFFERS` goes unchecked against pyarrow."""
    found: set[int] = set()
    for array in ARRAYS.values():
        data = stream([pa.record_batch({"c": array})])
        schema = next(stream_messages(ViewReader(data), LIMITS))
        assert schema.kind == SCHEMA
        found |= type_ids(schema)
    assert found == set(BUFFERS)


# -- over HTTP and Flight -------------------------------------------------------------------------

DO_PUT = "/arrow.flight.protocol.FlightService/DoPut"
GOOD = pa.record_batch({"n": pa.array([1, 2], pa.int64())})


def framed(data: bytes) -> list[bytes]:
    """The messages of an IPC stream, each framed as it was (the end marker left off)."""
    return [
        message.serialize().to_pybytes()
        for message in pa.ipc.MessageReader.open_stream(pa.BufferReader(data))
    ]


def mismatched() -> bytes:
    """An int64 column's stream: a good batch, then one written for a string column. pyarrow
    reads the string's offsets [0, 1] as the number 4294967296, and the result is valid."""
    schema, batch = framed(ipc_bytes(pa.table(GOOD)))
    strings = framed(ipc_bytes(pa.table({"n": pa.array(["a"])})))
    body = schema + batch + strings[1] + END_OF_STREAM
    landed = pa.ipc.open_stream(body).read_all()
    landed.validate(full=True)
    assert landed.column("n").to_pylist() == [1, 2, 4294967296]
    return body


def test_a_batch_written_for_another_schema_is_refused_over_http(client: httpx.Client) -> None:
    table = "layout_mismatch"
    landed = post_binary(client, table, ipc_bytes(pa.table(GOOD)))
    assert landed.status_code == 200, landed.text

    body = mismatched()
    for response in (post_binary(client, table, body), post_json(client, table, body)):
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["code"] == "invalid_ipc"
        assert "has 3 buffers" in error["message"]
        assert "take 2" in error["message"]
    rows = query(client, f"SELECT n FROM {table} ORDER BY n").column("n").to_pylist()
    assert rows == [1, 2]


def test_a_batch_written_for_another_schema_is_refused_over_flight(
    server: ArrowportProcess, client: httpx.Client
) -> None:
    """Frames as any Flight client sends them (a pyarrow client re-encodes its batches, so
    they are sent with grpcio): one IPC message each, the first with the descriptor."""
    table = "layout_mismatch_flight"
    frames: list[bytes] = []
    for message in stream_messages(ViewReader(mismatched()), LIMITS):
        frame = flight_pb2.FlightData(
            data_header=bytes(message.metadata), data_body=bytes(message.body)
        )
        if not frames:
            frame.flight_descriptor.CopyFrom(
                flight_pb2.FlightDescriptor(
                    type=flight_pb2.FlightDescriptor.PATH, path=[table.encode()]
                )
            )
        frames.append(frame.SerializeToString())
    with grpc.insecure_channel(f"127.0.0.1:{server.flight_port}") as channel:
        do_put = channel.stream_stream(
            DO_PUT, request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(do_put(iter(frames), timeout=60))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("invalid_ipc: ")
    assert "has 3 buffers" in (refused.value.details() or "")
    assert client.get(f"/tables/{table}").status_code == 404
