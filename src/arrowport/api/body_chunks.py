"""A request body's pending chunks, handed to the app as they arrived.

uvicorn collects the chunks that arrive between two ``receive()`` calls by appending each to a
``bytearray`` and hands the app ``bytes(that bytearray)``: two copies of every body byte on the
event loop, which was a third of its time during a large upload (profiled with py-spy: the
event loop, not DuckDB, was what a 1M-row binary ingest waited for). :class:`BodyChunks` stands
in for that ``bytearray``: ``+=`` keeps the chunk as it is, ``len()`` is the bytes pending (for
uvicorn's flow control), and ``bytes()`` is the chunk itself when there is one, a single join
otherwise.
"""

from __future__ import annotations

from typing import Self


class BodyChunks:
    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __iadd__(self, chunk: bytes) -> Self:
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        if len(self._chunks) == 1:
            return self._chunks[0]
        return b"".join(self._chunks)
