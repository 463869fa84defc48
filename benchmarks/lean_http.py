"""A lean asyncio HTTP/1.1 client: one keep-alive connection, one request at a time.

The load generator shares two cores with the server, so its cost per request must be small:
this sends a prepared request head plus body and parses only the status line, the headers it
needs and the body. It is not a general HTTP client — it talks to Arrowport on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Bodies larger than this are written piece by piece (see Connection.request).
WRITE_PIECE = 1024 * 1024


@dataclass
class Reply:
    status: int
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """``async with Connection(url) as conn: reply = await conn.post(path, body, headers)``."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(
            self.host, self.port, limit=1024**2
        )

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None

    def _head(self, method: str, path: str, length: int | None, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if length is not None:
            lines.append(f"Content-Length: {length}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def get(self, path: str) -> Reply:
        return await self.request("GET", path, None, {})

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        return await self.request("POST", path, body, headers)

    async def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply:
        if self._writer is None:
            await self.open()
        assert self._reader is not None
        assert self._writer is not None
        started = time.perf_counter()
        head = self._head(method, path, None if body is None else len(body), headers)
        if body is not None and len(body) <= WRITE_PIECE:
            self._writer.write(head + body)
        else:
            self._writer.write(head)
            # In pieces: handed a large body at once, asyncio copies whatever the socket does
            # not take right away (tens of MB, fresh pages) before sending more, and the server
            # sat idle for ~40 ms in the middle of a 41 MB body waiting for it.
            view = memoryview(body or b"")
            for offset in range(0, len(view), WRITE_PIECE):
                self._writer.write(view[offset : offset + WRITE_PIECE])
                await self._writer.drain()
        await self._writer.drain()
        status, reply_body, keep_alive = await self._read_response()
        seconds = time.perf_counter() - started
        if not keep_alive:
            await self.close()
        return Reply(status, reply_body, seconds)

    async def _read_response(self) -> tuple[int, bytes, bool]:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
        keep_alive = fields.get("connection", "").lower() != "close"
        if "content-length" in fields:
            body = await self._reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await self._reader.readuntil(b"\r\n")
                    break
                parts.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            body = b"".join(parts)
        else:
            body = await self._reader.read()
            keep_alive = False
        return status, body, keep_alive
