"""The seed's JSON/base64 body, read as it arrives.

``{"config": {...}, "batch": {"arrow_schema": b64, "data": b64}}``: what comes before
``batch.data`` is small and parsed first (it names the table and the options); ``batch.data``,
almost all of a large body, is decoded from base64 chunk by chunk on its way to the Arrow IPC
reader; what follows it is parsed at the end, and the write commits only once the whole body has
proved to be the JSON document it started as. So a large body is never held in memory, whatever
its size.

A body that cannot be read this way (``batch.data`` before ``config``, or no ``config`` at all;
``batch.data`` not where the seed puts it) is read whole instead: :meth:`SeedJsonReader.open`
says which.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pyarrow as pa
import pybase64

from arrowport.errors import InvalidBase64, InvalidJSON, InvalidOptions, PayloadTooLarge, shown
from arrowport.ingest.payload import Codec, sniff_codec

# The key of the (large) base64 payload, as a JSON token: not preceded by a backslash, so it
# cannot be the inside of another string.
DATA_KEY = re.compile(rb'(?<!\\)"data"\s*:\s*"')

# How far back a search for the key starts again when the next chunk arrives (a key split across
# two chunks, with some white space). A key past more white space than this is not found: the
# body is then read whole, which is always correct.
_KEY_OVERLAP = 1024

# JSON this large is parsed on a worker thread: on the event loop it would stall other requests.
_INLINE_JSON_BYTES = 256 * 1024

T = TypeVar("T")


async def off_the_loop(parse: Callable[[bytes | bytearray], T], text: bytes | bytearray) -> T:
    """``parse(text)``: on the event loop when ``text`` is small, on a worker thread when it
    is large enough to stall the loop's other requests."""
    if len(text) > _INLINE_JSON_BYTES:
        return await asyncio.to_thread(parse, text)
    return parse(text)


# The first IPC message (the schema) is kept while it is this small, to check an
# ``arrow_schema`` that only comes after ``batch.data``.
_SCHEMA_BYTES = 1024**2


def loads(text: bytes | bytearray, what: str = "the JSON body") -> Any:
    """``json.loads``, but 422 ``invalid_options`` for an object that repeats a key (which
    ``json.loads`` would silently give its last value, whatever came first); ``what`` names the
    document in the message."""

    def once_each(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidOptions(f"{what} repeats the key {shown(key)}; send each key once")
            seen.add(key)
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=once_each)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError:  # a number of more digits than Python converts (4,300)
        raise InvalidJSON(f"{what} is not acceptable JSON: a number in it is too long") from None


def parse_json(body: bytes | bytearray) -> Any:
    """A JSON document; 400 ``invalid_json`` for anything else (too deeply nested included), 422
    for a repeated key."""
    try:
        return loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidJSON("body is not acceptable JSON: it nests too deeply") from None


class SeedJsonReader:
    """Reads a seed-format body from ``chunks`` (already paced), at most ``limit`` bytes;
    ``hold(n)`` is told of every ``n`` bytes it keeps in memory (the body read whole, what
    comes before and after ``batch.data``), before it keeps them."""

    def __init__(
        self, chunks: AsyncIterator[bytes], limit: int, hold: Callable[[int], None]
    ) -> None:
        self._chunks = chunks
        self._limit = limit
        self._hold = hold
        self._received = 0
        self._head = bytearray()
        self._prefix = b""
        self.codec: Codec | None = None
        self._first_message = bytearray()

    async def _next(self) -> bytes | None:
        chunk = await anext(self._chunks, None)
        if chunk is not None:
            self._received += len(chunk)
            if self._received > self._limit:
                raise PayloadTooLarge(
                    f"body exceeds the limit of {self._limit} bytes", limit=self._limit
                )
        return chunk

    async def open(self) -> dict[str, Any] | None:
        """Read up to the start of ``batch.data``: the document so far (``batch.data`` empty)
        when the rest can be read as it arrives, else None (then read it with :meth:`whole`)."""
        searched = 0
        while (match := DATA_KEY.search(self._head, max(0, searched - _KEY_OVERLAP))) is None:
            searched = len(self._head)
            chunk = await self._next()
            if chunk is None:
                return None
            self._hold(len(chunk))
            self._head += chunk
        prefix = bytes(self._head[: match.end()])
        document = await off_the_loop(_document_before_data, prefix)
        if document is None:
            return None
        # The first bytes of the payload say whether it is itself compressed.
        while len(self._head) - match.end() < 8 and b'"' not in self._head[match.end() :]:
            chunk = await self._next()
            if chunk is None:
                break
            self._hold(len(chunk))
            self._head += chunk
        start = bytes(self._head[match.end() : match.end() + 8])
        try:
            self.codec = sniff_codec(pybase64.b64decode(start, validate=True))
        except (binascii.Error, ValueError):
            self.codec = None  # the decoder answers for it
        self._prefix = prefix
        del self._head[: match.end()]
        return document

    async def whole(self) -> bytearray:
        """The whole body (what was read so far and the rest)."""
        body = self._head
        while (chunk := await self._next()) is not None:
            self._hold(len(chunk))
            body += chunk
        self._head = bytearray()
        return body

    async def decoded(self, check: Callable[[Any], None]) -> AsyncIterator[bytes]:
        """The bytes of ``batch.data`` as they arrive; at the end, the whole document (with
        ``batch.data`` empty) is parsed and handed to ``check``, which raises if it is not
        what :meth:`open` returned."""
        decoder = _Base64Decoder()
        tail: bytearray | None = None
        chunk: bytes | None = bytes(self._head)
        self._head = bytearray()
        while chunk is not None:
            if tail is None:
                quote = chunk.find(b'"')
                data = decoder.feed(chunk if quote < 0 else chunk[:quote])
                if data:
                    if len(self._first_message) < _SCHEMA_BYTES:
                        kept = data[: _SCHEMA_BYTES - len(self._first_message)]
                        self._hold(len(kept))
                        self._first_message += kept
                    yield data
                if quote >= 0:
                    decoder.close()
                    self._hold(len(chunk) - quote - 1)
                    tail = bytearray(chunk[quote + 1 :])
            else:
                self._hold(len(chunk))
                tail += chunk
            chunk = await self._next()
        if tail is None:
            raise InvalidJSON("body is not valid JSON: it ends inside batch.data")
        check(await off_the_loop(parse_json, self._prefix + b'"' + tail))

    def stream_schema(self) -> pa.Schema | None:
        """The schema at the start of the IPC stream, when it is uncompressed and was small
        enough to keep (None otherwise)."""
        head = bytes(self._first_message)
        if self.codec is not None or len(head) < 8:
            return None
        length = int.from_bytes(head[4:8], "little", signed=True)
        if not 0 < length <= len(head) - 8:
            return None
        try:
            return pa.ipc.read_schema(pa.py_buffer(head[: 8 + length]))
        except (pa.ArrowException, OSError, ValueError):
            return None


def _document_before_data(prefix: bytes | bytearray) -> dict[str, Any] | None:
    """The document ``prefix`` starts, if ``prefix`` ends where ``batch.data``'s value starts,
    inside the document's ``batch`` object, after its ``config``."""
    try:
        document = loads(prefix + b'"}}')
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict) or "config" not in document:
        return None
    batch = document.get("batch")
    if not isinstance(batch, dict) or batch.get("data") != "":
        return None
    return document


class _Base64Decoder:
    """Base64 text fed in pieces of any size, decoded in whole 4-character groups. Checks what
    decoding it at once would: only base64 characters, padding only at its very end, a length that
    is a multiple of 4. JSON's one escape a base64 text may carry, ``\\/``, is undone."""

    def __init__(self) -> None:
        self._carry = b""
        self._padded = False

    def feed(self, text: bytes) -> bytes:
        text = self._carry + text
        if b"\\" in text:
            # An escape cut in two at the end of a chunk waits for its second character.
            cut = text.endswith(b"\\") and not text.endswith(b"\\\\")
            body, self._carry = (text[:-1], b"\\") if cut else (text, b"")
            text = body.replace(b"\\/", b"/")
            if b"\\" in text:
                raise InvalidBase64(
                    "batch.data is not valid base64: it holds a JSON escape other than \\/"
                )
        else:
            self._carry = b""
        whole = len(text) - len(text) % 4
        self._carry = text[whole:] + self._carry
        if not whole:
            return b""
        if self._padded:
            raise InvalidBase64("batch.data is not valid base64: padding before its end")
        try:
            data = pybase64.b64decode(text[:whole], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidBase64(f"batch.data is not valid base64: {exc}") from None
        self._padded = text[whole - 1] == ord("=")
        return data

    def close(self) -> None:
        if self._carry:
            raise InvalidBase64("batch.data is not valid base64: its length is not a multiple of 4")
