"""A small payload decoded whole (every message checked first, one buffer for pyarrow) reads
exactly as the same payload read message by message, and is refused the same way."""

from __future__ import annotations

import pyarrow as pa
import pytest

from arrowport.config import Settings
from arrowport.errors import ArrowportError, InvalidIPC, PayloadTooLarge, TruncatedStream
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
