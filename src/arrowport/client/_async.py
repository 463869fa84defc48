"""The ``asyncio`` client: the same calls as :class:`~arrowport.client.Client`, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, Mapping, Sequence
from typing import Any, Literal

import httpx
import pyarrow as pa

from arrowport.client import _endpoints as endpoints
from arrowport.client._batches import (
    Compression,
    arrow_reader,
    as_batches,
    check_iterable,
    encode,
    next_batch,
)
from arrowport.client._errors import RequestError
from arrowport.client._http import Cert, Verify, connection_options, json_body, send_async
from arrowport.client._ingest import IngestRun, IngestSummary, Planned, Progress
from arrowport.client._models import ProducerOffset, StreamInfo, TableInfo
from arrowport.client._retry import RetryPolicy
from arrowport.client._sync import DEFAULT_URL
from arrowport.options import DuplicateKeysPolicy, SchemaPolicy, WriteMode


class AsyncClient:
    """:class:`~arrowport.client.Client` for ``asyncio``: the same options and methods, each a
    coroutine.

    Reading Arrow data (tables, readers, DataFrames, relations) and compressing requests run in
    worker threads, so the event loop stays free; an iterable of batches is read in the loop's
    thread, and an asynchronous iterable of batches works too.

    Example::

        import asyncio
        import pyarrow as pa
        from arrowport.client import AsyncClient

        async def main() -> None:
            async with AsyncClient("http://127.0.0.1:8000") as client:
                await client.ingest("events", pa.table({"id": [1, 2, 3]}))
                print(await client.query("SELECT count(*) AS n FROM events"))

        asyncio.run(main())
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        verify: Verify = True,
        cert: Cert | None = None,
        timeout: float | None = 60.0,
        connect_timeout: float | None = 10.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        options = connection_options(
            url,
            token=token,
            verify=verify,
            cert=cert,
            timeout=timeout,
            connect_timeout=connect_timeout,
            headers=headers,
        )
        self._http = httpx.AsyncClient(**options, transport=transport)
        self.retry = retry or RetryPolicy()

    @property
    def url(self) -> str:
        return str(self._http.base_url)

    async def aclose(self) -> None:
        """Close the connections (also done by leaving an ``async with`` block)."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient({self.url!r})"

    # -- writing ---------------------------------------------------------------------------------

    async def ingest(
        self,
        stream: str,
        data: Any,
        *,
        table: str | None = None,
        mode: WriteMode | None = None,
        key_columns: Sequence[str] | str | None = None,
        schema_policy: SchemaPolicy | None = None,
        duplicate_keys: DuplicateKeysPolicy | None = None,
        chunk_size: int | None = None,
        producer_id: str | None = None,
        resume: bool = False,
        request_rows: int | None = None,
        request_bytes: int | None = None,
        compression: Compression | Literal["none"] | None = "zstd",
        progress: Progress | None = None,
    ) -> IngestSummary:
        """:meth:`Client.ingest <arrowport.client.Client.ingest>`, awaited; ``data`` may also
        be an asynchronous iterable of ``pyarrow.RecordBatch``. The next request is read and
        compressed while one is sent.

        Example::

            async def batches():
                for start in range(0, 1_000_000, 10_000):
                    yield pa.record_batch({"id": list(range(start, start + 10_000))})

            summary = await client.ingest("events", batches())
        """
        run = IngestRun(
            stream,
            table=table,
            mode=mode,
            key_columns=key_columns,
            schema_policy=schema_policy,
            duplicate_keys=duplicate_keys,
            chunk_size=chunk_size,
            producer_id=producer_id,
            resume=resume,
            request_rows=request_rows,
            request_bytes=request_bytes,
            compression=compression,
            progress=progress,
        )
        offset = await self.producer(stream, run.producer_id) if run.asks_offset else None
        run.begin(offset)
        sending: asyncio.Task[None] | None = None
        # The first request waits until it is known whether another follows: the stream's mode
        # then decides how the others are sent (see IngestRun.learn).
        first: tuple[Planned, bytes] | None = None
        try:
            async with contextlib.aclosing(self._requests(run, data)) as requests:
                async for batches in requests:
                    planned = run.plan(batches)
                    if planned.index == 1 and run.needs_stream:  # before anything is sent
                        run.learn(await self._stream_served(stream))
                    if planned.skip:  # only ever the first ones
                        run.skipped(planned)
                        continue
                    body = await asyncio.to_thread(encode, batches, run.compression)
                    del batches
                    if first is not None:
                        sending = asyncio.create_task(self._send_request(run, *first))
                        first = None
                    if planned.index == 0 and run.needs_stream:
                        first = (planned, body)
                        continue
                    if sending is not None:
                        await sending
                    sending = asyncio.create_task(self._send_request(run, planned, body))
            if first is not None:
                await self._send_request(run, *first)
            if sending is not None:
                await sending
        finally:
            if sending is not None and not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
        return run.summary()

    @staticmethod
    async def _requests(run: IngestRun, data: Any) -> AsyncGenerator[list[pa.RecordBatch], None]:
        reader = await asyncio.to_thread(arrow_reader, data)
        if reader is not None:
            run.cutter.expect(reader.schema)
            while (batch := await asyncio.to_thread(next_batch, reader)) is not None:
                for ready in run.cutter.add(batch):
                    yield ready
        elif isinstance(data, AsyncIterable):
            position = 0
            async for item in data:
                for batch in as_batches(item, position):
                    for ready in run.cutter.add(batch):
                        yield ready
                position += 1
        else:
            check_iterable(data, asynchronous=True)
            for position, item in enumerate(data):
                for batch in as_batches(item, position):
                    for ready in run.cutter.add(batch):
                        yield ready
        last = run.cutter.finish()
        if last is not None:
            yield last

    async def _send_request(self, run: IngestRun, planned: Planned, body: bytes) -> None:
        response, attempts = await send_async(self._http, run.call(planned, body), self.retry)
        run.acknowledged(planned, body, json_body(response), attempts)

    # -- reading ---------------------------------------------------------------------------------

    async def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """The answer of one read-only ``SELECT`` as a pyarrow Table."""
        response, _ = await send_async(
            self._http, endpoints.query(sql, params, "arrow"), self.retry
        )
        return await asyncio.to_thread(endpoints.arrow_table, response)

    async def query_bytes(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        format: endpoints.QueryFormat = "arrow",
    ) -> bytes:
        """The answer as the server renders it: an Arrow IPC stream, CSV, or JSON."""
        response, _ = await send_async(self._http, endpoints.query(sql, params, format), self.retry)
        return response.content

    async def tables(self) -> list[TableInfo]:
        """Every table, with its columns and row count."""
        response, _ = await send_async(self._http, endpoints.tables(), self.retry)
        return endpoints.parse_tables(response)

    async def table(self, name: str) -> TableInfo:
        """One table; ``RequestError`` with code ``unknown_table`` if there is none."""
        response, _ = await send_async(self._http, endpoints.table(name), self.retry)
        return endpoints.parse_table(response)

    async def streams(self) -> list[StreamInfo]:
        """The streams configured on the server."""
        response, _ = await send_async(self._http, endpoints.streams(), self.retry)
        return endpoints.parse_streams(response)

    async def stream(self, name: str) -> StreamInfo:
        """How the server writes a request to stream ``name`` that sets no option of its own
        (its table, mode, key columns, policies), and whether it is locked to them."""
        response, _ = await send_async(self._http, endpoints.stream(name), self.retry)
        return endpoints.parse_stream(response)

    async def _stream_served(self, name: str) -> StreamInfo | None:
        """:meth:`stream`, or None from a server too old to serve it."""
        try:
            return await self.stream(name)
        except RequestError as exc:
            if endpoints.unserved(exc):
                return None
            raise

    async def producer(self, stream: str, producer_id: str) -> ProducerOffset:
        """Where a producer stands on a stream (its last committed sequence)."""
        response, _ = await send_async(
            self._http, endpoints.producer(stream, producer_id), self.retry
        )
        return endpoints.parse_producer(response)

    async def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` when the server answers (no token needed)."""
        response, _ = await send_async(self._http, endpoints.health(), self.retry)
        return endpoints.parse_health(response)
