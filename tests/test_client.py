"""The Python client (``arrowport.client``) against real servers: every input kind, request
cutting, retries that never duplicate (a lost answer, 503s, a server killed mid-ingest), errors
with their codes, resumes, the read calls, TLS, the asyncio client and a light import."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import httpx
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
import trustme
import zstandard

from arrowport.auth import hash_secret, new_token
from arrowport.client import (
    ArrowportClientError,
    AsyncClient,
    Client,
    ConnectionFailed,
    IngestSummary,
    RequestError,
    RetryPolicy,
    TransientError,
)
from tests.server import ArrowportProcess, free_port

FAST_RETRY = RetryPolicy(max_retries=5, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    config = {"streams": {"events": {"table": "event_rows", "schema_policy": "evolve"}}}
    with ArrowportProcess(tmp_path_factory.mktemp("client"), config=config) as process:
        yield process


@pytest.fixture
def client(server: ArrowportProcess) -> Iterator[Client]:
    with Client(server.url, retry=FAST_RETRY) as connected:
        yield connected


def rows(n: int, start: int = 0) -> pa.Table:
    ids = pa.array(range(start, start + n), pa.int64())
    return pa.table(
        {"id": ids, "label": pa.array([f"row-{i}" for i in range(start, start + n)], pa.string())}
    )


def counts(client: Client, table: str) -> tuple[int, int]:
    """(rows, distinct ids) of ``table``."""
    answer = client.query(f'SELECT count(*) AS n, count(DISTINCT id) AS d FROM "{table}"')
    return answer.column("n")[0].as_py(), answer.column("d")[0].as_py()


# -- what can be sent --------------------------------------------------------------------------

N = 20_000


def _batches() -> Iterator[pa.RecordBatch]:
    for start in range(0, N, 3_000):
        yield rows(min(3_000, N - start), start).to_batches()[0]


INPUTS: dict[str, Any] = {
    "pyarrow_table": lambda: rows(N),
    "record_batch_reader": lambda: pa.RecordBatchReader.from_batches(
        rows(0).schema, rows(N).to_batches(max_chunksize=1_000)
    ),
    "iterator_of_batches": _batches,
    "list_of_batches": lambda: list(_batches()),
    "polars_dataframe": lambda: pl.DataFrame(
        {"id": list(range(N)), "label": [f"row-{i}" for i in range(N)]}
    ),
    "pandas_via_pyarrow": lambda: pa.Table.from_pandas(
        pd.DataFrame({"id": range(N), "label": [f"row-{i}" for i in range(N)]}),
        preserve_index=False,
    ),
    "pandas_dataframe": lambda: pd.DataFrame(
        {"id": range(N), "label": [f"row-{i}" for i in range(N)]}
    ),
    "pyarrow_dataset": lambda: ds.dataset(rows(N).to_batches(max_chunksize=4_000)),
    "pyarrow_scanner": lambda: ds.dataset(rows(N)).scanner(batch_size=2_500),
    "iterable_of_frames": lambda: (
        pl.DataFrame(
            {"id": range(s, s + 5_000), "label": [f"row-{i}" for i in range(s, s + 5_000)]}
        )
        for s in range(0, N, 5_000)
    ),
    "duckdb_relation": lambda: duckdb.sql(
        f"SELECT range AS id, 'row-' || range AS label FROM range({N})"
    ),
}


@pytest.mark.parametrize("kind", sorted(INPUTS))
def test_every_input_kind_lands_exactly(client: Client, kind: str) -> None:
    summary = client.ingest("kinds", INPUTS[kind](), table=f"kind_{kind}", request_rows=7_000)
    assert summary.rows == N
    assert summary.requests == 3  # 7,000 + 7,000 + 6,000 whatever the input's batches
    assert summary.table == f"kind_{kind}"
    assert summary.table_created
    assert counts(client, f"kind_{kind}") == (N, N)
    total = client.query(f"SELECT sum(id) AS s FROM kind_{kind}").column("s")[0].as_py()
    assert total == N * (N - 1) // 2


def test_a_named_pandas_index_is_sent_as_a_column_even_as_a_range(client: Client) -> None:
    frame = pd.DataFrame({"id": [1, 2, 3], "label": ["a", "b", "c"]}).set_index("id")
    assert isinstance(frame.index, pd.RangeIndex)  # pandas keeps 1, 2, 3 as a range
    client.ingest("kinds", frame, table="pandas_named_range")
    landed = client.query("SELECT id, label FROM pandas_named_range ORDER BY id").to_pylist()
    assert landed == [{"id": 1, "label": "a"}, {"id": 2, "label": "b"}, {"id": 3, "label": "c"}]
    client.ingest("kinds", frame.reset_index(drop=True), table="pandas_unnamed_range")
    assert [c.name for c in client.table("pandas_unnamed_range").columns] == ["label"]


def test_what_is_not_arrow_data_is_refused(client: Client) -> None:
    with pytest.raises(TypeError, match="Arrow PyCapsule"):
        client.ingest("kinds", 42)
    with pytest.raises(TypeError, match="cannot ingest a str"):
        client.ingest("kinds", "SELECT 1")
    with pytest.raises(TypeError, match="item 1 of the data is a int"):
        client.ingest("kinds", [rows(1).to_batches()[0], 7], table="refused")
    with pytest.raises(
        TypeError, match=r"LazyFrame \(a polars LazyFrame: pass frame.collect\(\)\)"
    ):
        client.ingest("kinds", pl.LazyFrame({"id": [1]}), table="refused")


# -- cutting into requests -----------------------------------------------------------------------


class Recording(httpx.BaseTransport):
    """Sends through the network and keeps every ingest request's body."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.bodies: list[bytes] = []
        self.params: list[dict[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/stream/"):
            self.bodies.append(request.read())
            self.params.append(dict(request.url.params))
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def decoded(body: bytes) -> pa.Table:
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    return pa.ipc.open_stream(raw).read_all()


def test_requests_are_cut_by_size(server: ArrowportProcess) -> None:
    data = rows(100_000)
    limit = 256 * 1024
    recording = Recording()
    with Client(server.url, transport=recording) as client:
        summary = client.ingest("cut", data, table="cut_by_size", request_bytes=limit)
        assert counts(client, "cut_by_size") == (100_000, 100_000)
    sent = [decoded(body) for body in recording.bodies]
    assert sum(t.num_rows for t in sent) == 100_000
    assert all(t.nbytes <= limit for t in sent), [t.nbytes for t in sent]
    assert len(sent) == summary.requests
    assert len(sent) >= data.nbytes // limit
    # Each request fills up to the limit: no more requests than needed, plus rounding.
    assert len(sent) <= data.nbytes // limit + 2
    # One producer, consecutive sequences from 0.
    assert {p["producer_id"] for p in recording.params} == {summary.producer_id}
    assert [int(p["sequence"]) for p in recording.params] == list(range(len(sent)))
    assert list(summary.sequences) == list(range(len(sent)))
    assert summary.wire_bytes == sum(len(b) for b in recording.bodies)


def test_long_text_views_are_made_large_strings_a_piece_at_a_time(client: Client) -> None:
    # 64 MB of text in one polars chunk: cast whole, the call would hold a copy of all of it.
    frame = pl.DataFrame(
        {"id": range(64_000), "label": [f"{i:06d}" + "x" * 994 for i in range(64_000)]}
    )
    peak = 0

    def progress(summary: IngestSummary) -> None:
        nonlocal peak
        peak = max(peak, pa.total_allocated_bytes() - before)

    before = pa.total_allocated_bytes()
    summary = client.ingest("kinds", frame, table="text_views_pieces", progress=progress)
    assert summary.rows == 64_000
    assert peak < 48_000_000  # about two requests of 16 MiB, whatever the size of the data
    assert counts(client, "text_views_pieces") == (64_000, 64_000)


def test_requests_are_cut_by_rows_and_sent_uncompressed(server: ArrowportProcess) -> None:
    recording = Recording()
    with Client(server.url, transport=recording) as client:
        summary = client.ingest(
            "cut", rows(10_000), table="cut_by_rows", request_rows=3_000, compression=None
        )
        assert counts(client, "cut_by_rows") == (10_000, 10_000)
    sizes = [pa.ipc.open_stream(body).read_all().num_rows for body in recording.bodies]
    assert sizes == [3_000, 3_000, 3_000, 1_000]
    assert summary.requests == 4


def _few_requests(summary: IngestSummary) -> None:
    assert summary.requests <= 10, "cut into requests of a row or so"


@pytest.mark.parametrize("kind", ["polars", "iterable"])
def test_long_text_views_are_cut_by_their_rows(client: Client, kind: str) -> None:
    # polars sends strings as views; values past 12 bytes live in buffers every slice shares.
    text = [f"{i:06d}" + "x" * 994 for i in range(2_000)]  # 2 MB of text
    frame = pl.DataFrame({"id": range(2_000), "label": text})
    views = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    assert views.schema.field("label").type == pa.string_view()
    data = frame if kind == "polars" else views.to_batches()
    summary = client.ingest(
        "kinds",
        data,
        table=f"text_views_{kind}",
        request_bytes=1 << 20,
        compression=None,
        progress=_few_requests,
    )
    assert summary.requests == 2
    assert summary.wire_bytes < 2 * 2_000_000  # the text once, not once per request
    assert counts(client, f"text_views_{kind}") == (2_000, 2_000)
    landed = client.query(f"SELECT label FROM text_views_{kind} ORDER BY id")
    assert landed.column("label").to_pylist() == text


def test_replace_replaces_once_then_appends(client: Client) -> None:
    client.ingest("modes", rows(500), table="replaced")
    summary = client.ingest(
        "modes", rows(9_000), table="replaced", mode="replace", request_rows=2_000
    )
    assert summary.requests == 5
    assert counts(client, "replaced") == (9_000, 9_000)


def test_data_without_rows_creates_or_empties_the_table(client: Client) -> None:
    summary = client.ingest("empty", rows(0), table="empty_rows", mode="create")
    assert (summary.rows, summary.requests, summary.table_created) == (0, 1, True)
    assert client.table("empty_rows").row_count == 0
    client.ingest("empty", rows(10), table="empty_rows")
    client.ingest(
        "empty",
        pl.DataFrame(schema={"id": pl.Int64, "label": pl.String}),
        table="empty_rows",
        mode="replace",
    )
    assert client.table("empty_rows").row_count == 0
    assert client.ingest("empty", iter([]), table="empty_rows").requests == 0


# -- retries never duplicate ---------------------------------------------------------------------


class LosesAnswers(httpx.BaseTransport):
    """Delivers every request, but loses the answers of the ingest requests numbered in
    ``lose`` (from 1): the server committed them, the client hears a broken connection."""

    def __init__(self, lose: set[int]) -> None:
        self.inner = httpx.HTTPTransport()
        self.lose = lose
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method == "POST" and request.url.path.startswith("/stream/"):
            self.posts += 1
            if self.posts in self.lose:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_lost_answer_is_retried_and_lands_once(server: ArrowportProcess) -> None:
    transport = LosesAnswers(lose={2, 5})
    with Client(server.url, transport=transport, retry=FAST_RETRY) as client:
        summary = client.ingest("lost", rows(10_000), table="lost_answers", request_rows=2_000)
        assert counts(client, "lost_answers") == (10_000, 10_000)
    assert summary.rows == 10_000
    assert summary.requests == 5
    assert summary.retries == 2
    assert summary.duplicates == 2  # the retries found their request committed
    assert transport.posts == 7


class Overloaded(httpx.BaseTransport):
    """Answers the first ``times`` ingest requests with 503 and ``Retry-After``, unsent."""

    def __init__(self, times: int, status: int = 503, code: str = "overloaded") -> None:
        self.inner = httpx.HTTPTransport()
        self.times = times
        self.status = status
        self.code = code
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and self.refused < self.times:
            self.refused += 1
            body = {"status": "error", "message": "too many writes", "code": self.code}
            return httpx.Response(self.status, json=body, headers={"Retry-After": "0"})
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("status", "code"), [(503, "overloaded"), (502, "http_error")])
def test_overload_is_retried(server: ArrowportProcess, status: int, code: str) -> None:
    transport = Overloaded(times=3, status=status, code=code)
    with Client(server.url, transport=transport, retry=FAST_RETRY) as client:
        summary = client.ingest("busy", rows(100), table=f"retried_{status}")
        assert counts(client, f"retried_{status}") == (100, 100)
    assert summary.retries == 3
    assert summary.duplicates == 0


def test_retries_give_up_with_a_transient_error(server: ArrowportProcess) -> None:
    transport = Overloaded(times=100)
    retry = RetryPolicy(max_retries=2, initial_backoff=0.01)
    with (
        Client(server.url, transport=transport, retry=retry) as client,
        pytest.raises(TransientError) as caught,
    ):
        client.ingest("busy", rows(10), table="never")
    assert caught.value.code == "overloaded"
    assert caught.value.status == 503
    assert caught.value.retryable
    assert caught.value.retry_after == 0
    assert transport.refused == 3


class AnotherSenderMeanwhile(httpx.BaseTransport):
    """Answers the first ingest request with ``status`` and ``code``, unsent, after another
    sender has committed the same producer id and sequence (with other rows)."""

    def __init__(self, status: int, code: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.status = status
        self.code = code
        self.refused = False

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.refused:
            self.refused = True
            other = httpx.Request(
                "POST",
                request.url.copy_merge_params({"table": "shared_sequence"}),
                headers={"Content-Type": "application/vnd.apache.arrow.stream"},
                content=_ipc(rows(7, 1_000)),
            )
            assert self.inner.handle_request(other).status_code == 200
            body = {"status": "error", "message": "refused", "code": self.code}
            return httpx.Response(self.status, json=body, headers={"Retry-After": "0"})
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_duplicate_after_refusals_is_another_senders(server: ArrowportProcess) -> None:
    """A retry answered as a duplicate is the call's own commit only when an earlier attempt may
    have landed: after a refusal that says nothing was written, it is another sender's."""
    transport = AnotherSenderMeanwhile(503, "overloaded")
    with (
        Client(server.url, transport=transport, retry=FAST_RETRY) as client,
        pytest.raises(RequestError) as caught,
    ):
        client.ingest("shared", rows(3), table="shared_sequence", producer_id="twice")
    assert caught.value.code == "producer_conflict"
    with Client(server.url) as client:
        assert counts(client, "shared_sequence") == (7, 7)  # the other sender's rows alone


def test_a_duplicate_after_a_proxys_error_counts_as_landed(server: ArrowportProcess) -> None:
    """A 502 from something in between may follow a commit: its retry's duplicate is taken as
    the call's own (the rows the other sender wrote stand for it; nothing lands twice)."""
    transport = AnotherSenderMeanwhile(502, "http_error")
    with Client(server.url, transport=transport, retry=FAST_RETRY) as client:
        summary = client.ingest("shared", rows(3), table="proxied_sequence", producer_id="p")
    assert (summary.rows, summary.duplicates, summary.retries) == (3, 1, 1)


def test_server_killed_mid_ingest_lands_every_row_once(tmp_path: Path) -> None:
    """SIGKILL the server while a client streams 100 requests, start it again on the same
    database and port: the client's retries land every row exactly once."""
    port = free_port()
    server = ArrowportProcess(tmp_path, args=["--port", str(port)], db_path=tmp_path / "db.duckdb")
    server.start()
    total, per_request = 200_000, 2_000

    def slowly() -> Iterator[pa.RecordBatch]:
        for start in range(0, total, per_request):
            time.sleep(0.02)
            yield rows(per_request, start).to_batches()[0]

    outcome: dict[str, Any] = {}
    retry = RetryPolicy(max_retries=60, initial_backoff=0.05, max_backoff=0.5)

    def ingest() -> None:
        with Client(server.url, retry=retry) as client:
            try:
                outcome["summary"] = client.ingest(
                    "crash", slowly(), table="crash_rows", request_rows=per_request
                )
            except BaseException as exc:
                outcome["error"] = exc

    worker = threading.Thread(target=ingest)
    try:
        worker.start()
        with httpx.Client(base_url=server.url, timeout=10) as http:
            deadline = time.monotonic() + 60
            landed = 0
            while landed < 20_000 and time.monotonic() < deadline:
                time.sleep(0.05)
                answer = http.get("/tables")
                landed = sum(t["row_count"] for t in answer.json() if t["name"] == "crash_rows")
        assert 20_000 <= landed < total, landed
        server.kill()
        time.sleep(0.3)
        server.start()
        worker.join(120)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
        summary: IngestSummary = outcome["summary"]
        assert summary.rows == total
        assert summary.retries >= 1
        with Client(server.url) as client:
            assert counts(client, "crash_rows") == (total, total)
    finally:
        worker.join(5)
        server.kill()


# -- producers and resuming ----------------------------------------------------------------------


def test_a_named_producer_continues_its_sequence(client: Client) -> None:
    first = client.ingest(
        "named", rows(3_000), table="named", producer_id="loader-1", request_rows=1_000
    )
    second = client.ingest(
        "named", rows(2_000, 3_000), table="named", producer_id="loader-1", request_rows=1_000
    )
    assert list(first.sequences) == [0, 1, 2]
    assert list(second.sequences) == [3, 4]
    offset = client.producer("named", "loader-1")
    assert (offset.last_sequence, offset.next_sequence) == (4, 5)
    assert counts(client, "named") == (5_000, 5_000)


class Interrupted(Exception):
    pass


def test_a_request_cut_by_rows_alone_sends_a_large_batch_as_messages_the_server_takes(
    tmp_path: Path,
) -> None:
    """``resume=True`` cuts by rows alone: 1M rows of 40 bytes are one request, and one batch
    of them was one IPC message, past the server's ``limits.max_message_bytes`` (413)."""
    config = {"limits": {"max_message_bytes": 24 * 1024**2}}
    data = pa.table(
        {"id": pa.array(range(1_000_000), pa.int64()), "pad": pa.array(["x" * 28] * 1_000_000)}
    )
    assert data.nbytes > 36 * 1024**2
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        Client(server.url, retry=FAST_RETRY) as client,
    ):
        summary = client.ingest("wide", data, table="wide", producer_id="p", resume=True)
        assert (summary.rows, summary.requests) == (1_000_000, 1)
        assert counts(client, "wide") == (1_000_000, 1_000_000)


def test_resume_skips_what_an_interrupted_run_landed(client: Client) -> None:
    data = rows(10_000)

    def breaks_after(batches: int) -> Iterator[pa.RecordBatch]:
        for number, batch in enumerate(data.to_batches(max_chunksize=700)):
            if number == batches:
                raise Interrupted
            yield batch

    with pytest.raises(Interrupted):
        client.ingest(
            "resume",
            breaks_after(6),
            table="resumed",
            producer_id="file-1",
            resume=True,
            request_rows=1_000,
        )
    landed, _ = counts(client, "resumed")
    assert 0 < landed < 10_000
    assert landed % 1_000 == 0
    # Batched differently the second time: the cut depends on the rows alone.
    again = client.ingest(
        "resume",
        data.to_batches(max_chunksize=333),
        table="resumed",
        producer_id="file-1",
        resume=True,
        request_rows=1_000,
    )
    assert again.skipped_rows == landed
    assert again.skipped_requests == landed // 1_000
    assert again.rows == 10_000 - landed
    assert counts(client, "resumed") == (10_000, 10_000)
    done = client.ingest(
        "resume", data, table="resumed", producer_id="file-1", resume=True, request_rows=1_000
    )
    assert (done.rows, done.skipped_rows, done.requests) == (0, 10_000, 0)
    with pytest.raises(ValueError, match="producer_id"):
        client.ingest("resume", data, resume=True)


# -- errors --------------------------------------------------------------------------------------


def test_a_refusal_raises_with_its_code(server: ArrowportProcess) -> None:
    transport = Recording()
    with Client(server.url, transport=transport, retry=FAST_RETRY) as client:
        client.ingest("conflict", rows(10), table="typed")
        sent = len(transport.bodies)
        with pytest.raises(RequestError) as caught:
            client.ingest("conflict", pa.table({"id": ["not a number"]}), table="typed")
    error = caught.value
    assert isinstance(error, ArrowportClientError)
    assert (error.code, error.status, error.retryable) == ("schema_conflict", 409, False)
    assert "incompatible types" in error.message
    assert str(error).startswith("schema_conflict (409): ")
    assert error.details["stream"] == "conflict"
    assert len(transport.bodies) == sent + 1  # not retried


def test_bad_options_are_refused_before_sending(client: Client) -> None:
    with pytest.raises(RequestError) as caught:
        client.ingest("ok", rows(1), table="no spaces")
    assert caught.value.code == "invalid_name"
    with pytest.raises(RequestError) as caught:
        client.ingest("ok", rows(1), mode="sideways")  # type: ignore[arg-type]
    assert caught.value.code == "invalid_options"


def test_arguments_no_request_could_carry_are_refused_at_the_call(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    for url, message in (("http://[::1", "is not a valid URL"), ("http://", "names no host")):
        with pytest.raises(ValueError, match=message):
            Client(url)
        with pytest.raises(ValueError, match=message):
            AsyncClient(url)
    with pytest.raises(ValueError, match="token must be printable ASCII") as caught:
        Client(server.url, token="t\u00f8ken")
    assert "t\u00f8ken" not in str(caught.value)  # a secret is not repeated
    with pytest.raises(ValueError, match="header 'X-Note'"):
        Client(server.url, headers={"X-Note": "caf\u00e9"})
    with pytest.raises(FileNotFoundError, match=r"no\.pem"):
        Client(server.url, verify=tmp_path / "no.pem")
    transport = Recording()
    with Client(server.url, transport=transport, retry=FAST_RETRY) as client:
        with pytest.raises(RequestError) as refused:
            client.table("")
        assert (refused.value.code, refused.value.status) == ("invalid_name", 400)
        with pytest.raises(RequestError, match="producer_id"):
            client.producer("events", "")
        for option in ("request_rows", "request_bytes"):
            with pytest.raises(ValueError, match=f"{option} must be at least 1"):
                client.ingest("events", rows(10), **{option: 0})
        for value in (float("nan"), float("inf"), [1.0, float("-inf")]):
            with pytest.raises(ValueError, match="JSON has no NaN or infinity"):
                client.query("SELECT ?", [value])
        with pytest.raises(ValueError, match="valid Unicode text"):
            client.query("SELECT ?", ["\udcff"])
        with pytest.raises(ValueError, match="valid Unicode text"):
            client.query("SELECT '\udcff'")
        assert transport.bodies == []
        answer = client.query("SELECT ? AS text, ? AS number", ["caf\u00e9", 1.5])
        assert answer.to_pylist() == [{"text": "caf\u00e9", "number": 1.5}]

    async def asynchronous() -> None:
        async with AsyncClient(server.url, retry=FAST_RETRY) as client:
            with pytest.raises(RequestError) as refused:
                await client.table("")
            assert refused.value.code == "invalid_name"
            with pytest.raises(ValueError, match="request_rows must be at least 1"):
                await client.ingest("events", rows(10), request_rows=0)

    asyncio.run(asynchronous())


class Paths(httpx.BaseTransport):
    """Sends through the network and notes every request's path."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_query_parameters_no_request_could_carry_are_refused_at_the_call(
    server: ArrowportProcess,
) -> None:
    paths = Paths()
    with Client(server.url, transport=paths, retry=FAST_RETRY) as client:
        for params in ({"a": 1}, "ab", b"ab"):  # listed: their keys, characters or bytes
            with pytest.raises(TypeError, match="params must be a list of values"):
                client.query("SELECT ? AS a", params)
        for value in (datetime.date(2024, 5, 1), decimal.Decimal("1.5"), b"x"):
            with pytest.raises(ValueError, match="query parameters must be JSON values"):
                client.query("SELECT ? AS a", [value])
        assert paths.paths == []
        date = client.query("SELECT ?::DATE AS d", [str(datetime.date(2024, 5, 1))])
        assert date.to_pylist() == [{"d": datetime.date(2024, 5, 1)}]
        assert client.query("SELECT ? AS a", (7,)).to_pylist() == [{"a": 7}]

    async def asynchronous() -> None:
        async with AsyncClient(server.url, retry=FAST_RETRY) as client:
            with pytest.raises(TypeError, match="params must be a list of values"):
                await client.query("SELECT ? AS a", {"a": 1})

    asyncio.run(asynchronous())


def test_an_unreachable_server_is_a_connection_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with (
        Client(url, retry=RetryPolicy(max_retries=1)) as client,
        pytest.raises(ConnectionFailed) as caught,
    ):
        client.health()
    assert caught.value.code == "connection_error"
    assert caught.value.status is None
    assert "Connection refused" in str(caught.value)


# -- reading -------------------------------------------------------------------------------------


def test_query_tables_streams_health(client: Client) -> None:
    client.ingest("events", rows(50))
    answer = client.query("SELECT id, label FROM event_rows WHERE id >= ? ORDER BY id", [47])
    assert answer.to_pylist() == [{"id": i, "label": f"row-{i}"} for i in (47, 48, 49)]
    assert client.query("SELECT 42 AS x").to_pandas()["x"].tolist() == [42]
    assert pl.from_arrow(client.query("SELECT 'a' AS s")).to_dicts() == [{"s": "a"}]
    csv = client.query_bytes("SELECT 1 AS a, 'x' AS b", format="csv").decode()
    assert csv.splitlines()[1] == '1,"x"' or csv.splitlines()[1] == "1,x"
    assert json.loads(client.query_bytes("SELECT 1 AS a", format="json"))["rows"] == [{"a": 1}]
    table = client.table("event_rows")
    assert table.row_count >= 50
    assert [(c.name, c.type) for c in table.columns] == [("id", "BIGINT"), ("label", "VARCHAR")]
    assert "event_rows" in {t.name for t in client.tables()}
    streams = {s.name: s for s in client.streams()}
    assert streams["events"].table == "event_rows"
    assert client.health() == {"status": "ok"}
    with pytest.raises(RequestError) as caught:
        client.table("no_such_table")
    assert (caught.value.code, caught.value.status) == ("unknown_table", 404)
    with pytest.raises(RequestError) as caught:
        client.query("DELETE FROM event_rows")
    assert caught.value.code in ("read_only", "query_error")


# -- asyncio -------------------------------------------------------------------------------------


def test_async_client(server: ArrowportProcess) -> None:
    async def batches() -> AsyncIterator[pa.RecordBatch]:
        for start in range(0, 6_000, 1_000):
            await asyncio.sleep(0)
            yield rows(1_000, start).to_batches()[0]

    async def scenario() -> None:
        async with AsyncClient(server.url, retry=FAST_RETRY) as client:
            assert await client.health() == {"status": "ok"}
            first = await client.ingest("aio", batches(), table="async_rows", request_rows=2_500)
            assert (first.rows, first.requests) == (6_000, 3)
            second = await client.ingest("aio", rows(4_000, 6_000), table="async_rows")
            third = await client.ingest(
                "aio", pl.DataFrame({"id": [10_000], "label": ["x"]}), table="async_rows"
            )
            assert (second.rows, third.rows) == (4_000, 1)
            answer = await client.query("SELECT count(DISTINCT id) AS d FROM async_rows")
            assert answer.column("d")[0].as_py() == 10_001
            assert "async_rows" in {t.name for t in await client.tables()}
            assert (await client.table("async_rows")).row_count == 10_001
            assert "events" in {s.name for s in await client.streams()}
            with pytest.raises(RequestError) as caught:
                await client.ingest("aio", pa.table({"id": ["x"]}), table="async_rows")
            assert caught.value.code == "schema_conflict"

    asyncio.run(scenario())


def test_async_client_retries_a_lost_answer(server: ArrowportProcess) -> None:
    class AsyncLosesAnswers(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()
            self.posts = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.inner.handle_async_request(request)
            if request.method == "POST" and request.url.path.startswith("/stream/"):
                self.posts += 1
                if self.posts == 2:
                    await response.aread()
                    await response.aclose()
                    raise httpx.ReadError("connection reset by peer", request=request)
            return response

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def scenario() -> IngestSummary:
        transport = AsyncLosesAnswers()
        async with AsyncClient(server.url, transport=transport, retry=FAST_RETRY) as client:
            summary = await client.ingest(
                "aio", rows(5_000), table="async_lost", request_rows=1_000
            )
            answer = await client.query("SELECT count(*) AS n FROM async_lost")
            assert answer.column("n")[0].as_py() == 5_000
            return summary

    summary = asyncio.run(scenario())
    assert (summary.rows, summary.duplicates, summary.retries) == (5_000, 1, 1)


# -- TLS and tokens ------------------------------------------------------------------------------


def test_tls_and_token(tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key_file))
    secret = new_token("client")
    config = {
        "tls": {"cert_file": str(cert_file), "key_file": str(key_file)},
        "auth": {
            "tokens": [{"name": "client", "secret_hash": hash_secret(secret), "scopes": ["admin"]}]
        },
    }
    with ArrowportProcess(tmp_path / "server", config=config) as server:
        url = f"https://127.0.0.1:{server.port}"
        with Client(url, token=secret, verify=ca_file) as client:
            assert client.ingest("secure", rows(100)).rows == 100
            assert client.table("secure").row_count == 100
        with Client(url, token="ap_client_wrong", verify=str(ca_file)) as client:
            with pytest.raises(RequestError) as caught:
                client.tables()
            assert (caught.value.code, caught.value.status) == ("unauthenticated", 401)
        with Client(url, token=secret, retry=FAST_RETRY) as client:  # the CA is not trusted
            with pytest.raises(RequestError) as caught:
                client.tables()
            assert caught.value.code == "tls_error"
        with Client(url, token=secret, verify=False) as client:
            assert client.health() == {"status": "ok"}


# -- importing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement", ["import arrowport.client", "from arrowport import Client, AsyncClient"]
)
def test_importing_the_client_loads_no_server(statement: str) -> None:
    code = (
        f"import sys\n{statement}\n"
        "heavy = ('duckdb', 'fastapi', 'uvicorn', 'grpc', 'starlette', 'pydantic', 'structlog',"
        " 'prometheus_client', 'yaml')\n"
        "own = ('arrowport.server', 'arrowport.api', 'arrowport.storage', 'arrowport.ingest',"
        " 'arrowport.flight', 'arrowport.config', 'arrowport.services', 'arrowport.auth')\n"
        "print([m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(own)])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout


def test_the_public_names() -> None:
    import arrowport.client as package

    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public == set(package.__all__)
    assert {"Client", "AsyncClient", "ArrowportClientError", "IngestSummary"} <= public
    import arrowport

    assert arrowport.Client is package.Client
    assert arrowport.AsyncClient is package.AsyncClient
