"""A small payload decoded whole (every message checked first, one buffer for pyarrow) reads
exactly as the same payload read message by message, and is refused the same way."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest

from arrowport.config import Settings
from arrowport.errors import ArrowportError, InvalidIPC, PayloadTooLarge, TruncatedStream
from arrowport.ingest.ipc_messages import END_OF_STREAM
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from arrowport.ingest.payload import IpcPayload
from arrowport.ingest.service import payload_limits

LIMITS = payload_limits(Settings())


def stream(*batches: pa.RecordBatch, options: pa.ipc.IpcWriteOptions | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batches[0].schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def read(data: bytes, whole: bool) -> pa.Table:
    messages = stream_messages(ViewReader(data), LIMITS)
    return IpcPayload(messages, LIMITS, 122_880, in_memory=whole).stream.read_all()


def dictionary_batch(words: list[str]) -> pa.RecordBatch:
    return pa.record_batch({"w": pa.array(words).dictionary_encode(), "n": range(len(words))})


PAYLOADS = {
    "plain": stream(pa.record_batch({"id": range(1000), "x": [1.5] * 1000})),
    "many batches": stream(*(pa.record_batch({"id": range(i, i + 7)}) for i in range(0, 70, 7))),
    "dictionaries that change": stream(
        dictionary_batch(["a", "b", "a"]), dictionary_batch(["c", "d"]), dictionary_batch(["e"])
    ),
    "dictionary deltas": stream(
        dictionary_batch(["a", "b"]),
        dictionary_batch(["a", "b", "c"]),
        options=pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True),
    ),
    "nested": stream(
        pa.record_batch(
            {
                "l": pa.array([[1, 2], None, [3]]),
                "s": pa.array([{"a": 1, "b": "x"}, None, {"a": 3, "b": None}]),
            }
        )
    ),
    "no batches": stream(pa.record_batch({"id": pa.array([], pa.int64())})),
    "larger than decoded whole": stream(pa.record_batch({"id": range(300_000)})),
}


@pytest.mark.parametrize("name", PAYLOADS)
def test_a_payload_decoded_whole_reads_as_one_read_in_pieces(name: str) -> None:
    data = PAYLOADS[name]
    whole = read(data, whole=True)
    assert whole.equals(read(data, whole=False))
    assert whole.equals(pa.ipc.open_stream(data).read_all())


def _second_schema() -> bytes:
    first = stream(pa.record_batch({"id": [1]}))
    return first[:-8] + first  # a whole stream again before the end marker


REFUSED: dict[str, tuple[bytes, type[ArrowportError]]] = {
    "cut short": (PAYLOADS["plain"][:-100], TruncatedStream),
    "no end marker": (PAYLOADS["plain"][:-8], TruncatedStream),
    "a second schema": (_second_schema(), InvalidIPC),
    "not IPC": (b"hello, world, this is not arrow", InvalidIPC),
    "too many columns": (
        stream(pa.record_batch({f"c{i}": [i] for i in range(LIMITS.max_columns + 1)})),
        PayloadTooLarge,
    ),
}


@pytest.mark.parametrize("name", REFUSED)
def test_a_payload_decoded_whole_is_refused_as_one_read_in_pieces(name: str) -> None:
    data, error = REFUSED[name]
    for whole in (True, False):
        with pytest.raises(error):
            read(data, whole)


def _framed(data: bytes) -> list[bytes]:
    """The messages of an IPC stream, each framed as it was (the end marker left off)."""
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(data))
    return [message.serialize().to_pybytes() for message in reader]


def _spliced(schema: pa.RecordBatch, written: pa.RecordBatch) -> bytes:
    """The schema message of a stream of ``schema``, then the batches of a stream of
    ``written``: batches written for another schema."""
    return _framed(stream(schema))[0] + b"".join(_framed(stream(written))[1:]) + END_OF_STREAM


def _dictionary_spliced(values: pa.Array, written: pa.Array) -> bytes:
    """A stream of a column of dictionary-encoded ``values`` whose dictionary batch was written
    for ``written`` instead."""
    indices = pa.array([0, 0, 0], pa.int32())
    mine = _framed(stream(pa.record_batch({"d": pa.DictionaryArray.from_arrays(indices, values)})))
    other = _framed(
        stream(pa.record_batch({"d": pa.DictionaryArray.from_arrays(indices, written)}))
    )
    return mine[0] + other[1] + mine[2] + END_OF_STREAM


INT64 = pa.record_batch({"n": pa.array([1, 2], pa.int64())})
STRINGS = pa.record_batch({"n": pa.array(["a", "b"])})
ONE_INT64 = pa.record_batch({"n": pa.array([7], pa.int64())})
ONE_STRING = pa.record_batch({"n": pa.array(["a"])})
WITH_NULLS = pa.record_batch({"n": pa.array([1, 2], pa.int64()), "z": pa.nulls(2)})
TWO_DICTIONARIES = pa.record_batch(
    {
        "a": pa.array(["x", "y"]).dictionary_encode(),
        "b": pa.array(["x", "y"]).dictionary_encode(),
    }
)

# Streams whose batches do not carry what their schema implies, and what the refusal says. Some
# decode to garbage that passes every later check (a string's offsets [0, 1] read as the int64
# 4294967296); the others fail in pyarrow, with words that do not say why.
MISMATCHED: dict[str, tuple[bytes, str]] = {
    "a string batch under an int64 schema": (_spliced(ONE_INT64, ONE_STRING), "has 3 buffers"),
    "string batches under an int32 schema": (
        _spliced(pa.record_batch({"n": pa.array([1, 2, 3], pa.int32())}), STRINGS),
        "has 3 buffers where its fields take 2",
    ),
    "an int64 batch under a string schema": (_spliced(STRINGS, INT64), "has 2 buffers"),
    "a field node too many": (_spliced(INT64, WITH_NULLS), "has 2 field nodes"),
    "a field node too few": (_spliced(WITH_NULLS, INT64), "has 1 field nodes"),
    "a struct batch under its field's schema": (
        _spliced(INT64, pa.record_batch({"n": pa.array([{"n": 1}, {"n": 2}])})),
        "has 2 field nodes",
    ),
    "a string batch under a string view schema": (
        _spliced(pa.record_batch({"n": pa.array(["a"], pa.string_view())}), STRINGS),
        "variadic buffer counts []",
    ),
    "a dictionary of strings under int64 values": (
        _dictionary_spliced(pa.array([10]), pa.array(["a"])),
        "dictionary batch (id 0) has 3 buffers",
    ),
    "a dictionary of int64 under string values": (
        _dictionary_spliced(pa.array(["a", "b"]), pa.array([10, 20])),
        "dictionary batch (id 0) has 2 buffers",
    ),
    "a dictionary of an id the schema does not have": (
        _framed(stream(pa.record_batch({"a": TWO_DICTIONARIES["a"]})))[0]
        + b"".join(_framed(stream(TWO_DICTIONARIES))[1:])
        + END_OF_STREAM,
        "has id 1",
    ),
}


@pytest.mark.parametrize("name", MISMATCHED)
def test_a_batch_that_does_not_carry_what_its_schema_implies_is_refused(name: str) -> None:
    data, words = MISMATCHED[name]
    for whole in (True, False):
        with pytest.raises(InvalidIPC, match=re.escape(words)) as refused:
            read(data, whole)
        assert refused.value.code == "invalid_ipc"


@pytest.mark.parametrize(
    ("name", "garbage"),
    [
        ("a string batch under an int64 schema", [4294967296]),
        ("string batches under an int32 schema", [0, 1]),
        ("a dictionary of strings under int64 values", [4294967296] * 3),
        ("a field node too many", [1, 2]),
    ],
)
def test_what_pyarrow_reads_of_a_batch_written_for_another_schema(
    name: str, garbage: list[int]
) -> None:
    """What the check stops: pyarrow reads these without a word, and the result is valid."""
    landed = pa.ipc.open_stream(MISMATCHED[name][0]).read_all()
    landed.validate(full=True)
    assert landed.column(0).to_pylist() == garbage


def test_a_batch_of_the_schema_it_follows_is_admitted_as_ever() -> None:
    data = _spliced(INT64, pa.record_batch({"n": pa.array([7, 8], pa.int64())}))
    for whole in (True, False):
        assert read(data, whole).column("n").to_pylist() == [7, 8]
