"""Flight's ``FlightData`` frames: read into checked IPC messages, written from record batches.

A frame is a tiny protobuf (``flight_descriptor = 1``, ``data_header = 2``, ``app_metadata = 3``,
``data_body = 1000``) whose body may be tens of MB: it is parsed here by hand, as views of the
bytes gRPC delivered, because the generated classes copy a body twice on the way in and twice on
the way out.

Incoming frames become :class:`~arrowport.ingest.ipc_messages.Message` s, which go through the
same checks and decoder as an HTTP body; a frame that carries only ``app_metadata`` (no IPC
message) is dropped here, so pyarrow never sees a frame sequence it was not built for. A frame
with a ``data_body`` but no ``data_header`` is malformed (the body of no message): it is refused,
INVALID_ARGUMENT ``invalid_ipc``, never dropped with the rows it may hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from google.protobuf.message import DecodeError

from arrowport.errors import InvalidIPC
from arrowport.flight.protocol import flight_pb2
from arrowport.ingest.body_buffers import BODY_BUFFERS, POOLED_BYTES
from arrowport.ingest.ipc_messages import Message, PayloadLimits
from arrowport.ingest.ipc_stream import ByteCollector, ViewReader, stream_messages
from arrowport.storage.coalesce import batch_bytes

_DESCRIPTOR = 1
_HEADER = 2
_APP_METADATA = 3
_BODY = 1000
# Arrow buffers must start at multiples of 8 (DuckDB's scan reads them in place).
_ALIGNMENT = 8
# Room in a message for the metadata of up to limits.max_columns columns (about 100 bytes each):
# a frame's schema, or a Flight SQL request carrying a schema.
SCHEMA_ROOM = 16 * 1024**2
# Batches sent to clients are cut below this: Flight clients refuse messages over 16 MiB.
MAX_SEND_BYTES = 8 * 1024**2


class _Corrupt(Exception):
    pass


@dataclass(frozen=True)
class Frame:
    descriptor: flight_pb2.FlightDescriptor | None
    header: memoryview
    app_metadata: memoryview
    body: memoryview

    @property
    def size(self) -> int:
        """Bytes of the IPC message it carries (metadata and body), as a put counts them."""
        return len(self.header) + len(self.body) if self.header else 0


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Corrupt
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def parse_frame(raw: bytes) -> Frame:
    """One ``FlightData`` frame (INVALID_ARGUMENT ``invalid_ipc`` if it is not one)."""
    data = memoryview(raw)
    fields: dict[int, memoryview] = {}
    pos = 0
    try:
        while pos < len(data):
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise _Corrupt
            if wire == 2:
                length, pos = _varint(data, pos)
                if pos + length > len(data):
                    raise _Corrupt
                fields[number] = data[pos : pos + length]
                pos += length
            elif wire == 0:
                _, pos = _varint(data, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
                if pos > len(data):
                    raise _Corrupt
            else:
                raise _Corrupt
        descriptor = None
        if _DESCRIPTOR in fields:
            descriptor = flight_pb2.FlightDescriptor.FromString(bytes(fields[_DESCRIPTOR]))
    except (_Corrupt, DecodeError, ValueError):
        raise InvalidIPC("a FlightData frame is not a valid protobuf message") from None
    empty = memoryview(b"")
    return Frame(
        descriptor,
        fields.get(_HEADER, empty),
        fields.get(_APP_METADATA, empty),
        fields.get(_BODY, empty),
    )


def _aligned(body: memoryview) -> bytes | memoryview:
    if not body or pa.py_buffer(body).address % _ALIGNMENT == 0:
        return body
    if len(body) >= POOLED_BYTES:
        return BODY_BUFFERS.copy(body)
    return bytes(body)


def frame_messages(frames: Iterable[Frame], aligned: bool = True) -> Iterator[Message]:
    """The IPC messages carried by ``frames`` (frames with neither header nor body, such as
    ``app_metadata`` only, are skipped). ``aligned=False``: their bodies where gRPC left them,
    not copied, to be checked but never decoded."""
    for frame in frames:
        if not frame.header:
            if frame.body:
                raise InvalidIPC(
                    f"a FlightData frame carries a data_body ({len(frame.body)} bytes) but no "
                    "data_header: a body belongs to the IPC message its header describes"
                )
            continue
        yield Message.parse(frame.header, _aligned(frame.body) if aligned else frame.body)


def _field(number: int, value: bytes | memoryview) -> list[bytes | memoryview]:
    tag = number << 3 | 2
    return [_encode_varint(tag), _encode_varint(len(value)), value]


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(message: Message, app_metadata: bytes = b"") -> bytes:
    parts = _field(_HEADER, message.metadata)
    if app_metadata:
        parts += _field(_APP_METADATA, app_metadata)
    if message.body_length:
        parts += _field(_BODY, message.body)
    return b"".join(parts)


def _pieces(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """``batch`` in slices small enough for any Flight client to receive (measured as the
    answer's batches were joined, so that a joined one is not cut again)."""
    size = batch_bytes(batch)
    if size <= MAX_SEND_BYTES or batch.num_rows <= 1:
        yield batch
        return
    rows = max(1, batch.num_rows * MAX_SEND_BYTES // size)
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


def encode_stream(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    options: pa.ipc.IpcWriteOptions | None = None,
) -> Iterator[bytes]:
    """``FlightData`` frames of a DoGet answer: the schema, then each batch (dictionaries as
    the IPC writer emits them), written as the batches come."""
    collector = ByteCollector()
    writer = pa.ipc.new_stream(pa.PythonFile(collector, mode="w"), schema, options=options)
    unlimited = PayloadLimits(2**62, 2**62, 2**31)

    def flush() -> Iterator[bytes]:
        # What the writer wrote since the last flush is whole messages of a stream.
        written = ViewReader(collector.take())
        for message in stream_messages(written, unlimited, require_end=False):
            yield encode_frame(message)

    yield from flush()
    for batch in batches:
        for piece in _pieces(batch):
            writer.write_batch(piece)
            yield from flush()
    writer.close()
    # With no batch at all, the writer writes the schema only now: a client needs it even
    # for an empty answer. (The end-of-stream marker is no message, so it is not sent.)
    yield from flush()
