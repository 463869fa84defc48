"""Loads the Python client splits into several requests, against real servers: into streams
whose own mode replaces or creates the table, locked streams (refused before anything is sent),
``GET /streams/{name}`` with its scopes; how large dictionaries are cut; and which failures are
sent again (a query that timed out is not, a lost write conflict is) and how long a server's
``Retry-After`` may hold a call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from arrowport.auth import hash_secret, new_token
from arrowport.client import (
    AsyncClient,
    Client,
    ConnectionFailed,
    IngestSummary,
    RequestError,
    RetryPolicy,
)
from arrowport.client._http import _retry_after
from tests.server import ArrowportProcess

FAST_RETRY = RetryPolicy(max_retries=5, initial_backoff=0.01, max_backoff=0.05)
ADMIN = new_token("admin")
LOADER = new_token("loader")
CONFIG = {
    "auth": {
        "tokens": [
            {"name": "admin", "secret_hash": hash_secret(ADMIN), "scopes": ["admin"]},
            {
                "name": "loader",
                "secret_hash": hash_secret(LOADER),
                "scopes": ["ingest"],
                "streams": ["snap", "locked_snap"],
            },
        ]
    },
    "streams": {
        "snap": {"table": "snap", "mode": "replace"},
        "fresh": {"mode": "create"},
        "locked_snap": {"table": "locked_snap", "mode": "replace", "locked": True},
        "locked_log": {"table": "locked_log", "mode": "append", "locked": True},
        "keyed": {"mode": "upsert", "key_columns": ["id"], "schema_policy": "evolve"},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("loads"), config=CONFIG) as process:
        yield process


@pytest.fixture
def client(server: ArrowportProcess) -> Iterator[Client]:
    with Client(server.url, token=ADMIN, retry=FAST_RETRY) as connected:
        yield connected


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": pa.array(range(start, start + n), pa.int64())})


def ids(client: Client, table: str) -> tuple[int, int, int]:
    """(rows, smallest id, largest id) of ``table``."""
    answer = client.query(f'SELECT count(*) AS n, min(id) AS lo, max(id) AS hi FROM "{table}"')
    row = answer.to_pylist()[0]
    return row["n"], row["lo"], row["hi"]


# -- the stream's own mode -----------------------------------------------------------------------


def test_a_stream_that_replaces_takes_data_of_many_requests_whole(client: Client) -> None:
    first = client.ingest("snap", rows(10_000), request_rows=2_000)
    assert first.requests == 5
    assert ids(client, "snap") == (10_000, 0, 9_999)
    # The next load replaces the table once, then appends.
    client.ingest("snap", rows(7_000, 50_000), request_rows=2_000)
    assert ids(client, "snap") == (7_000, 50_000, 56_999)
    # One request: the stream's mode as it is, without asking for the stream.
    client.ingest("snap", rows(10, 100))
    assert ids(client, "snap") == (10, 100, 109)


def test_a_stream_that_creates_takes_data_of_many_requests_whole(client: Client) -> None:
    summary = client.ingest("fresh", rows(6_000), request_rows=2_000)
    assert (summary.requests, summary.table_created) == (3, True)
    assert ids(client, "fresh") == (6_000, 0, 5_999)
    with pytest.raises(RequestError) as caught:
        client.ingest("fresh", rows(6_000), request_rows=2_000)
    assert caught.value.code == "table_exists"
    assert ids(client, "fresh") == (6_000, 0, 5_999)


def test_a_locked_stream_that_replaces_refuses_many_requests_before_sending(
    server: ArrowportProcess, client: Client
) -> None:
    client.ingest("locked_snap", rows(300))  # one request: it replaces
    assert ids(client, "locked_snap") == (300, 0, 299)
    with Client(server.url, token=LOADER, retry=FAST_RETRY) as loader:
        for mode in (None, "replace"):
            with pytest.raises(RequestError) as caught:
                loader.ingest("locked_snap", rows(5_000, 1_000), mode=mode, request_rows=1_000)
            assert (caught.value.code, caught.value.status) == ("stream_locked", 403)
            assert "nothing was sent" in caught.value.message
    assert ids(client, "locked_snap") == (300, 0, 299)  # untouched


def test_a_mode_a_locked_stream_is_not_locked_to_is_refused_for_what_it_is(
    client: Client,
) -> None:
    for mode in ("replace", "create"):
        with pytest.raises(RequestError) as caught:
            client.ingest("locked_log", rows(5_000), mode=mode, request_rows=1_000)
        assert (caught.value.code, caught.value.status) == ("stream_locked", 403)
        assert f"mode={mode!r} (configured: 'append')" in caught.value.message
    assert "locked_log" not in [t.name for t in client.tables()]


def test_the_async_client_learns_the_stream_too(server: ArrowportProcess, client: Client) -> None:
    async def load() -> tuple[int, str]:
        async with AsyncClient(server.url, token=ADMIN, retry=FAST_RETRY) as aclient:
            summary = await aclient.ingest("snap", rows(9_000, 20_000), request_rows=2_000)
            try:
                await aclient.ingest("locked_snap", rows(3_000), request_rows=1_000)
            except RequestError as exc:
                return summary.requests, exc.code
            return summary.requests, "landed"

    assert asyncio.run(load()) == (5, "stream_locked")
    assert ids(client, "snap") == (9_000, 20_000, 28_999)
    assert ids(client, "locked_snap")[0] == 300


def test_the_stream_endpoint_says_what_a_request_gets(server: ArrowportProcess) -> None:
    with Client(server.url, token=LOADER) as loader:
        locked = loader.stream("locked_snap")
        assert (locked.table, locked.mode, locked.locked, locked.configured) == (
            "locked_snap",
            "replace",
            True,
            True,
        )
        with pytest.raises(RequestError) as caught:
            loader.stream("keyed")  # another stream's: not this token's
        assert (caught.value.code, caught.value.status) == ("forbidden", 403)
    with Client(server.url, token=ADMIN) as admin:
        keyed = admin.stream("keyed")
        assert (keyed.table, keyed.mode, keyed.key_columns) == ("keyed", "upsert", ("id",))
        assert (keyed.schema_policy, keyed.locked) == ("evolve", False)
        other = admin.stream("never_configured")
        assert (other.table, other.mode, other.configured) == ("never_configured", "append", False)
        assert admin.stream("a.b").table is None  # a request must name its table
        listed = {s.name: s for s in admin.streams()}
        assert listed["locked_snap"] == locked
    answer = httpx.get(server.url + "/streams/snap")
    assert answer.status_code == 401
    answer = httpx.get(
        server.url + "/streams/bad%20name", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    assert (answer.status_code, answer.json()["code"]) == (400, "invalid_name")


def test_an_unconfigured_stream_under_streams_only_is_not_found(tmp_path: Path) -> None:
    with (
        ArrowportProcess(tmp_path, config={"streams_only": True, "streams": {"s": {}}}) as only,
        Client(only.url) as client,
    ):
        assert client.stream("s").configured
        with pytest.raises(RequestError) as caught:
            client.stream("other")
        assert (caught.value.code, caught.value.status) == ("unknown_stream", 404)


class Interrupted(Exception):
    pass


def test_an_interrupted_load_into_a_stream_that_replaces_resumes_by_appending(
    client: Client,
) -> None:
    """Its first request replaced the table; the rerun skips what landed and appends the rest,
    and does not replace the table again."""
    data = rows(6_000, 70_000)

    def breaks_after(batches: int) -> Iterator[pa.RecordBatch]:
        for number, batch in enumerate(data.to_batches(max_chunksize=1_000)):
            if number == batches:
                raise Interrupted
            yield batch

    def load(source: object) -> IngestSummary:
        return client.ingest(
            "snap", source, producer_id="snap-load-1", resume=True, request_rows=1_000
        )

    client.ingest("snap", rows(10))  # something to replace
    with pytest.raises(Interrupted):
        load(breaks_after(3))
    landed = ids(client, "snap")
    assert landed[0] in (2_000, 3_000)  # the first requests; the one in hand may have gone
    assert landed[1] == 70_000
    again = load(data)
    assert again.skipped_rows == landed[0]
    assert ids(client, "snap") == (6_000, 70_000, 75_999)


# -- cutting -------------------------------------------------------------------------------------


def test_a_large_dictionary_does_not_cut_requests_to_single_rows(client: Client) -> None:
    words = pa.array([f"{i:07d}" + "x" * 200 for i in range(10_000)])  # a ~2 MB dictionary
    column = pa.DictionaryArray.from_arrays(pa.array([i % 10_000 for i in range(600)]), words)
    data = pa.table({"id": pa.array(range(600), pa.int64()), "word": column})
    summary = client.ingest("words", data, request_bytes=1024**2)
    assert summary.requests == 1
    assert summary.bytes < 3 * 1024**2  # the dictionary counted once
    assert ids(client, "words") == (600, 0, 599)
    # Rows' bytes still cut: 200,000 rows of 8-byte ids and 4-byte indices in 1 MiB requests.
    many = pa.table(
        {
            "id": pa.array(range(200_000), pa.int64()),
            "word": pa.DictionaryArray.from_arrays(
                pa.array([i % 10_000 for i in range(200_000)], pa.int32()), words
            ),
        }
    )
    summary = client.ingest("words_many", many, request_bytes=1024**2)
    assert 3 <= summary.requests <= 4
    assert ids(client, "words_many") == (200_000, 0, 199_999)


# -- what is sent again --------------------------------------------------------------------------


class Counting(httpx.BaseTransport):
    """Counts the queries sent; every request goes through."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.queries = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query":
            self.queries += 1
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_query_that_times_out_is_not_sent_again(server: ArrowportProcess) -> None:
    transport = Counting()
    slow = "SELECT sum(a.range * b.range) AS s FROM range(60000) a, range(60000) b"
    with (
        Client(server.url, token=ADMIN, timeout=0.2, transport=transport, retry=FAST_RETRY) as c,
        pytest.raises(ConnectionFailed) as caught,
    ):
        c.query(slow)
    assert caught.value.code == "timeout"
    assert "not sent again" in caught.value.message
    assert transport.queries == 1


class ConflictsOnce(httpx.BaseTransport):
    """Answers the first ingest request 409 ``write_conflict`` (nothing written), as a write
    that lost to a concurrent one is answered."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if (
            request.method == "POST"
            and request.url.path.startswith("/stream/")
            and not self.refused
        ):
            self.refused += 1
            body = {"status": "error", "message": "retry", "code": "write_conflict"}
            return httpx.Response(409, json=body)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_write_conflict_is_sent_again(server: ArrowportProcess, client: Client) -> None:
    transport = ConflictsOnce()
    with Client(server.url, token=ADMIN, transport=transport, retry=FAST_RETRY) as conflicted:
        summary = conflicted.ingest("keyed", rows(100))
    assert (transport.refused, summary.retries, summary.rows) == (1, 1, 100)
    assert ids(client, "keyed") == (100, 0, 99)


@pytest.mark.parametrize("header", ["inf", "3600", "nan", "-5"])
def test_a_servers_retry_after_holds_a_call_no_longer_than_max_backoff(header: str) -> None:
    asked = _retry_after(header)
    policy = RetryPolicy(initial_backoff=0.01, max_backoff=2.0)
    for retry in range(10):
        assert 0 <= policy.delay(retry, asked) <= 2.0
    assert _retry_after("1.5") == 1.5


class ConnectTimesOutOnce(httpx.BaseTransport):
    """The first query's connection times out (it never reaches the server); the rest go
    through."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/query" and not self.failed:
            self.failed += 1
            raise httpx.ConnectTimeout("timed out connecting", request=request)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_query_whose_connection_timed_out_is_sent_again(server: ArrowportProcess) -> None:
    transport = ConnectTimesOutOnce()
    with Client(server.url, token=ADMIN, transport=transport, retry=FAST_RETRY) as client:
        assert client.query("SELECT 7 AS x").to_pylist() == [{"x": 7}]
    assert transport.failed == 1


class OlderServer(httpx.BaseTransport):
    """A server without ``GET /streams/{name}``: it answers 404 ``not_found``."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.asked = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")
        if request.method == "GET" and len(parts) == 3 and parts[1] == "streams":
            self.asked += 1
            body = {"status": "error", "message": "Not Found", "code": "not_found"}
            return httpx.Response(404, json=body)
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


def test_a_server_too_old_to_describe_its_streams_gets_the_mode_asked_for(
    server: ArrowportProcess, client: Client
) -> None:
    transport = OlderServer()
    with Client(server.url, token=ADMIN, transport=transport, retry=FAST_RETRY) as older:
        older.ingest("elder", rows(5_000), mode="replace", request_rows=1_000)
        older.ingest("elder", rows(3_000, 10_000), mode="replace", request_rows=1_000)
    assert transport.asked == 2
    assert ids(client, "elder") == (3_000, 10_000, 12_999)
