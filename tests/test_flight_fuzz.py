"""Fuzzing Flight's DoPut with raw, mutated FlightData frames sent straight over gRPC.

A pyarrow Flight client re-encodes and validates what it sends, so it never delivers a corrupt
frame; here every put is a list of serialized ``FlightData`` messages written by hand (with the
generated protobuf classes, or byte by byte where the protobuf itself must be malformed) and sent
with ``grpcio``. Valid puts are cut from real Arrow IPC streams (plain columns, dictionaries that
change between batches, nested lists, structs and maps, strings and binaries, buffers compressed
with zstd and LZ4), one frame per IPC message, the first carrying the descriptor. A seeded
generator then flips, truncates and patches headers and bodies, drops, duplicates and reorders
frames, slips ``app_metadata``-only frames in anywhere (between a dictionary batch and its record
batch above all), sends protobuf garbage, frames that claim huge lengths, broken descriptors, and
empty puts.

Every put must end in a ``PutResult`` saying ``"status": "success"`` (for data that really
decodes, with exactly its rows) or in a client-error gRPC status whose message starts with its
snake_case code, never UNKNOWN or INTERNAL; the server must stay up and healthy, a table's rows
may only grow by what a success reported, every table must read back as valid Arrow data, and the
log must hold no internal error.

The campaign runs ``ARROWPORT_FUZZ_PUTS`` mutated puts (default 600) from the seed
``ARROWPORT_FUZZ_SEED`` (default 1); put number ``n`` is drawn from ``Random(f"{seed}:{n}")``
alone, so a failure names everything needed to replay it. To fuzz longer::

    ARROWPORT_FUZZ_PUTS=20000 ARROWPORT_FUZZ_SEED=7 .venv/bin/python -m pytest tests/test_flight_fuzz.py
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import random
import re
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pyarrow as pa
import pytest
from google.protobuf.message import DecodeError

from arrowport import errors
from arrowport.flight.protocol import flight_pb2
from arrowport.ingest.ipc_messages import DICTIONARY_BATCH, Message, PayloadLimits
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from tests.conftest import query
from tests.server import ArrowportProcess

PUTS = int(os.environ.get("ARROWPORT_FUZZ_PUTS", "600"))
SEED = int(os.environ.get("ARROWPORT_FUZZ_SEED", "1"))
TIMEOUT = 60.0  # a put slower than this counts as a hang
DO_PUT = "/arrow.flight.protocol.FlightService/DoPut"
PATH = flight_pb2.FlightDescriptor.PATH
CMD = flight_pb2.FlightDescriptor.CMD

# What a client's own mistake (or an overloaded server) may be answered with: never UNKNOWN or
# INTERNAL, which say the server failed.
CLIENT_STATUSES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
}
STATUS_MESSAGE = re.compile(r"^([a-z][a-z0-9]*(?:_[a-z0-9]+)*): \S")
LOG_ALARMS = ("internal_error", "unexpected error", "Traceback")

# The server's limits are small here, so that ordinary puts take every path: group-committed
# (up to small_body_bytes), streamed to DuckDB's thread, the reader waiting for it (past
# upload_buffer_bytes), and refused for size (a message over max_message_bytes once decoded).
SMALL_BODY_BYTES = 3000
UPLOAD_BUFFER_BYTES = 2048
MAX_MESSAGE_BYTES = 1024**2

UNLIMITED = PayloadLimits(2**62, 2**62, 2**31)


def _error_codes() -> dict[str, str]:
    """Each client-visible error code with the gRPC status its class is answered with."""
    found: dict[str, str] = {}
    pending: list[type[errors.ArrowportError]] = [errors.ArrowportError]
    while pending:
        kind = pending.pop()
        found[kind.code] = kind.grpc_code.upper()
        pending += kind.__subclasses__()
    return found


ERROR_CODES = _error_codes()


# -- frames ---------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def path_descriptor(name: bytes) -> flight_pb2.FlightDescriptor:
    return flight_pb2.FlightDescriptor(type=PATH, path=[name])


@dataclass(frozen=True)
class Frame:
    """One FlightData frame; ``raw``, when set, is sent instead of the fields (malformed ones)."""

    header: bytes = b""
    body: bytes = b""
    app_metadata: bytes = b""
    descriptor: flight_pb2.FlightDescriptor | None = None
    raw: bytes | None = None

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        data = flight_pb2.FlightData(
            data_header=self.header, data_body=self.body, app_metadata=self.app_metadata
        )
        if self.descriptor is not None:
            data.flight_descriptor.CopyFrom(self.descriptor)
        return data.SerializeToString()

    @property
    def kind(self) -> int | None:
        """The IPC message type in the header (None: no header, or not one that parses)."""
        if not self.header or self.raw is not None:
            return None
        try:
            return Message.parse(self.header).kind
        except errors.ArrowportError:
            return None


def ipc_stream(
    batches: list[pa.RecordBatch], schema: pa.Schema, compression: str | None = None
) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def put_frames(ipc: bytes, name: bytes) -> list[Frame]:
    """A put of the IPC stream ``ipc``: one frame per message, the first with the descriptor."""
    frames = [
        Frame(header=bytes(message.metadata), body=bytes(message.body))
        for message in stream_messages(ViewReader(ipc), UNLIMITED)
    ]
    frames[0] = dataclasses.replace(frames[0], descriptor=path_descriptor(name))
    return frames


@dataclass(frozen=True)
class Outcome:
    """How a put ended: ``code`` None for a success (with its reply), else its gRPC status."""

    code: grpc.StatusCode | None
    details: str = ""
    replies: tuple[bytes, ...] = ()
    cancelled: bool = False  # the client gave up on the call itself

    def reply(self) -> dict[str, Any]:
        assert len(self.replies) == 1, f"{len(self.replies)} replies"
        result = flight_pb2.PutResult.FromString(self.replies[0])
        document: dict[str, Any] = json.loads(result.app_metadata)
        return document

    def describe(self) -> str:
        if self.code is None:
            return f"success {[r[:200] for r in self.replies]}"
        return f"{self.code.name} {self.details!r}"


PutCall = Callable[..., Iterator[bytes]]


def open_put(channel: grpc.Channel) -> PutCall:
    call: PutCall = channel.stream_stream(
        DO_PUT, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    return call


def send(do_put: PutCall, encoded: list[bytes], cancel_after: float | None = None) -> Outcome:
    """Send raw frames as one DoPut and read its answer; with ``cancel_after``, the client
    keeps the call open after its frames and cancels it after that many seconds."""
    if cancel_after is None:
        try:
            replies = tuple(do_put(iter(encoded), timeout=TIMEOUT))
        except grpc.RpcError as exc:
            return Outcome(exc.code(), exc.details() or "")
        return Outcome(None, replies=replies)
    release = threading.Event()

    def requests() -> Iterator[bytes]:
        yield from encoded
        release.wait(TIMEOUT)

    call: Any = do_put(requests(), timeout=TIMEOUT)  # an iterator that can be cancelled
    timer = threading.Timer(cancel_after, call.cancel)
    timer.start()
    try:
        replies = tuple(call)
    except grpc.RpcError as exc:
        timer.join()
        cancelled = exc.code() == grpc.StatusCode.CANCELLED and timer.finished.is_set()
        return Outcome(exc.code(), exc.details() or "", cancelled=cancelled)
    finally:
        timer.cancel()
        release.set()
    return Outcome(None, replies=replies)


def local_rows(encoded: list[bytes]) -> int | None:
    """Rows pyarrow itself reads, fully validated, from the IPC messages of ``encoded`` (the
    frames with neither header nor body skipped, as a Flight server does), or None if they are
    no stream (a frame with a body but no header included)."""
    parts: list[bytes] = []
    for raw in encoded:
        try:
            data = flight_pb2.FlightData.FromString(raw)
        except DecodeError:
            return None
        if not data.data_header:
            if data.data_body:
                return None
            continue
        header = data.data_header + b"\x00" * (-len(data.data_header) % 8)
        parts += [b"\xff\xff\xff\xff", struct.pack("<i", len(header)), header, data.data_body]
    parts.append(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    try:
        table = pa.ipc.open_stream(b"".join(parts)).read_all()
        table.validate(full=True)
    except (pa.ArrowException, ValueError, OSError):
        return None
    return table.num_rows


# -- valid puts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """A valid put to mutate, landing in ``table``."""

    name: str
    ipc: bytes
    rows: int

    @property
    def table(self) -> str:
        return f"fz_{self.name}"

    def frames(self) -> list[Frame]:
        return put_frames(self.ipc, self.table.encode())


def _plain(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch(
        {
            "id": pa.array(ids, pa.int64()),
            "value": pa.array([i / 7 for i in ids], pa.float64()),
            "flag": pa.array([i % 3 == 0 for i in ids]),
            "small": pa.array([i % 100 for i in ids], pa.int8()),
            "maybe": pa.array([i if i % 4 else None for i in ids], pa.int32()),
            "at": pa.array([1_700_000_000_000_000 + i for i in ids], pa.timestamp("us")),
            "day": pa.array([19_000 + i for i in ids], pa.date32()),
        }
    )


def _dictionaries(start: int, rows: int, words: list[str]) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    kind = pa.DictionaryArray.from_arrays(
        pa.array([i % len(words) if i % 5 else None for i in ids], pa.int32()), pa.array(words)
    )
    level = pa.DictionaryArray.from_arrays(
        pa.array([i % 2 for i in ids], pa.int8()), pa.array([f"{words[0]}-lo", f"{words[-1]}-hi"])
    )
    return pa.record_batch({"id": pa.array(ids, pa.int64()), "kind": kind, "level": level})


NESTED = pa.schema(
    [
        ("id", pa.int64()),
        ("tags", pa.list_(pa.string())),
        ("point", pa.struct([("x", pa.int32()), ("label", pa.string())])),
        ("attrs", pa.map_(pa.string(), pa.int64())),
        ("path", pa.list_(pa.struct([("step", pa.float64()), ("names", pa.list_(pa.string()))]))),
        ("pair", pa.list_(pa.int16(), 2)),
    ]
)


def _nested(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch(
        [
            pa.array(ids, pa.int64()),
            pa.array([[f"t{j}" for j in range(i % 4)] if i % 6 else None for i in ids]),
            pa.array([{"x": i, "label": f"p{i}"} if i % 5 else None for i in ids], NESTED[2].type),
            pa.array([[(f"k{j}", i * j) for j in range(i % 3)] for i in ids], NESTED[3].type),
            pa.array(
                [[{"step": i / 2, "names": ["a"] * (i % 2)}] * (i % 3) for i in ids],
                NESTED[4].type,
            ),
            pa.array([[i % 100, -(i % 100)] for i in ids], NESTED[5].type),
        ],
        schema=NESTED,
    )


def _strings(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch(
        {
            "id": pa.array(ids, pa.int64()),
            "text": pa.array([f"zeile {i} ünïcödé ✓" if i % 7 else None for i in ids]),
            "empty": pa.array(["" if i % 2 else "x" * (i % 40) for i in ids]),
            "large": pa.array([f"large-{i}" * (i % 5) for i in ids], pa.large_string()),
            "blob": pa.array([bytes([i % 256]) * (i % 9) for i in ids], pa.binary()),
        }
    )


def _mixed(start: int, rows: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    return pa.record_batch(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"name-{i}" if i % 7 else None for i in ids]),
            "score": pa.array([i / 3 for i in ids], pa.float64()),
            "tags": pa.array([[f"t{i % 5}"] * (i % 3) for i in ids], pa.list_(pa.string())),
            "kind": pa.array([("a", "b", "c")[i % 3] for i in ids]).dictionary_encode(),
        }
    )


def _seed(
    name: str, make: Callable[[int, int], pa.RecordBatch], sizes: list[int], compression: str = ""
) -> Seed:
    batches = []
    start = 0
    for rows in sizes:
        batches.append(make(start, rows))
        start += rows
    return Seed(name, ipc_stream(batches, batches[0].schema, compression or None), start)


def _deltas() -> Seed:
    """Dictionaries that grow from batch to batch: sent as delta dictionary batches."""
    words = ["a", "b", "c", "d", "e", "f"]
    batches = [_dictionaries(i * 20, 20, words[: i + 2]) for i in range(4)]
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(emit_dictionary_deltas=True)
    with pa.ipc.new_stream(sink, batches[0].schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return Seed("deltas", sink.getvalue().to_pybytes(), 80)


def seeds() -> list[Seed]:
    words = [["red", "green", "blue"], ["north", "south"], ["x", "y", "z", "w"], ["solo"]]
    dictionary_batches = [_dictionaries(i * 30, 30, words[i]) for i in range(4)]
    return [
        _seed("plain", _plain, [40, 25, 1]),
        _seed("single", _plain, [5]),
        Seed("dictionaries", ipc_stream(dictionary_batches, dictionary_batches[0].schema), 120),
        _deltas(),
        _seed("nested", _nested, [30, 20, 10]),
        _seed("strings", _strings, [30, 30]),
        _seed("zstd", _mixed, [40, 40, 20], "zstd"),
        _seed("lz4", _mixed, [40, 40, 20], "lz4"),
    ]


# -- mutations ------------------------------------------------------------------------------------

# A mutation changes a put's frames in place and says what it did.
Mutation = Callable[[random.Random, list[Frame]], str]
HUGE = [2**31 - 1, 2**31, 2**32 + 8, 2**40, 2**62, 2**63 - 1]
ODD = [*HUGE, -1, -8, -(2**31), 0, 1, 7, 255, 65_566]


def _pick(rng: random.Random, frames: list[Frame], wanted: Callable[[Frame], bool]) -> int | None:
    found = [i for i, frame in enumerate(frames) if wanted(frame)]
    return rng.choice(found) if found else None


def _positions(rng: random.Random, size: int) -> list[int]:
    """Offsets to change, mostly near the start (where lengths and counts sit)."""
    return [
        rng.randrange(min(size, 64)) if rng.random() < 0.5 else rng.randrange(size)
        for _ in range(rng.randint(1, 4))
    ]


def _flip(rng: random.Random, frames: list[Frame], part: str) -> str:
    i = _pick(rng, frames, lambda f: f.raw is None and bool(getattr(f, part)))
    if i is None:
        return f"flip_{part}(none)"
    data = bytearray(getattr(frames[i], part))
    flips = [(at, rng.randrange(8)) for at in _positions(rng, len(data))]
    for at, bit in flips:
        data[at] ^= 1 << bit
    frames[i] = dataclasses.replace(frames[i], **{part: bytes(data)})
    return f"flip_{part}(frame={i}, bits={flips})"


def flip_header(rng: random.Random, frames: list[Frame]) -> str:
    return _flip(rng, frames, "header")


def flip_body(rng: random.Random, frames: list[Frame]) -> str:
    return _flip(rng, frames, "body")


def set_byte(rng: random.Random, frames: list[Frame]) -> str:
    part = rng.choice(["header", "body"])
    i = _pick(rng, frames, lambda f: f.raw is None and bool(getattr(f, part)))
    if i is None:
        return "set_byte(none)"
    data = bytearray(getattr(frames[i], part))
    at = _positions(rng, len(data))[0]
    data[at] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
    frames[i] = dataclasses.replace(frames[i], **{part: bytes(data)})
    return f"set_byte({part}, frame={i}, at={at}, value={data[at]})"


def patch_int64(rng: random.Random, frames: list[Frame]) -> str:
    """An odd 64-bit value over an aligned word: in a header that is often a buffer's offset or
    length or a node's length; in a compressed body, a buffer's decompressed size."""
    part = rng.choice(["header", "body"])
    i = _pick(rng, frames, lambda f: f.raw is None and len(getattr(f, part)) >= 8)
    if i is None:
        return "patch_int64(none)"
    data = bytearray(getattr(frames[i], part))
    at = 8 * rng.randrange(len(data) // 8)
    value = rng.choice(ODD)
    struct.pack_into("<q", data, at, value)
    frames[i] = dataclasses.replace(frames[i], **{part: bytes(data)})
    return f"patch_int64({part}, frame={i}, at={at}, value={value})"


def huge_body_length(rng: random.Random, frames: list[Frame]) -> str:
    """The bodyLength in a message's metadata (the word equal to the body's size) made huge."""
    i = _pick(rng, frames, lambda f: f.raw is None and len(f.body) > 0)
    if i is None:
        return "huge_body_length(none)"
    header = bytearray(frames[i].header)
    length = struct.pack("<q", len(frames[i].body))
    at = header.find(length)
    if at < 0:
        return "huge_body_length(not found)"
    value = rng.choice(HUGE)
    struct.pack_into("<q", header, at, value)
    frames[i] = dataclasses.replace(frames[i], header=bytes(header))
    return f"huge_body_length(frame={i}, value={value})"


def truncate(rng: random.Random, frames: list[Frame]) -> str:
    part = rng.choice(["header", "body"])
    i = _pick(rng, frames, lambda f: f.raw is None and bool(getattr(f, part)))
    if i is None:
        return "truncate(none)"
    data = getattr(frames[i], part)
    keep = rng.randrange(len(data))
    frames[i] = dataclasses.replace(frames[i], **{part: data[:keep]})
    return f"truncate({part}, frame={i}, keep={keep}/{len(data)})"


def extend_body(rng: random.Random, frames: list[Frame]) -> str:
    i = _pick(rng, frames, lambda f: f.raw is None and bool(f.header))
    if i is None:
        return "extend_body(none)"
    extra = rng.randbytes(rng.choice([1, 8, 64]))
    frames[i] = dataclasses.replace(frames[i], body=frames[i].body + extra)
    return f"extend_body(frame={i}, bytes={len(extra)})"


def _keep_descriptor(rng: random.Random, frames: list[Frame], descriptor: Any) -> str:
    """Mostly move the descriptor back onto the first frame after a reorder."""
    if descriptor is None or not frames or rng.random() < 0.3:
        return ""
    for i, frame in enumerate(frames):
        if frame.descriptor is descriptor:
            frames[i] = dataclasses.replace(frame, descriptor=None)
    if frames[0].raw is None:
        frames[0] = dataclasses.replace(frames[0], descriptor=descriptor)
    return ", descriptor kept first"


def drop_frame(rng: random.Random, frames: list[Frame]) -> str:
    if not frames:
        return "drop_frame(none)"
    descriptor = frames[0].descriptor
    i = rng.randrange(len(frames))
    del frames[i]
    return f"drop_frame({i}{_keep_descriptor(rng, frames, descriptor)})"


def duplicate_frame(rng: random.Random, frames: list[Frame]) -> str:
    if not frames:
        return "duplicate_frame(none)"
    i = rng.randrange(len(frames))
    to = rng.randrange(1, len(frames) + 1)
    frames.insert(to, dataclasses.replace(frames[i], descriptor=None))
    return f"duplicate_frame({i} -> {to})"


def reorder(rng: random.Random, frames: list[Frame]) -> str:
    if len(frames) < 2:
        return "reorder(none)"
    descriptor = frames[0].descriptor
    i, j = rng.sample(range(len(frames)), 2)
    if rng.random() < 0.5:
        frames[i], frames[j] = frames[j], frames[i]
        how = f"swap {i} {j}"
    else:
        frames.insert(j, frames.pop(i))
        how = f"move {i} -> {j}"
    return f"reorder({how}{_keep_descriptor(rng, frames, descriptor)})"


def cut_short(rng: random.Random, frames: list[Frame]) -> str:
    """The put ends early (after the schema, or between a dictionary and its batch)."""
    if len(frames) < 2:
        return "cut_short(none)"
    keep = rng.randrange(1, len(frames))
    del frames[keep:]
    return f"cut_short(keep={keep})"


def _app_metadata(rng: random.Random) -> bytes:
    return rng.choice([b"{}", b"\x00", rng.randbytes(rng.randint(1, 40)), b"x" * 300])


def app_metadata_frame(rng: random.Random, frames: list[Frame]) -> str:
    """A frame with only ``app_metadata``, anywhere (first: with the descriptor moved to it)."""
    at = rng.randrange(len(frames) + 1)
    frame = Frame(app_metadata=_app_metadata(rng))
    if at == 0 and frames and frames[0].descriptor is not None and rng.random() < 0.7:
        frame = dataclasses.replace(frame, descriptor=frames[0].descriptor)
        frames[0] = dataclasses.replace(frames[0], descriptor=None)
    frames.insert(at, frame)
    return f"app_metadata_frame(at={at}, descriptor={frame.descriptor is not None})"


def app_metadata_after_dictionary(rng: random.Random, frames: list[Frame]) -> str:
    """An ``app_metadata``-only frame between a dictionary batch and what follows it."""
    i = _pick(rng, frames, lambda f: f.kind == DICTIONARY_BATCH)
    if i is None:
        return app_metadata_frame(rng, frames)
    frames.insert(i + 1, Frame(app_metadata=_app_metadata(rng)))
    return f"app_metadata_after_dictionary(frame={i})"


def app_metadata_on_data(rng: random.Random, frames: list[Frame]) -> str:
    i = _pick(rng, frames, lambda f: f.raw is None)
    if i is None:
        return "app_metadata_on_data(none)"
    frames[i] = dataclasses.replace(frames[i], app_metadata=_app_metadata(rng))
    return f"app_metadata_on_data(frame={i})"


def body_without_header(rng: random.Random, frames: list[Frame]) -> str:
    i = _pick(rng, frames, lambda f: f.raw is None and bool(f.body))
    if i is None:
        return "body_without_header(none)"
    frames[i] = dataclasses.replace(frames[i], header=b"")
    return f"body_without_header(frame={i})"


def garbage_frame(rng: random.Random, frames: list[Frame]) -> str:
    """Random bytes as a frame: inserted, or in place of one."""
    raw = rng.randbytes(rng.choice([1, 3, 16, 200]))
    at = rng.randrange(len(frames) + 1)
    if at < len(frames) and rng.random() < 0.5:
        frames[at] = Frame(raw=raw)
        return f"garbage_frame(replace {at}, {raw.hex()})"
    frames.insert(at, Frame(raw=raw))
    return f"garbage_frame(insert {at}, {raw.hex()})"


def cut_protobuf(rng: random.Random, frames: list[Frame]) -> str:
    """A frame's protobuf encoding cut short (a field's length now runs past its end)."""
    if not frames:
        return "cut_protobuf(none)"
    i = rng.randrange(len(frames))
    encoded = frames[i].encode()
    keep = rng.randrange(len(encoded)) if encoded else 0
    frames[i] = Frame(raw=encoded[:keep])
    return f"cut_protobuf(frame={i}, keep={keep}/{len(encoded)})"


def huge_protobuf_length(rng: random.Random, frames: list[Frame]) -> str:
    """A frame whose data_body field claims far more bytes than it has."""
    i = _pick(rng, frames, lambda f: f.raw is None)
    if i is None:
        return "huge_protobuf_length(none)"
    frame = frames[i]
    claim = rng.choice([2**31 - 1, 2**32, 2**48, 2**63 - 1, len(frame.body) + 1])
    raw = b""
    if frame.descriptor is not None:
        raw += _field(1, frame.descriptor.SerializeToString())
    raw += _field(2, frame.header)
    raw += _varint(1000 << 3 | 2) + _varint(claim) + frame.body[:64]
    frames[i] = Frame(raw=raw)
    return f"huge_protobuf_length(frame={i}, claim={claim})"


def bad_wire(rng: random.Random, frames: list[Frame]) -> str:
    """Extra fields after a frame's own: unknown but well-formed ones (skipped), a group or a
    reserved wire type, or a varint that never ends."""
    i = _pick(rng, frames, lambda f: f.raw is None)
    if i is None:
        return "bad_wire(none)"
    extra = rng.choice(
        [
            _varint(7 << 3 | 0) + _varint(12345),  # unknown varint field
            _varint(9 << 3 | 1) + b"\x01" * 8,  # unknown fixed64 field
            _varint(11 << 3 | 5) + b"\x02" * 4,  # unknown fixed32 field
            _field(15, b"unknown"),  # unknown bytes field
            _varint(4 << 3 | 3) + _varint(4 << 3 | 4),  # a group
            _varint(5 << 3 | 6),  # wire type 6 does not exist
            _varint(6 << 3 | 0) + b"\xff" * 11,  # a varint that never ends
            _varint(8 << 3 | 1) + b"\x00" * 3,  # a fixed64 cut short
        ]
    )
    frames[i] = Frame(raw=frames[i].encode() + extra)
    return f"bad_wire(frame={i}, extra={extra.hex()})"


def _first_descriptor(frames: list[Frame], descriptor: flight_pb2.FlightDescriptor) -> None:
    if frames and frames[0].raw is None:
        frames[0] = dataclasses.replace(frames[0], descriptor=descriptor)


def bad_descriptor(rng: random.Random, frames: list[Frame]) -> str:
    """A descriptor no put may carry."""
    choice = rng.randrange(7)
    descriptor = [
        lambda: path_descriptor(b"fz_\xff\xfe" + rng.randbytes(2)),  # not UTF-8
        lambda: path_descriptor(b"\xc3\x28"),
        lambda: flight_pb2.FlightDescriptor(type=PATH, path=[]),
        lambda: flight_pb2.FlightDescriptor(type=PATH, path=[b"fz_a", b"fz_b"]),
        lambda: path_descriptor(b""),
        lambda: flight_pb2.FlightDescriptor(path=[b"fz_plain"]),  # type UNKNOWN
        lambda: flight_pb2.FlightDescriptor(type=CMD, cmd=rng.randbytes(12)),
    ][choice]()
    _first_descriptor(frames, descriptor)
    return f"bad_descriptor({descriptor!r})".replace("\n", " ")


def command_descriptor(rng: random.Random, frames: list[Frame]) -> str:
    """The stream named by a JSON command instead: a valid one that lets the schema evolve, or
    one that is no JSON object, or has unknown keys or values of the wrong kind."""
    table = "fz_plain"
    if frames and frames[0].descriptor is not None and frames[0].descriptor.path:
        table = frames[0].descriptor.path[0].decode("utf-8", "replace")
    cmd = rng.choice(
        [
            json.dumps({"stream_name": table, "schema_policy": "evolve"}).encode(),
            json.dumps({"stream_name": table}).encode(),
            b'{"stream_name": ',
            b"[1, 2]",
            b'"text"',
            json.dumps({"stream_name": table, "mode": 7}).encode(),
            json.dumps({"stream_name": table, "unheard_of": True}).encode(),
            json.dumps({"stream_name": table, "chunk_size": -1}).encode(),
            json.dumps({"stream_name": ""}).encode(),
            b'{"stream_name": "\xff\xfe"}',
        ]
    )
    _first_descriptor(frames, flight_pb2.FlightDescriptor(type=CMD, cmd=cmd))
    return f"command_descriptor({cmd!r})"


def corrupt_descriptor(rng: random.Random, frames: list[Frame]) -> str:
    """The first frame's descriptor field holds bytes that are no FlightDescriptor."""
    if not frames or frames[0].raw is not None:
        return "corrupt_descriptor(none)"
    frame = frames[0]
    garbage = rng.choice([b"\xff", b"\x1a\x10abc", b"\x08\xff\xff", rng.randbytes(9)])
    raw = _field(1, garbage) + _field(2, frame.header) + _field(1000, frame.body)
    frames[0] = Frame(raw=raw)
    return f"corrupt_descriptor({garbage.hex()})"


def descriptor_everywhere(rng: random.Random, frames: list[Frame]) -> str:
    """Every frame carries a descriptor (later ones naming another stream)."""
    other = path_descriptor(b"fz_elsewhere")
    for i in range(1, len(frames)):
        if frames[i].raw is None:
            frames[i] = dataclasses.replace(frames[i], descriptor=other)
    return "descriptor_everywhere()"


def no_descriptor(rng: random.Random, frames: list[Frame]) -> str:
    if frames and frames[0].raw is None:
        frames[0] = dataclasses.replace(frames[0], descriptor=None)
    return "no_descriptor()"


def empty_stream(rng: random.Random, frames: list[Frame]) -> str:
    """No frame at all, or only the descriptor."""
    descriptor = frames[0].descriptor if frames else None
    frames.clear()
    if descriptor is not None and rng.random() < 0.5:
        frames.append(Frame(descriptor=descriptor))
        return "empty_stream(descriptor only)"
    return "empty_stream()"


# (mutation, weight): the structural ones that used to find failures weigh most.
MUTATIONS: list[tuple[Mutation, int]] = [
    (flip_header, 8),
    (flip_body, 5),
    (set_byte, 4),
    (patch_int64, 6),
    (huge_body_length, 2),
    (truncate, 4),
    (extend_body, 2),
    (drop_frame, 4),
    (duplicate_frame, 4),
    (reorder, 4),
    (cut_short, 2),
    (app_metadata_frame, 4),
    (app_metadata_after_dictionary, 5),
    (app_metadata_on_data, 2),
    (body_without_header, 1),
    (garbage_frame, 3),
    (cut_protobuf, 2),
    (huge_protobuf_length, 2),
    (bad_wire, 2),
    (bad_descriptor, 2),
    (command_descriptor, 2),
    (corrupt_descriptor, 1),
    (descriptor_everywhere, 1),
    (no_descriptor, 1),
    (empty_stream, 1),
]


@dataclass(frozen=True)
class Put:
    seed: Seed
    frames: list[Frame]
    description: str
    cancel_after: float | None = None


def mutated_put(all_seeds: list[Seed], number: int) -> Put:
    """Put ``number`` of the campaign: a seed and one to three mutations, drawn from a
    generator of its own (so that any one put can be replayed alone); now and then the client
    cancels it, part-sent, instead of ending it."""
    rng = random.Random(f"{SEED}:{number}")
    seed = rng.choice(all_seeds)
    frames = seed.frames()
    done = []
    mutations, weights = zip(*MUTATIONS, strict=True)
    for mutate in rng.choices(mutations, weights, k=rng.choice([1, 1, 1, 2, 2, 3])):
        done.append(mutate(rng, frames))
    if rng.random() < 0.03:
        keep = rng.randrange(len(frames) + 1)
        after = rng.choice([0.02, 0.1, 0.25])
        del frames[keep:]
        done.append(f"cancel(after {keep} frames, {after} s)")
        return Put(seed, frames, "; ".join(done), after)
    return Put(seed, frames, "; ".join(done))


# -- checks ---------------------------------------------------------------------------------------


def count_rows(http: httpx.Client, table: str) -> int:
    sql = f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'"
    if not query(http, sql).column("n")[0].as_py():
        return 0
    rows: int = query(http, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py()
    return rows


def log_alarms(lines: list[str]) -> list[str]:
    return [line for line in lines if any(alarm in line for alarm in LOG_ALARMS)]


def expect(condition: object, problem: str) -> None:
    if not condition:
        raise AssertionError(problem)


def check_outcome(outcome: Outcome, encoded: list[bytes]) -> None:
    """Problems with how a put ended, raised as an AssertionError."""
    if outcome.cancelled:
        return
    if outcome.code is None:
        reply = outcome.reply()
        expect(reply.get("status") == "success", f"a reply that is no success: {reply}")
        decodable = local_rows(encoded)
        expect(decodable is not None, "accepted a put that pyarrow cannot decode and validate")
        rows = reply["rows_processed"]
        expect(rows == decodable, f"{rows} rows landed, the put holds {decodable}")
        return
    expect(outcome.code in CLIENT_STATUSES, f"answered {outcome.code.name}")
    found = STATUS_MESSAGE.match(outcome.details)
    expect(found is not None, "the status message does not start with its code")
    expect("Traceback" not in outcome.details, "a traceback in the status message")
    assert found is not None
    code = found[1]
    expected = ERROR_CODES.get(code, outcome.code.name)
    expect(expected == outcome.code.name, f"{code} answered {outcome.code.name}, not {expected}")


@dataclass(repr=False)
class Campaign:
    """Puts against one server, every outcome checked; what fails is kept (with how to replay
    it) and the campaign goes on, unless the server died."""

    server: ArrowportProcess
    http: httpx.Client
    do_put: PutCall
    expected: dict[str, int] = dataclasses.field(default_factory=dict)
    answers: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)

    def put(
        self, label: str, table: str, frames: list[Frame], cancel_after: float | None = None
    ) -> Outcome:
        encoded = [frame.encode() for frame in frames]
        mark = len(self.server.lines)
        outcome = send(self.do_put, encoded, cancel_after)
        found = STATUS_MESSAGE.match(outcome.details)
        answer = "cancelled" if outcome.cancelled else found[1] if found else "?"
        self.answers["success" if outcome.code is None else answer] += 1
        try:
            expect(self.server.alive(), "the server died")
            expect(self.http.get("/health").status_code == 200, "the server is unhealthy")
            tables = [table]
            if outcome.code is None and len(outcome.replies) == 1:
                reply = outcome.reply()  # a command descriptor may name another table
                tables.append(str(reply.get("table", table)))
                if not reply.get("duplicate"):
                    added = int(reply.get("rows_processed", 0))
                    self.expected[tables[-1]] = self.expected.get(tables[-1], 0) + added
            check_outcome(outcome, encoded)
            for name in dict.fromkeys(tables):
                landed = count_rows(self.http, name)
                if landed != self.expected.setdefault(name, 0):
                    reported, self.expected[name] = self.expected[name], landed
                    raise AssertionError(
                        f"table {name} holds {landed} rows, {reported} were reported"
                    )
            alarms = log_alarms(self.server.lines[mark:])
            expect(not alarms, f"the server logged: {alarms[:2]}")
        except AssertionError as exc:
            tail = "\n    ".join(self.server.lines[max(mark - 2, 0) :][-12:])
            failure = (
                f"{label}\n  {exc}\n  answer: {outcome.describe()}\n"
                f"  frame sizes: {[len(e) for e in encoded]}\n  server log:\n    {tail}"
            )
            if not self.server.alive():
                self.failures.append(failure)
                self.raise_failures()
            self.failures.append(failure)
        return outcome

    def raise_failures(self) -> None:
        failures, self.failures = self.failures, []
        if failures:
            kinds = collections.Counter(failure.split("\n")[1].strip() for failure in failures)
            summary = "\n".join(f"  {count} x {kind}" for kind, count in kinds.most_common())
            shown = "\n\n".join(failures[:5])
            raise AssertionError(
                f"{len(failures)} failures with seed {SEED} (ARROWPORT_FUZZ_SEED={SEED}):\n"
                f"{summary}\nthe first ones:\n\n{shown}"
            )


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {
        "limits": {"small_body_bytes": SMALL_BODY_BYTES, "max_message_bytes": MAX_MESSAGE_BYTES},
        "flight": {"upload_buffer_bytes": UPLOAD_BUFFER_BYTES},
    }
    with ArrowportProcess(tmp_path_factory.mktemp("fuzz-server"), config=config) as process:
        yield process


@pytest.fixture(scope="module")
def campaign(fuzz_server: ArrowportProcess) -> Iterator[Campaign]:
    channel = grpc.insecure_channel(f"127.0.0.1:{fuzz_server.flight_port}")
    with httpx.Client(base_url=fuzz_server.url, timeout=TIMEOUT) as http:
        yield Campaign(fuzz_server, http, open_put(channel))
    channel.close()


# Fixed cases that every run checks, whatever the seed draws: (name, how the put is changed,
# the code it must be refused with; None: it must land).
def _after_each_dictionary(frames: list[Frame]) -> None:
    for i in reversed(range(len(frames))):
        if frames[i].kind == DICTIONARY_BATCH:
            frames.insert(i + 1, Frame(app_metadata=b'{"note": 1}'))


def _first_frame_app_metadata_only(frames: list[Frame]) -> None:
    descriptor = frames[0].descriptor
    frames[0] = dataclasses.replace(frames[0], descriptor=None)
    frames.insert(0, Frame(app_metadata=b"hello", descriptor=descriptor))


def _huge_claim(frames: list[Frame]) -> None:
    frame = frames[1]
    frames[1] = Frame(
        raw=_field(2, frame.header) + _varint(1000 << 3 | 2) + _varint(2**62) + frame.body
    )


def _ipc_body_claim(frames: list[Frame]) -> None:
    header = bytearray(frames[1].header)
    at = header.find(struct.pack("<q", len(frames[1].body)))
    struct.pack_into("<q", header, at, 2**40)
    frames[1] = dataclasses.replace(frames[1], header=bytes(header))


def _replace_descriptor(descriptor: flight_pb2.FlightDescriptor) -> Callable[[list[Frame]], None]:
    def change(frames: list[Frame]) -> None:
        frames[0] = dataclasses.replace(frames[0], descriptor=descriptor)

    return change


def _swap_first_batches(frames: list[Frame]) -> None:
    schema, batch = frames[0], frames[1]
    frames[0] = dataclasses.replace(batch, descriptor=schema.descriptor)
    frames[1] = dataclasses.replace(schema, descriptor=None)


def _schema_only(frames: list[Frame]) -> None:
    del frames[1:]


def _descriptor_only(frames: list[Frame]) -> None:
    frames[:] = [Frame(descriptor=frames[0].descriptor)]


def _no_descriptor(frames: list[Frame]) -> None:
    frames[0] = dataclasses.replace(frames[0], descriptor=None)


def _app_metadata_at_end(frames: list[Frame]) -> None:
    frames.append(Frame(app_metadata=b"the end"))


def _corrupt_descriptor(frames: list[Frame]) -> None:
    frames[0] = Frame(raw=_field(1, b"\x08\xff\xff") + _field(2, frames[0].header))


def _unknown_fields(frames: list[Frame]) -> None:
    extra = _varint(7 << 3 | 0) + _varint(300) + _varint(9 << 3 | 1) + bytes(8) + _field(15, b"x")
    frames[1] = Frame(raw=frames[1].encode() + extra)


def _cut_fixed64_field(frames: list[Frame]) -> None:
    frames[1] = Frame(raw=frames[1].encode() + _varint(8 << 3 | 1) + bytes(3))


def _batch_replaced_by_cut_fixed32(frames: list[Frame]) -> None:
    frames[-1] = Frame(raw=_varint(6 << 3 | 5))


def _garbage_frame(frames: list[Frame]) -> None:
    frames.insert(1, Frame(raw=b"\x0a\xff\xff"))


def _second_schema(frames: list[Frame]) -> None:
    frames.insert(2, Frame(header=frames[0].header))


def _dictionary_missing(frames: list[Frame]) -> None:
    assert frames[1].kind == DICTIONARY_BATCH
    del frames[1]


def _truncated_body(frames: list[Frame]) -> None:
    frames[1] = dataclasses.replace(frames[1], body=frames[1].body[:-9])


def _body_without_header(frames: list[Frame]) -> None:
    frames.insert(2, Frame(body=frames[1].body))


def _last_batch_header_dropped(frames: list[Frame]) -> None:
    frames[-1] = dataclasses.replace(frames[-1], header=b"")


def _app_metadata_and_body(frames: list[Frame]) -> None:
    frames.append(Frame(app_metadata=b"with a body", body=b"\x00" * 8))


FIXED: list[tuple[str, str, Callable[[list[Frame]], None], str | None]] = [
    ("app_metadata_after_each_dictionary", "dictionaries", _after_each_dictionary, None),
    ("app_metadata_only_first_frame", "dictionaries", _first_frame_app_metadata_only, None),
    ("app_metadata_at_end", "nested", _app_metadata_at_end, None),
    ("schema_only", "plain", _schema_only, None),
    ("empty_stream", "plain", list.clear, "invalid_options"),
    ("descriptor_only", "plain", _descriptor_only, "invalid_ipc"),
    ("no_descriptor", "plain", _no_descriptor, "invalid_options"),
    ("non_utf8_path", "plain", _replace_descriptor(path_descriptor(b"fz_\xc4a")), "invalid_name"),
    ("unknown_protobuf_fields", "plain", _unknown_fields, None),
    ("garbage_protobuf", "plain", _garbage_frame, "invalid_ipc"),
    ("cut_fixed64_field", "plain", _cut_fixed64_field, "invalid_ipc"),
    ("batch_replaced_by_cut_fixed32_field", "plain", _batch_replaced_by_cut_fixed32, "invalid_ipc"),
    ("corrupt_descriptor", "plain", _corrupt_descriptor, "invalid_ipc"),
    ("huge_protobuf_body_length", "plain", _huge_claim, "invalid_ipc"),
    ("huge_ipc_body_length", "plain", _ipc_body_claim, "invalid_ipc"),
    ("batch_before_schema", "plain", _swap_first_batches, "invalid_ipc"),
    ("second_schema", "plain", _second_schema, "invalid_ipc"),
    ("dictionary_missing", "dictionaries", _dictionary_missing, "invalid_ipc"),
    ("truncated_body", "zstd", _truncated_body, "invalid_ipc"),
    ("body_without_header", "plain", _body_without_header, "invalid_ipc"),
    ("last_batch_header_dropped", "plain", _last_batch_header_dropped, "invalid_ipc"),
    ("app_metadata_with_a_body", "plain", _app_metadata_and_body, "invalid_ipc"),
]


@pytest.mark.parametrize(
    ("name", "seed_name", "change", "expected"),
    [pytest.param(*case, id=case[0]) for case in FIXED],
)
def test_fixed_mutation(
    campaign: Campaign,
    name: str,
    seed_name: str,
    change: Callable[[list[Frame]], None],
    expected: str | None,
) -> None:
    seed = next(s for s in seeds() if s.name == seed_name)
    frames = seed.frames()
    change(frames)
    outcome = campaign.put(f"fixed case {name} (on {seed_name})", seed.table, frames)
    campaign.raise_failures()
    if expected is None:
        assert outcome.code is None, outcome.describe()
    else:
        assert outcome.code is not None, outcome.describe()
        assert outcome.details.startswith(f"{expected}: "), outcome.describe()


def after_the_campaign(campaign: Campaign, log_from: int) -> list[str]:
    """What is wrong once the puts are done: a table that does not read back as valid Arrow
    data or holds other rows than the successes reported, an internal error in the server's
    log."""
    problems = []
    tables = query(
        campaign.http,
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE table_type = 'BASE TABLE' AND table_schema <> '_arrowport'",  # not its own
    ).to_pylist()
    for table in tables:
        name = f'"{table["table_schema"]}"."{table["table_name"]}"'
        response = campaign.http.post("/query", json={"sql": f"SELECT * FROM {name}"})
        if response.status_code != 200:
            problems.append(f"table {name} cannot be read: {response.text}")
            continue
        landed = pa.ipc.open_stream(response.content).read_all()
        try:
            landed.validate(full=True)
        except (pa.ArrowException, ValueError) as exc:
            problems.append(f"table {name} holds invalid data: {exc}")
        expected = campaign.expected.get(table["table_name"])
        if expected is not None and landed.num_rows != expected:
            problems.append(f"table {name} holds {landed.num_rows} rows, {expected} reported")
    alarms = log_alarms(campaign.server.lines[log_from:])
    if alarms:
        problems.append(f"{len(alarms)} internal errors in the server log, the first: {alarms[0]}")
    return [f"after the campaign\n  {problem}" for problem in problems]


def test_mutated_puts_never_fail_the_server(campaign: Campaign) -> None:
    log_from = len(campaign.server.lines)
    all_seeds = seeds()
    sizes = []
    # The valid puts first: every later one goes to a table that exists.
    for seed in all_seeds:
        frames = seed.frames()
        outcome = campaign.put(f"{seed.name} as it is", seed.table, frames)
        campaign.raise_failures()
        assert outcome.code is None, outcome.describe()
        assert outcome.reply()["rows_processed"] == seed.rows
        sizes.append(sum(len(frame.encode()) for frame in frames))
    # Both ways a put is written are taken: group-committed, and streamed to DuckDB's thread.
    assert min(sizes) <= SMALL_BODY_BYTES < max(sizes), sizes

    for number in range(PUTS):
        put = mutated_put(all_seeds, number)
        label = f"put {number} of {put.seed.name}: {put.description}"
        campaign.put(label, put.seed.table, put.frames, put.cancel_after)
    answers = dict(campaign.answers.most_common())
    print(f"\nflight fuzz, seed {SEED}, {PUTS} puts: {answers}")
    campaign.failures += after_the_campaign(campaign, log_from)
    campaign.raise_failures()
    assert campaign.server.alive()
    assert {seed.table for seed in all_seeds} <= set(campaign.expected), campaign.expected
    assert answers.get("success", 0) > 0, answers
    assert len(answers) >= 4, answers  # several kinds of refusal, not one for everything
