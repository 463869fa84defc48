"""Arrow IPC messages, read one by one and checked before pyarrow decodes any of them.

pyarrow decodes a record batch as soon as it has read its message, decompressing every buffer
(an IPC stream may compress its buffers with zstd or LZ4): 99 KB of zstd can decode to 3 GB, and a
schema of 100,000 columns costs seconds to build. So every message's metadata (a flatbuffer) is
read here first and checked against :class:`PayloadLimits` — columns and nesting of the schema,
field names that are valid UTF-8, the size every buffer will have once decompressed, counted
against the request's budget as it grows — and against its schema: every batch must carry the
field nodes and buffers its schema implies (:mod:`arrowport.ingest.ipc_layout`). Only then is it
handed on. A message that breaks a limit is refused before pyarrow allocates anything for it.

Messages come from a byte stream (an HTTP body; see :mod:`arrowport.ingest.ipc_stream`) or from
Flight's frames (:class:`Message` s built by the Flight adapter).

The flatbuffer layouts read here are Arrow's ``Message.fbs`` and ``Schema.fbs``; only the fields
the checks need are read, and every offset is bounds-checked (the input is hostile).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from arrowport.errors import (
    InvalidIPC,
    InvalidName,
    PayloadTooLarge,
    TooManyColumns,
)
from arrowport.ingest.ipc_layout import SchemaLayout, schema_layout

CONTINUATION = b"\xff\xff\xff\xff"
END_OF_STREAM = CONTINUATION + b"\x00\x00\x00\x00"
LEGACY_END = b"\x00\x00\x00\x00"

# MessageHeader union members (Message.fbs).
SCHEMA = 1
DICTIONARY_BATCH = 2
RECORD_BATCH = 3
_KINDS = {SCHEMA: "schema", DICTIONARY_BATCH: "dictionary batch", RECORD_BATCH: "record batch"}

# Deeper nesting than this is no real schema, and recursion over it would be a risk of its own.
MAX_NESTING = 64


@dataclass(frozen=True)
class PayloadLimits:
    """What one request's Arrow data may amount to, decoded."""

    max_body_bytes: int
    max_message_bytes: int
    max_columns: int

    def __post_init__(self) -> None:
        if min(self.max_body_bytes, self.max_message_bytes, self.max_columns) < 1:
            raise ValueError("limits must be positive")


class _Corrupt(Exception):
    """An offset or length in a flatbuffer points outside it."""


class _Table:
    """One flatbuffer table: its fields by index, every position checked against the buffer."""

    __slots__ = ("_buf", "_pos", "_vsize", "_vtable")

    def __init__(self, buf: bytes | memoryview, pos: int) -> None:
        self._buf = buf
        self._pos = pos
        vtable = pos - self._int(pos, "<i")
        vsize = self._int(vtable, "<H")
        if vsize < 4 or vsize % 2:
            raise _Corrupt
        self._int(vtable + vsize - 2, "<H")  # the whole vtable lies inside the buffer
        self._vtable = vtable
        self._vsize = vsize

    def _int(self, pos: int, fmt: str) -> int:
        if pos < 0:
            raise _Corrupt
        try:
            value: int = struct.unpack_from(fmt, self._buf, pos)[0]
        except struct.error:
            raise _Corrupt from None
        return value

    def _field(self, index: int) -> int | None:
        entry = 4 + 2 * index
        if entry >= self._vsize:
            return None
        offset = self._int(self._vtable + entry, "<H")
        return self._pos + offset if offset else None

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        pos = self._field(index)
        return default if pos is None else self._int(pos, fmt)

    def _target(self, index: int) -> int | None:
        pos = self._field(index)
        return None if pos is None else pos + self._int(pos, "<I")

    def table(self, index: int) -> _Table | None:
        target = self._target(index)
        return None if target is None else _Table(self._buf, target)

    def vector(self, index: int, element_size: int) -> tuple[int, int] | None:
        """(position of the first element, element count) of a vector field."""
        target = self._target(index)
        if target is None:
            return None
        count = self._int(target, "<I")
        start = target + 4
        if count and start + count * element_size > len(self._buf):
            raise _Corrupt
        return start, count

    def tables(self, index: int) -> Iterator[_Table]:
        found = self.vector(index, 4)
        if found is None:
            return
        start, count = found
        for i in range(count):
            pos = start + 4 * i
            yield _Table(self._buf, pos + self._int(pos, "<I"))

    def string(self, index: int) -> bytes | None:
        found = self.vector(index, 1)
        if found is None:
            return None
        start, count = found
        return bytes(self._buf[start : start + count])

    def longs(self, index: int, width: int = 1) -> tuple[int, ...]:
        """The int64s of a vector field whose elements are ``width`` int64s each (a struct of
        them), all in one tuple: a vector of (offset, length) structs as offset, length, ..."""
        found = self.vector(index, 8 * width)
        if found is None:
            return ()
        start, count = found
        return struct.unpack_from(f"<{count * width}q", self._buf, start)


@dataclass(frozen=True)
class Message:
    """One IPC message: its metadata flatbuffer and its body, as received."""

    metadata: bytes | memoryview
    body: bytes | memoryview
    kind: int
    body_length: int

    @classmethod
    def parse(cls, metadata: bytes | memoryview, body: bytes | memoryview | None = None) -> Message:
        """Read a message's metadata; ``body`` (when already at hand) must have its length."""
        try:
            root = _Table(metadata, struct.unpack_from("<I", metadata, 0)[0])
            kind = root.scalar(1, "<B")
            body_length = root.scalar(3, "<q")
        except (_Corrupt, struct.error):
            raise InvalidIPC("an Arrow IPC message's metadata is corrupt") from None
        if kind not in _KINDS:
            raise InvalidIPC(
                f"unsupported Arrow IPC message type {kind}: send a stream of record batches"
            )
        if body_length < 0:
            raise InvalidIPC("an Arrow IPC message declares a negative body length")
        if body is not None and len(body) != body_length:
            raise InvalidIPC(
                f"an Arrow IPC message's body has {len(body)} bytes; its metadata says {body_length}"
            )
        return cls(metadata, body if body is not None else b"", kind, body_length)

    def with_body(self, body: bytes | memoryview) -> Message:
        return Message(self.metadata, body, self.kind, self.body_length)

    def _root(self) -> _Table:
        return _Table(self.metadata, struct.unpack_from("<I", self.metadata, 0)[0])

    def _header(self, root: _Table | None = None) -> _Table:
        header = (root if root is not None else self._root()).table(2)
        if header is None:
            raise _Corrupt
        return header

    def count_columns(self, limit: int) -> int:
        """The fields of a schema message, nested ones included (stops counting past ``limit``);
        400 for a field name that is not UTF-8, 413 past ``limit`` or :data:`MAX_NESTING`."""
        return self.layout(limit).columns

    def layout(self, limit: int) -> SchemaLayout:
        """A schema message's fields, counted as :meth:`count_columns` counts them, and what each
        of its batches must carry (400 for a field of no known type)."""
        if len(self.metadata) <= _REMEMBERED_SCHEMA_BYTES:
            return _remembered_layout(bytes(self.metadata), limit)
        return _layout(self, limit)

    def decoded_body_bytes(self, schema: SchemaLayout | None = None) -> int:
        """What the body will take once pyarrow has decompressed its buffers; given its stream's
        ``schema``, 400 unless the batch carries the field nodes and buffers that implies."""
        if self.kind == SCHEMA:
            return 0
        try:
            root = self._root()
            batch = self._header(root)
            layout = None if schema is None else schema.batch
            what = "record batch"
            if self.kind == DICTIONARY_BATCH:
                if schema is not None:
                    dictionary_id = batch.scalar(0, "<q")
                    layout = schema.dictionary(dictionary_id)
                    what = f"dictionary batch (id {dictionary_id})"
                inner = batch.table(1)
                if inner is None:
                    raise _Corrupt
                batch = inner
            buffers = batch.longs(2, 2)  # offset, length of each buffer
            compressed = batch.table(3) is not None
            if layout is not None:
                layout.check(root, batch, len(buffers) // 2, what)
        except (_Corrupt, struct.error):
            raise InvalidIPC("an Arrow IPC record batch message is corrupt") from None
        body = self.body
        total = 0
        pairs = iter(buffers)
        for offset, length in zip(pairs, pairs, strict=True):
            if offset < 0 or length < 0 or offset + length > len(body):
                raise InvalidIPC("an Arrow IPC buffer lies outside its message body")
            if not compressed:
                total += length
            elif length:
                # A compressed buffer starts with its length once decompressed (-1: stored as is).
                if length < 8:
                    raise InvalidIPC("a compressed Arrow IPC buffer is shorter than its header")
                size = struct.unpack_from("<q", body, offset)[0]
                if size < -1:
                    raise InvalidIPC("a compressed Arrow IPC buffer declares a negative size")
                total += length - 8 if size == -1 else size
        return total


# Producers send the same schema with every request, so a small schema's check is remembered: the
# same bytes and limit always count the same (a schema that fails is checked again each time).
_REMEMBERED_SCHEMA_BYTES = 16 * 1024


@functools.lru_cache(maxsize=256)
def _remembered_layout(metadata: bytes, limit: int) -> SchemaLayout:
    return _layout(Message.parse(metadata), limit)


def _layout(message: Message, limit: int) -> SchemaLayout:
    columns = _count_columns(message, limit)
    try:
        return schema_layout(message._header(), columns)
    except (_Corrupt, struct.error):
        raise InvalidIPC("the Arrow IPC schema message is corrupt") from None


def _count_columns(message: Message, limit: int) -> int:
    counted = 0
    try:
        stack = [message._header().tables(1)]
        while stack:
            field = next(stack[-1], None)
            if field is None:
                stack.pop()
                continue
            counted += 1
            if counted > limit:
                raise TooManyColumns(
                    f"the schema has more than {limit} columns (nested fields included; "
                    "limits.max_columns)",
                    limit=limit,
                )
            if len(stack) > MAX_NESTING:
                raise TooManyColumns(f"the schema nests deeper than {MAX_NESTING} levels")
            name = field.string(0) or b""
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidName(
                    f"a field name is not UTF-8 text: {name[:64]!r}", column=repr(name[:64])
                ) from None
            stack.append(field.tables(5))
    except (_Corrupt, struct.error):
        raise InvalidIPC("the Arrow IPC schema message is corrupt") from None
    return counted


class PayloadBudget:
    """Counts a request's decoded bytes against its limits as its messages arrive."""

    def __init__(self, limits: PayloadLimits) -> None:
        self.limits = limits
        self.decoded = 0
        self.messages = 0
        self.schema: SchemaLayout | None = None

    def admit(self, message: Message) -> None:
        limits = self.limits
        self.messages += 1
        if self.messages == 1:
            if message.kind != SCHEMA:
                raise InvalidIPC("an Arrow IPC stream must start with its schema")
            self.schema = message.layout(limits.max_columns)
        elif message.kind == SCHEMA:
            raise InvalidIPC("an Arrow IPC stream carries a second schema")
        size = len(message.metadata) + message.decoded_body_bytes(self.schema)
        if size > limits.max_message_bytes:
            raise PayloadTooLarge(
                f"an Arrow IPC message decodes to {size} bytes, above the limit of "
                f"{limits.max_message_bytes} (limits.max_message_bytes): send smaller batches",
                limit=limits.max_message_bytes,
            )
        self.decoded += size
        if self.decoded > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"the payload decodes to more than {limits.max_body_bytes} bytes "
                "(limits.max_body_bytes)",
                limit=limits.max_body_bytes,
            )
