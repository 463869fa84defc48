"""The blocking client."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import httpx
import pyarrow as pa

from arrowport.client import _endpoints as endpoints
from arrowport.client._batches import Compression, encode, iter_batches
from arrowport.client._errors import RequestError
from arrowport.client._http import Cert, Verify, connection_options, json_body, send
from arrowport.client._ingest import IngestRun, IngestSummary, Planned, Progress
from arrowport.client._models import ProducerOffset, StreamInfo, TableInfo
from arrowport.client._retry import RetryPolicy
from arrowport.options import DuplicateKeysPolicy, SchemaPolicy, WriteMode

DEFAULT_URL = "http://127.0.0.1:8000"


class Client:
    """A connection to an Arrowport server over HTTP.

    ``url`` is the server's base URL; ``token`` is sent as ``Authorization: Bearer <token>``.
    ``verify`` checks the server's TLS certificate: ``True`` (the usual CA bundle), a CA file's
    path, an ``ssl.SSLContext``, or ``False`` (no check). ``cert`` is a client certificate: a
    PEM file with the key, or ``(certificate, key)``. ``timeout`` bounds each wait for the
    server (seconds; ``None``: no limit), ``connect_timeout`` the connection's set-up.
    Transient failures are retried as ``retry`` says (:class:`RetryPolicy`). ``transport`` is an
    ``httpx`` transport to send through instead of the network (tests, proxies).

    Example::

        import pyarrow as pa
        from arrowport.client import Client

        with Client("http://127.0.0.1:8000", token="ap_loader_...") as client:
            client.ingest("events", pa.table({"id": [1, 2, 3]}))
            print(client.query("SELECT count(*) AS n FROM events"))
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
        transport: httpx.BaseTransport | None = None,
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
        self._http = httpx.Client(**options, transport=transport)
        self.retry = retry or RetryPolicy()

    @property
    def url(self) -> str:
        return str(self._http.base_url)

    def close(self) -> None:
        """Close the connections (also done by leaving a ``with`` block)."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- writing ---------------------------------------------------------------------------------

    def ingest(
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
        """Land ``data`` in ``stream``'s table, exactly once, in bounded memory.

        ``data`` is anything that speaks the Arrow PyCapsule stream interface
        (``__arrow_c_stream__``): a pyarrow ``Table`` or ``RecordBatchReader``, a polars
        ``DataFrame``, a DuckDB relation, a pandas DataFrame (or ``pa.Table.from_pandas(df)``);
        or an iterable of ``pyarrow.RecordBatch``. It is read batch by batch in the calling
        thread and cut into requests of at most ``request_rows`` rows (default 1,000,000) and
        ``request_bytes`` bytes of Arrow data (default 16 MiB); each request is one Arrow IPC
        stream, compressed as ``compression`` says (``"zstd"``, ``"gzip"`` or ``None``), and one
        transaction on the server. The next request is compressed while one is sent.

        ``table``, ``mode``, ``key_columns``, ``schema_policy``, ``duplicate_keys`` and
        ``chunk_size`` are the server's ingest options (``None``: the stream's configuration
        decides). Data without rows (but with a schema) is one empty request: it creates the
        table, or empties it with ``mode="replace"``. ``mode="replace"`` or ``"create"`` applies to the data as a whole: the first
        request replaces or creates the table and the others append to it (keep the data within
        one request for a replace that readers see all at once).

        Exactly once: every request carries a producer offset, ``producer_id`` and a
        ``sequence``. Without ``producer_id`` a fresh one is made for the call, counting from 0;
        with one, the call continues from that producer's next sequence. A transient failure
        (no answer, a timeout, 503, 502, 504, another 5xx) is retried with the same body and
        sequence, so a request whose answer was lost after its commit is acknowledged as a
        duplicate instead of landing twice. Anything else raises
        :class:`~arrowport.client.ArrowportClientError`; the requests before it stay committed
        (with a ``producer_id`` and ``resume=True``, running the call again finishes the job).

        ``resume=True`` (with ``producer_id``) sends the same data as an earlier run of that
        producer that was interrupted: requests are cut by ``request_rows`` alone, numbered from
        0, and those the server already committed are skipped, so the rerun lands the rest and
        every row exactly once. The data, its order and ``request_rows`` must be the same.

        ``progress`` is called with the running :class:`IngestSummary` after each request.

        Example::

            summary = client.ingest("events", table, table="events_raw")
            print(summary.rows, summary.requests)

            # A large file, resumable by rerunning the same call:
            import pyarrow.parquet as pq
            reader = pq.ParquetFile("big.parquet").iter_batches(batch_size=100_000)
            client.ingest("events", reader, producer_id="big.parquet-v1", resume=True,
                          request_rows=100_000)
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
        offset = self.producer(stream, run.producer_id) if run.asks_offset else None
        run.begin(offset)
        with ThreadPoolExecutor(1, thread_name_prefix="arrowport-encode") as encoder:
            waiting: tuple[Planned, Future[bytes]] | None = None
            for batches in self._requests(run, data):
                planned = run.plan(batches)
                if planned.index == 1 and run.needs_stream:  # before anything is sent
                    run.learn(self._stream_served(stream))
                if planned.skip:  # only ever the first ones
                    run.skipped(planned)
                    continue
                encoded = encoder.submit(encode, batches, run.compression)
                del batches
                if waiting is not None:
                    self._send_request(run, *waiting)
                waiting = (planned, encoded)
            if waiting is not None:
                self._send_request(run, *waiting)
        return run.summary()

    @staticmethod
    def _requests(run: IngestRun, data: Any) -> Iterator[list[pa.RecordBatch]]:
        for batch in iter_batches(data, run.cutter):
            yield from run.cutter.add(batch)
        last = run.cutter.finish()
        if last is not None:
            yield last

    def _send_request(self, run: IngestRun, planned: Planned, encoded: Future[bytes]) -> None:
        body = encoded.result()
        response, attempts = send(self._http, run.call(planned, body), self.retry)
        run.acknowledged(planned, body, json_body(response), attempts)

    # -- reading ---------------------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
        """The answer of one read-only ``SELECT`` as a pyarrow Table (``?`` or ``$1``
        placeholders take ``params``).

        Example::

            frame = client.query("SELECT * FROM events WHERE id > ?", [100]).to_pandas()
            frame = polars.from_arrow(client.query("SELECT * FROM events"))
        """
        response, _ = send(self._http, endpoints.query(sql, params, "arrow"), self.retry)
        return endpoints.arrow_table(response)

    def query_bytes(
        self,
        sql: str,
        params: Sequence[Any] | None = None,
        *,
        format: endpoints.QueryFormat = "arrow",
    ) -> bytes:
        """The answer as the server renders it: an Arrow IPC stream, CSV, or JSON
        (``{"columns", "rows", "row_count"}``)."""
        response, _ = send(self._http, endpoints.query(sql, params, format), self.retry)
        return response.content

    def tables(self) -> list[TableInfo]:
        """Every table, with its columns and row count."""
        response, _ = send(self._http, endpoints.tables(), self.retry)
        return endpoints.parse_tables(response)

    def table(self, name: str) -> TableInfo:
        """One table; ``RequestError`` with code ``unknown_table`` if there is none."""
        response, _ = send(self._http, endpoints.table(name), self.retry)
        return endpoints.parse_table(response)

    def streams(self) -> list[StreamInfo]:
        """The streams configured on the server."""
        response, _ = send(self._http, endpoints.streams(), self.retry)
        return endpoints.parse_streams(response)

    def stream(self, name: str) -> StreamInfo:
        """How the server writes a request to stream ``name`` that sets no option of its own
        (its table, mode, key columns, policies), and whether it is locked to them."""
        response, _ = send(self._http, endpoints.stream(name), self.retry)
        return endpoints.parse_stream(response)

    def _stream_served(self, name: str) -> StreamInfo | None:
        """:meth:`stream`, or None from a server too old to serve it."""
        try:
            return self.stream(name)
        except RequestError as exc:
            if endpoints.unserved(exc):
                return None
            raise

    def producer(self, stream: str, producer_id: str) -> ProducerOffset:
        """Where a producer stands on a stream (its last committed sequence)."""
        response, _ = send(self._http, endpoints.producer(stream, producer_id), self.retry)
        return endpoints.parse_producer(response)

    def health(self) -> dict[str, Any]:
        """``{"status": "ok"}`` when the server answers (no token needed)."""
        response, _ = send(self._http, endpoints.health(), self.retry)
        return endpoints.parse_health(response)
