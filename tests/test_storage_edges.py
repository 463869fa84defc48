"""Edges of the storage layer: errors DuckDB raises mid-write, helper columns, names, locks, caches.

Behaviour a client can see is tested against a real server; the rest (lock names, the column
cache, statement sizes, error translation) directly on the storage functions, with a real DuckDB.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrowport.config import DuckDBSettings, Settings
from arrowport.errors import (
    ConstraintViolation,
    InvalidValue,
    Overloaded,
    QueryTimeout,
    SchemaConflict,
    StorageError,
    WriteConflict,
)
from arrowport.reads import ReadService
from arrowport.storage.catalog import TableCatalog, query_columns
from arrowport.storage.database import Database, LocksBusy, WriteJob, translate_error
from arrowport.storage.delivery import Delivery
from arrowport.storage.query import query_schema, run_query, table_schema
from arrowport.storage.query_stop import QueryDeadline, QueryStop
from arrowport.storage.table_writer import (
    POSITION_COLUMN,
    STATEMENT_BYTES,
    STATEMENT_ROWS,
    WritePolicy,
    _statement_parts,
)
from tests.conftest import ARROW_STREAM, ENDLESS_QUERY, ipc_bytes, post_binary, query, table_rows
from tests.server import ArrowportProcess


def post(
    client: httpx.Client, batch: pa.Table, batch_rows: int | None = None, **params: str
) -> httpx.Response:
    return post_binary(client, "edges", ipc_bytes(batch, batch_rows), params)


# -- upserts -----------------------------------------------------------------------------------


def test_upsert_null_into_not_null_column_reports_the_real_error(client: httpx.Client) -> None:
    schema = pa.schema(
        [pa.field("k", pa.int64(), nullable=False), pa.field("n", pa.int64(), False)]
    )
    first = pa.table({"k": [1], "n": [10]}, schema=schema)
    created = post(client, first, table="ups_notnull", mode="upsert", key_columns="k")
    assert created.status_code == 200, created.text
    bad = pa.table({"k": [1, 2], "n": pa.array([11, None], pa.int64())})
    response = post(client, bad, table="ups_notnull", mode="upsert", key_columns="k")
    # The NOT NULL failure itself, never a "retry" conflict a client would retry forever.
    assert response.status_code in (409, 422), response.text
    body = response.json()
    assert body["code"] in ("constraint_violation", "invalid_value"), body
    assert "NOT NULL" in body["message"]
    assert table_rows(client, "ups_notnull") == [{"k": 1, "n": 10}]


def test_upsert_failing_in_merge_leaves_the_server_usable(client: httpx.Client) -> None:
    schema = pa.schema(
        [pa.field("k", pa.int64(), nullable=False), pa.field("n", pa.int64(), False)]
    )
    first = pa.table({"k": [1], "n": [1]}, schema=schema)
    assert post(client, first, table="ups_again", mode="upsert", key_columns="k").status_code == 200
    bad = pa.table({"k": [3], "n": pa.array([None], pa.int64())})
    for _ in range(3):
        refused = post(client, bad, table="ups_again", mode="upsert", key_columns="k")
        assert refused.json()["code"] != "write_conflict", refused.text
    good = pa.table({"k": [1, 2], "n": [5, 6]}, schema=schema)
    accepted = post(client, good, table="ups_again", mode="upsert", key_columns="k")
    assert accepted.status_code == 200, accepted.text
    assert table_rows(client, "ups_again") == [{"k": 1, "n": 5}, {"k": 2, "n": 6}]


def test_last_wins_keeps_a_user_column_named_like_a_row_number(client: httpx.Client) -> None:
    batch = pa.table({"k": [1, 1, 2], "_arrowport_pos": [30, 20, 10], "v": ["a", "b", "c"]})
    response = post(
        client,
        batch,
        table="lw_pos",
        mode="upsert",
        key_columns="k",
        duplicate_keys="last_wins",
    )
    assert response.status_code == 200, response.text
    assert table_rows(client, "lw_pos") == [
        {"k": 1, "_arrowport_pos": 20, "v": "b"},
        {"k": 2, "_arrowport_pos": 10, "v": "c"},
    ]


@pytest.mark.parametrize("name", [POSITION_COLUMN, POSITION_COLUMN.upper()])
def test_last_wins_refuses_the_reserved_position_column(client: httpx.Client, name: str) -> None:
    batch = pa.table({"k": [1, 1], name: [1, 2]})
    response = post(
        client,
        batch,
        table="lw_reserved",
        mode="upsert",
        key_columns="k",
        duplicate_keys="last_wins",
    )
    assert response.status_code in (409, 422), response.text
    body = response.json()
    assert body["code"] in ("invalid_options", "schema_conflict"), body
    assert POSITION_COLUMN in body["message"]
    assert client.get("/tables/lw_reserved").status_code == 404


def test_last_wins_follows_stream_order_across_many_batches(client: httpx.Client) -> None:
    count, keys = 200_000, 1_000
    batch = pa.table(
        {"k": pa.array([i % keys for i in range(count)], pa.int64()), "v": pa.array(range(count))}
    )
    response = post(
        client,
        batch,
        batch_rows=1_000,
        table="lw_order",
        mode="upsert",
        key_columns="k",
        duplicate_keys="last_wins",
    )
    assert response.status_code == 200, response.text
    landed = table_rows(client, "lw_order")
    assert landed == [{"k": k, "v": count - keys + k} for k in range(keys)]


# -- error translation -------------------------------------------------------------------------


def test_not_null_violation_in_a_table_named_conflict_is_not_a_retry(client: httpx.Client) -> None:
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    first = pa.table({"id": [1]}, schema=schema)
    assert post(client, first, table="conflict").status_code == 200
    response = post(client, pa.table({"id": pa.array([None], pa.int64())}), table="conflict")
    assert response.status_code == 409, response.text
    assert response.json()["code"] == "constraint_violation"
    assert table_rows(client, "conflict", order="id") == [{"id": 1}]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            duckdb.TransactionException('Catalog write-write conflict on create with "t"'),
            WriteConflict,
        ),
        (duckdb.TransactionException("Conflict on update!"), WriteConflict),
        (
            duckdb.TransactionException(
                'Transaction conflict: attempting to insert into table "t" but it has been '
                "dropped by a different transaction"
            ),
            WriteConflict,
        ),
        (
            duckdb.ConstraintException("NOT NULL constraint failed: conflict.id"),
            ConstraintViolation,
        ),
        (
            duckdb.InvalidInputException(
                "ON CONFLICT DO UPDATE can not update the same row twice in the same command"
            ),
            InvalidValue,
        ),
        (duckdb.BinderException("Cannot insert into a generated column"), InvalidValue),
        (duckdb.CatalogException('Table with name "x" does not exist'), InvalidValue),
        (duckdb.ParserException("syntax error at or near"), InvalidValue),
        (duckdb.NotImplementedException("Not implemented: conflict type"), InvalidValue),
        (duckdb.ConversionException("Could not convert string 'x' to INT32"), InvalidValue),
        (duckdb.DependencyException("Cannot alter entry: dependencies"), SchemaConflict),
    ],
)
def test_duckdb_errors_are_translated_by_type(error: duckdb.Error, expected: type) -> None:
    translated = translate_error(error)
    assert type(translated) is expected, repr(translated)
    assert 400 <= translated.status < 500  # type: ignore[attr-defined]
    if expected is not WriteConflict:
        assert translated.code != "write_conflict"  # type: ignore[attr-defined]


def test_aborted_transaction_is_not_a_write_conflict() -> None:
    aborted = duckdb.TransactionException("Current transaction is aborted (please ROLLBACK)")
    assert not isinstance(translate_error(aborted), WriteConflict)


def test_unknown_errors_pass_through_unchanged() -> None:
    internal = duckdb.InternalException("INTERNAL Error: something broke")
    assert translate_error(internal) is internal
    other = RuntimeError("not from DuckDB")
    assert translate_error(other) is other


# -- a database file with tables made by SQL -----------------------------------------------------


@pytest.fixture(scope="module")
def sql_made_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    workdir = tmp_path_factory.mktemp("sql_made")
    db_path = workdir / "made.duckdb"
    with duckdb.connect(str(db_path)) as conn:
        conn.execute('CREATE TABLE "bad name" (x INTEGER)')
        conn.execute('INSERT INTO "bad name" VALUES (1), (2)')
        conn.execute("CREATE TABLE plain (a INTEGER)")
        conn.execute("CREATE TABLE gen (a BIGINT, b BIGINT GENERATED ALWAYS AS (a * 2) VIRTUAL)")
    with ArrowportProcess(workdir, db_path=db_path) as process:
        yield process


def test_listing_includes_tables_with_unusual_names(sql_made_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=sql_made_server.url, timeout=60) as http:
        response = http.get("/tables")
        assert response.status_code == 200, response.text
        listed = {t["name"]: t for t in response.json()}
        assert {"bad name", "plain", "gen"} <= set(listed)
        assert listed["bad name"]["row_count"] == 2
        assert [c["name"] for c in listed["bad name"]["columns"]] == ["x"]
        # A listed table can be described and read; a name that exists nowhere is still 400.
        one = http.get("/tables/bad name")
        assert one.status_code == 200, one.text
        assert one.json()["row_count"] == 2
        assert http.get("/tables/other name").json()["code"] == "invalid_name"


def test_flight_lists_tables_with_unusual_names(sql_made_server: ArrowportProcess) -> None:
    client = flight.FlightClient(sql_made_server.flight_url)
    try:
        listed = {tuple(info.descriptor.path): info for info in client.list_flights()}
        assert (b"bad name",) in listed
        assert listed[(b"bad name",)].total_records == 2
    finally:
        client.close()


def test_insert_into_generated_column_is_a_client_error(sql_made_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=sql_made_server.url, timeout=60) as http:
        response = http.post(
            "/stream/gen",
            content=ipc_bytes(pa.table({"a": [1], "b": [5]})),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["code"] == "invalid_value"
        assert "generated" in response.json()["message"]
        fine = http.post(
            "/stream/gen",
            content=ipc_bytes(pa.table({"a": [3]})),
            headers={"Content-Type": ARROW_STREAM},
        )
        assert fine.status_code == 200, fine.text
        assert query(http, "SELECT a, b FROM gen").to_pylist() == [{"a": 3, "b": 6}]


# -- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nl_end\n", "nl_crlf\r\n", "\nnl_start"])
def test_table_name_with_a_newline_is_refused(client: httpx.Client, name: str) -> None:
    response = post(client, pa.table({"k": [1]}), table=name)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_name"
    tables = query(client, "SELECT table_name FROM duckdb_tables()").column(0).to_pylist()
    assert name.strip() not in [t.strip() for t in tables]


def test_json_target_table_with_a_newline_is_refused(client: httpx.Client) -> None:
    body = {
        "config": {"target_table": "nl_json\n"},
        "batch": {"data": base64.b64encode(ipc_bytes(pa.table({"k": [1]}))).decode()},
    }
    response = client.post("/stream/edges", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_name"


# -- storage internals ---------------------------------------------------------------------------


def _keyed_job(table: str, key: str, data: pa.Table | pa.RecordBatchReader) -> WriteJob:
    delivery = Delivery("s", idempotency_key=key, fingerprint=lambda: f"payload-of-{key}")
    return WriteJob(table, WritePolicy(), data, delivery)


def test_delivery_lock_names_are_bounded() -> None:
    names: set[str] = set()
    for i in range(5_000):
        job = _keyed_job("t", f"key-{i}", pa.table({"a": [i]}))
        names |= Database.lock_names(job)
        producer = WriteJob(
            "t", WritePolicy(), pa.table({"a": [i]}), Delivery("s", producer_id=f"p{i}", sequence=0)
        )
        names |= Database.lock_names(producer)
    assert "t:t" in names
    assert len(names) <= 1 + 1024


def test_busy_delivery_lock_names_the_waiting_job(db: Database) -> None:
    release = threading.Event()
    started = threading.Event()
    schema = pa.schema([("a", pa.int64())])

    def slow_batches() -> Iterator[pa.RecordBatch]:
        yield pa.record_batch([pa.array([1], pa.int64())], schema=schema)
        started.set()
        release.wait(30)
        yield pa.record_batch([pa.array([2], pa.int64())], schema=schema)

    db.write_one(_keyed_job("locked", "seed", pa.table({"a": [0]})))
    slow = _keyed_job(
        "locked", "same-key", pa.RecordBatchReader.from_batches(schema, slow_batches())
    )
    outcome: list[object] = []
    writer = threading.Thread(target=lambda: outcome.append(db.write_one(slow)))
    writer.start()
    try:
        assert started.wait(30)
        waiting = _keyed_job("locked", "same-key", pa.table({"a": [9]}))
        with pytest.raises(LocksBusy) as busy:
            db.write([waiting], block=False)
        assert Database.lock_names(waiting) & busy.value.names
    finally:
        release.set()
        writer.join(30)
    assert outcome
    assert not isinstance(outcome[0], Exception)
    again = db.write([_keyed_job("locked", "same-key", pa.table({"a": [1, 2]}))], block=False)
    assert again[0].duplicate  # type: ignore[union-attr]


def test_catalog_does_not_keep_columns_read_before_a_concurrent_change(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    conn.execute("CREATE TABLE t (a INTEGER)")
    catalog = TableCatalog()

    class Fetched:
        def __init__(self, rows: list[tuple[Any, ...]]) -> None:
            self._rows = rows

        def fetchall(self) -> list[tuple[Any, ...]]:
            return self._rows

    class OvertakenCursor:
        """Reads the catalog, then another transaction changes the table before the caller
        stores what was read."""

        def execute(self, sql: str, params: list[Any]) -> Fetched:
            read = conn.cursor().execute(sql, params).fetchall()
            conn.cursor().execute("ALTER TABLE t ADD COLUMN b INTEGER")
            catalog.invalidate({"t"})
            return Fetched(read)

    seen = catalog.load(OvertakenCursor(), "t")  # type: ignore[arg-type]
    assert seen is not None
    assert [c.name for c in seen] == ["a"]
    assert catalog.cached("t") is None
    fresh = catalog.load(conn.cursor(), "t")
    assert fresh is not None
    assert [c.name for c in fresh] == ["a", "b"]
    assert catalog.cached("t") == fresh
    conn.close()


def test_statements_are_cut_by_bytes_as_well_as_rows() -> None:
    wide = pa.array([b"x" * (STATEMENT_BYTES // 2)] * 1, pa.binary())
    batch = pa.record_batch([wide], names=["blob"])
    assert batch.num_rows < STATEMENT_ROWS
    reader = pa.RecordBatchReader.from_batches(batch.schema, [batch] * 5)
    sizes = [sum(b.num_rows for b in part) for part in _statement_parts(reader)]
    assert sum(sizes) == 5
    assert len(sizes) >= 3
    assert all(size <= 2 for size in sizes)


def test_statements_are_cut_by_rows() -> None:
    batch = pa.record_batch([pa.array(range(STATEMENT_ROWS // 2), pa.int32())], names=["a"])
    reader = pa.RecordBatchReader.from_batches(batch.schema, [batch] * 5)
    sizes = [sum(b.num_rows for b in part) for part in _statement_parts(reader)]
    assert sum(sizes) == 5 * batch.num_rows
    assert max(sizes) <= STATEMENT_ROWS


def test_query_schema_does_not_run_the_query(db: Database) -> None:
    db.write_one(WriteJob("q", WritePolicy(), pa.table({"k": [1, 2], "s": ["a", "b"]})))
    sql = "SELECT k, s, error('ran') AS e FROM q WHERE k > ?"
    schema = query_schema(db, sql, [0])
    assert schema is not None
    assert schema.names == ["k", "s", "e"]
    assert schema.field("k").type == pa.int64()
    with pytest.raises(Exception, match="ran"):
        run_query(db, sql, [0]).read_all()
    full = run_query(db, "SELECT * FROM q")
    assert table_schema(db, "Q") == full.schema
    full.close()
    # Nor when it ends with ';' and a comment (which a subquery around it cannot hold), with
    # text that is not ASCII before it (the tokenizer counts bytes).
    for ending in (";", "; -- done", " ; /* done */ ;", "\n-- done", " AND s <> 'é';"):
        ended = query_schema(db, sql + ending, [0])
        assert ended is not None
        assert ended.names == ["k", "s", "e"]


class _PlansNothing(Database):
    """A database whose queries cannot be described without running them (no statement the
    read guard lets through is such a one today; this keeps the last resort tested)."""

    def query_schema(self, sql: str, params: Any = None, stop: Any = None) -> pa.Schema | None:
        return None


def test_a_query_schema_that_must_run_it_waits_for_a_query_turn(tmp_path: Path) -> None:
    """A query that cannot be described without running it is run as an admitted query: with
    every turn taken it is refused, not run beside them."""
    db = _PlansNothing(DuckDBSettings(path=str(tmp_path / "plans.duckdb")))
    settings = Settings.model_validate(
        {"limits": {"max_concurrent_queries": 1, "max_queued_queries": 0}}
    )
    reads = ReadService(settings, db)
    sql = "SELECT ?::INTEGER AS a"
    try:
        assert reads.query_schema(sql, [1]).names == ["a"]
        held = reads.query("SELECT 1")
        with pytest.raises(Overloaded):
            reads.query_schema(sql, [1])
        held.close()
        assert reads.query_schema(sql, [1]).names == ["a"]
    finally:
        reads.close()
        db.close()


def test_describing_a_query_takes_a_query_turn(tmp_path: Path) -> None:
    """Planning can take long (constant folding): with every turn taken, describing a query
    is refused like a query, not run beside them."""
    db = Database(DuckDBSettings(path=str(tmp_path / "plans.duckdb")))
    settings = Settings.model_validate(
        {"limits": {"max_concurrent_queries": 1, "max_queued_queries": 0}}
    )
    reads = ReadService(settings, db)
    try:
        held = reads.query("SELECT 1")
        with pytest.raises(Overloaded):
            reads.query_schema("SELECT 2 AS b")
        held.close()
        assert reads.query_schema("SELECT 2 AS b").names == ["b"]
    finally:
        reads.close()
        db.close()


# -- small writes inserted by position -----------------------------------------------------------


def _rows(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        return cur.execute(sql).fetchall()


def test_a_small_write_lands_each_value_in_its_own_column_whatever_the_order(
    db: Database,
) -> None:
    """A table in memory whose columns are the table's, in order, is inserted by position;
    in another order, or with other cases or fewer columns, by name: every value lands in the
    column of its name either way."""
    db.write_one(WriteJob("o", WritePolicy(), pa.table({"a": [1], "b": ["x"], "c": [1.5]})))
    db.write_one(WriteJob("o", WritePolicy(), pa.table({"a": [2], "b": ["y"], "c": [2.5]})))
    db.write_one(WriteJob("o", WritePolicy(), pa.table({"c": [3.5], "a": [3], "b": ["z"]})))
    db.write_one(WriteJob("o", WritePolicy(), pa.table({"A": [4], "B": ["w"], "C": [4.5]})))
    db.write_one(WriteJob("o", WritePolicy(), pa.table({"b": ["v"], "a": [5]})))
    assert _rows(db, "SELECT a, b, c FROM o ORDER BY a") == [
        (1, "x", 1.5),
        (2, "y", 2.5),
        (3, "z", 3.5),
        (4, "w", 4.5),
        (5, "v", None),
    ]


def test_a_small_write_to_a_table_with_computed_columns_keeps_them_computed(
    db: Database,
) -> None:
    """Columns with a DEFAULT or GENERATED expression keep the value sent (a default) or refuse
    one (generated); a write naming only the others gets them computed."""
    with db.cursor() as cur:
        cur.execute("CREATE TABLE d (a BIGINT, b BIGINT DEFAULT 7)")
        cur.execute("CREATE TABLE g (a BIGINT, b BIGINT GENERATED ALWAYS AS (a * 2) VIRTUAL)")
    db.write_one(WriteJob("d", WritePolicy(), pa.table({"a": [1], "b": [2]})))
    db.write_one(WriteJob("d", WritePolicy(), pa.table({"a": [3]})))
    assert _rows(db, "SELECT a, b FROM d ORDER BY a") == [(1, 2), (3, 7)]
    with pytest.raises(InvalidValue, match="generated"):
        db.write_one(WriteJob("g", WritePolicy(), pa.table({"a": [1], "b": [5]})))
    db.write_one(WriteJob("g", WritePolicy(), pa.table({"a": [4]})))
    assert _rows(db, "SELECT a, b FROM g") == [(4, 8)]
    with db.cursor() as cur:
        cur.execute("CREATE TABLE n (a BIGINT, b BIGINT DEFAULT NULL)")
        columns = query_columns(cur, "n")
    assert columns is not None
    assert [c.computed for c in columns] == [False, False]  # DEFAULT NULL fills nothing in


def test_a_small_write_matches_names_as_duckdb_does(db: Database) -> None:
    """Only ASCII letters match whatever their case, as in DuckDB's BY NAME."""
    db.write_one(WriteJob("u", WritePolicy(), pa.table({"é": [1], "b": [2]})))
    db.write_one(WriteJob("u", WritePolicy(), pa.table({"é": [3], "B": [4]})))
    with pytest.raises(SchemaConflict, match="É"):  # a column the table does not have
        db.write_one(WriteJob("u", WritePolicy(), pa.table({"É": [5], "b": [6]})))
    assert _rows(db, 'SELECT "é", b FROM u ORDER BY b') == [(1, 2), (3, 4)]


def test_a_small_write_follows_the_columns_its_transaction_sees_not_the_cache(
    db: Database,
) -> None:
    """Cached columns may lag a table replaced a moment ago (until that write's transaction
    has closed): a small write is only inserted by position when the table, as its own
    transaction sees it, has the write's columns in the write's order."""
    db.write_one(WriteJob("r", WritePolicy(), pa.table({"a": [0], "b": [0]})))  # creates it
    db.write_one(WriteJob("r", WritePolicy(), pa.table({"a": [1], "b": [10]})))  # caches it
    before = db.catalog.cached("r")
    assert before is not None
    assert [c.name for c in before] == ["a", "b"]
    replace = WritePolicy(mode="replace")
    db.write_one(WriteJob("r", replace, pa.table({"b": [20], "a": [2]})))
    db.catalog._columns["r"] = before  # what a lookup racing that replace could have left
    db.write_one(WriteJob("r", WritePolicy(), pa.table({"a": [3], "b": [30]})))
    assert _rows(db, "SELECT a, b FROM r ORDER BY a") == [(2, 20), (3, 30)]


def _stopped_within(cursor: duckdb.DuckDBPyConnection, seconds: float) -> bool:
    """Whether an endless query on ``cursor`` is interrupted within ``seconds`` (past them, the
    test interrupts it itself rather than hang)."""
    fallback = threading.Timer(seconds, cursor.interrupt)
    fallback.start()
    started = time.monotonic()
    try:
        with pytest.raises(duckdb.InterruptException):
            cursor.execute(ENDLESS_QUERY).fetchall()
    finally:
        fallback.cancel()
    return time.monotonic() - started < seconds


def test_a_stop_that_lands_between_a_querys_statements_still_stops_it(db: Database) -> None:
    """DuckDB drops an interrupt that lands while nothing runs (a client that leaves while the
    read guard checks its query, between two of its statements): the stop goes on
    interrupting until the query has ended, so the next statement is stopped all the same."""
    cursor = db.connect()
    stop = QueryStop()
    stop.watch(cursor)
    stop()  # nothing runs on the cursor yet
    try:
        assert _stopped_within(cursor, 10)
    finally:
        stop.forget()
        cursor.close()


def test_a_query_timeout_that_lands_between_a_querys_statements_still_stops_it(
    db: Database,
) -> None:
    cursor = db.connect()
    deadline = QueryDeadline(cursor, 0.05)
    time.sleep(0.3)  # the time runs out while nothing runs on the cursor
    try:
        assert _stopped_within(cursor, 10)
        with pytest.raises(QueryTimeout):
            deadline.check()
    finally:
        deadline.cancel()
        cursor.close()


def test_a_query_the_database_file_fails_to_read_is_a_storage_error(tmp_path: Path) -> None:
    """Queries may read no file of their own, so an I/O error while one runs is the
    database's: 503 ``storage_error``, not 400 ``query_error`` (which blames the query)."""
    db_path = tmp_path / "db.duckdb"
    values = pa.table({"id": pa.array(range(2_000_000), pa.int64())})
    with (
        ArrowportProcess(tmp_path / "first", db_path=db_path) as first,
        httpx.Client(base_url=first.url, timeout=60) as http,
    ):
        assert post_binary(http, "numbers", ipc_bytes(values)).status_code == 200
    # Restarted, the server has the table's blocks on disk only; cut them off the file.
    with ArrowportProcess(tmp_path / "second", db_path=db_path) as second:
        with httpx.Client(base_url=second.url, timeout=60) as http:
            with db_path.open("r+b") as database:
                database.truncate(1024**2)
            response = http.post("/query", json={"sql": "SELECT sum(id) AS s FROM numbers"})
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "storage_error"
            assert str(tmp_path) not in response.text
        assert second.alive()


def test_a_database_an_internal_error_invalidated_is_not_ready(db: Database) -> None:
    """DuckDB's INTERNAL errors invalidate the database: every later statement fails until a
    restart. /ready said "ready" meanwhile, so nothing restarted the server."""
    assert db.ready() is None
    broken = pa.table(
        {"c": pa.DictionaryArray.from_arrays(pa.array([0], pa.int8()), pa.array([{"x": 1}]))}
    )
    with db.cursor() as cur:
        # A dictionary of structs handed to DuckDB directly (Arrowport decodes it first).
        cur.register("broken", broken)
        with pytest.raises(duckdb.Error):
            cur.execute("CREATE TABLE invalidated AS SELECT * FROM broken")
    problem = db.ready()
    assert problem is not None
    assert "restart the server" in problem


def test_a_write_after_an_internal_error_invalidated_the_database_is_a_storage_error(
    tmp_path: Path,
) -> None:
    """Once an INTERNAL error has invalidated DuckDB's database (every statement then fails
    until a restart), a write is answered 503 ``storage_error`` saying to restart, as a query
    is, not 500 ``internal_error`` (the database invalidated by a call no query may make)."""
    db = Database(DuckDBSettings(path=str(tmp_path / "invalidated.duckdb")))
    try:
        db.write_one(WriteJob("t", WritePolicy(), pa.table({"x": [1]})))
        cur = db.connect()
        with pytest.raises(duckdb.InternalException) as internal:
            cur.execute("SELECT reservoir_quantile(1.5, [])").fetchall()
        cur.close()
        translated = db.translate(internal.value)
        assert isinstance(translated, StorageError)
        with pytest.raises(StorageError) as refused:
            db.write_one(WriteJob("t", WritePolicy(), pa.table({"x": [2]})))
        assert "restart the server" in refused.value.message
        assert "(/ready answers 503 until then)" in refused.value.message
    finally:
        db.close()
