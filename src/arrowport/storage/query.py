"""The read path: table listings and read-only SQL, streamed as Arrow record batches.

A query must be exactly one ``SELECT`` statement (``WITH``, ``FROM t``, ``VALUES``, ``DESCRIBE``
and ``SUMMARIZE`` included) that passes the read guard (:mod:`arrowport.storage.sql_guard`): only
the database's own tables, only functions known to be harmless. It runs inside a ``READ ONLY``
transaction on its own cursor, on a database sealed from the file system unless
``duckdb.allow_file_access`` is set, and its error messages never show the server's paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from arrowport.errors import (
    ArrowportError,
    InvalidValue,
    QueryError,
    ReadOnly,
    UnknownTable,
    UnsupportedType,
)
from arrowport.storage.catalog import table_columns
from arrowport.storage.identifiers import (
    DEFAULT_SCHEMA,
    USER_SCHEMAS_SQL,
    check_table_name,
    quote,
    split_table,
    table_name,
)
from arrowport.storage.query_stop import QueryDeadline, QueryStop
from arrowport.storage.result_batches import batch_rows, streaming
from arrowport.storage.result_types import (
    column_mends,
    mended_batch,
    mended_schema,
    relation_schema,
)
from arrowport.storage.schema import Column
from arrowport.storage.sql_guard import allowed_like

# Bound values: positional (``?``, ``$1``) as a sequence, named (``$name``) as a mapping.
Parameters = Sequence[Any] | Mapping[str, Any] | None

if TYPE_CHECKING:
    from arrowport.storage.engine import Engine as Database

# pyarrow's words when a result's type nests deeper than its C data interface takes.
_TOO_DEEP = "Recursion level in ArrowSchema"


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: list[Column]
    row_count: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": [c.to_json() for c in self.columns],
            "row_count": self.row_count,
        }


def close_cursor(cursor: duckdb.DuckDBPyConnection) -> None:
    """Roll back what ``cursor`` has open, then close it. Closed with a transaction open, a
    cursor rolls it back in DuckDB's destructor, where a failure aborts the whole process (a
    lake whose catalog went away: ``terminate called after throwing 'Failed to execute query
    "ROLLBACK"'``); here it is an error, and ignored."""
    with contextlib.suppress(duckdb.Error):
        cursor.execute("ROLLBACK")
    cursor.close()


def _outside(exc: duckdb.Error, db: Database) -> ReadOnly:
    return ReadOnly(
        "queries may read only this database's tables; files, extensions and other databases "
        f"are off (duckdb.allow_file_access): {db.scrub(str(exc))}"
    )


# How DuckDB says that a Python value (a parameter) has no DuckDB value: a list mixing values and
# lists, an integer past 128 bits.
_UNBINDABLE = ("Failed to cast value: Unimplemented type for cast", "Python integer too large")


def _failed(exc: BaseException, db: Database) -> ArrowportError:
    """A failed query's error: the storage's if it is at fault (a disk that fails, a lake out
    of reach: 5xx), else the query's own."""
    if isinstance(exc, UnicodeDecodeError):
        # DuckDB's message itself was not UTF-8 (it quoted raw file bytes): not worth a 500.
        return QueryError("query failed (DuckDB's error message could not be decoded)")
    if isinstance(exc, duckdb.InvalidInputException) and any(
        sign in str(exc) for sign in _UNBINDABLE
    ):
        return InvalidValue(
            f"a query parameter cannot be bound as sent: {db.scrub(str(exc))[:500]}"
        )
    if isinstance(exc, pa.ArrowException) and _TOO_DEEP in str(exc):
        return UnsupportedType(
            "the answer's type is nested deeper than Arrow can carry (at most 62 levels of "
            "lists, structs and maps in a column): nest the query's values less deeply"
        )
    return db.query_failure(exc) or QueryError(f"query failed: {db.scrub(str(exc))}")


def _user_tables(cur: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """The database's own tables as (schema, table), the default schema's first."""
    rows = cur.execute(
        f"SELECT schema_name, table_name FROM duckdb_tables() WHERE {USER_SCHEMAS_SQL} "
        f"ORDER BY schema_name <> '{DEFAULT_SCHEMA}', schema_name, table_name"
    ).fetchall()
    return [(str(schema), str(table)) for schema, table in rows]


def _locate(cur: duckdb.DuckDBPyConnection, name: str) -> tuple[str, str]:
    """The (schema, table) ``name`` means: ``schema.table`` when that table exists, else the
    default schema's table of that very name (tables created by SQL may have any name, and are
    listed by it), else a table listed by that name whose schema or name holds a dot
    (``s."a.b"``, listed as ``s.a.b``); 400 for a name no table could have, 404 for one no
    table has."""
    tables = {
        (schema.lower(), table.lower()): (schema, table) for schema, table in _user_tables(cur)
    }
    schema, table = split_table(name)
    found = tables.get((schema.lower(), table.lower())) or tables.get(
        (DEFAULT_SCHEMA, name.lower())
    )
    if found is None:
        found = next(filter(None, map(tables.get, _dotted(name.lower()))), None)
    if found is None:
        check_table_name(name)
        raise UnknownTable(f"table {name!r} does not exist", table=name)
    return found


def _dotted(name: str) -> Iterator[tuple[str, str]]:
    """Every (schema, table) that ``name`` can be split into at one of its dots."""
    for position, character in enumerate(name):
        if character == ".":
            yield name[:position], name[position + 1 :]


def _sql_name(schema: str, table: str) -> str:
    return f"{quote(schema)}.{quote(table)}"


def _check(
    db: Database, cur: duckdb.DuckDBPyConnection, sql: str, params: Parameters = None
) -> int:
    """The read guard (:mod:`arrowport.storage.sql_guard`), against the tables ``cur`` sees;
    the bytes of the longest text the query holds."""
    try:
        return db.guard.check(sql, _user_tables(cur), params)
    except QueryError as exc:
        name = exc.details.get("table")
        if isinstance(name, str) and _is_view(cur, name):
            raise ReadOnly(
                f"{name!r} is a view: queries read only this database's own tables",
                table=name,
            ) from None
        raise
    except ReadOnly as exc:
        name = exc.details.get("function")
        if isinstance(name, str) and not _is_function(cur, name):
            # A typo, not a function the guard holds back: say so, as for a table.
            near = allowed_like(name)
            raise QueryError(
                f"function {name}() does not exist" + (f"; did you mean {near}()?" if near else ""),
                function=name,
            ) from None
        raise


def _is_function(cur: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether DuckDB knows a function (or macro) ``name``, in any schema: the guard refused
    it as not allowed. (One it cannot look up counts as known: the refusal stands.)"""
    try:
        row = cur.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = ?", [name]
        ).fetchone()
    except duckdb.Error:
        return True
    return bool(row and row[0])


def _is_view(cur: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the default schema has a view ``name``: the guard, which knows only tables,
    said that no table of that name exists."""
    row = cur.execute(
        f"SELECT count(*) FROM duckdb_views() WHERE {USER_SCHEMAS_SQL} "
        f"AND schema_name = '{DEFAULT_SCHEMA}' AND lower(view_name) = lower(?)",
        [name],
    ).fetchone()
    return bool(row and row[0])


class QueryResult:
    """A running query: its schema now, its batches as they are fetched."""

    def __init__(
        self,
        cursor: duckdb.DuckDBPyConnection,
        reader: pa.RecordBatchReader,
        deadline: QueryDeadline,
        db: Database,
    ) -> None:
        self._db = db
        self._cursor = cursor
        self.reader = reader
        self._mends = column_mends(cursor.description)
        self.schema: pa.Schema = mended_schema(reader.schema, self._mends)
        self._deadline = deadline
        self._closed = False
        self._on_close: list[Callable[[], None]] = []

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once, when the result is closed (read to its end, or abandoned)."""
        self._on_close.append(callback)

    def check_deadline(self) -> None:
        """408 once the query's time is up: rendering its answer counts too."""
        self._deadline.check()

    def __enter__(self) -> QueryResult:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            for batch in self.reader:
                yield mended_batch(batch, self._mends)
        except duckdb.PermissionException as exc:
            raise _outside(exc, self._db) from None
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            # DuckDB's errors while rows are fetched reach us through the Arrow reader.
            self._deadline.check()
            text = self._db.scrub(str(exc))
            if "Permission Error" in text:
                raise ReadOnly(f"the query tried to reach outside the database: {text}") from None
            raise _failed(exc, self._db) from None
        finally:
            self.close()

    def read_all(self) -> pa.Table:
        return pa.Table.from_batches(list(self), schema=self.schema)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._deadline.cancel()
        try:
            close_cursor(self._cursor)
        finally:
            for callback in self._on_close:
                callback()


def _bound(params: Parameters) -> list[Any] | dict[str, Any] | None:
    """``params`` as DuckDB's ``execute`` takes them (nothing bound: None)."""
    if not params:
        return None
    return dict(params) if isinstance(params, Mapping) else list(params)


def deadline_of(db: Database, cursor: duckdb.DuckDBPyConnection) -> QueryDeadline:
    """What stops a query on ``cursor``: ``db``'s time limit, memory bound and close."""
    return QueryDeadline(cursor, db.query_timeout, db.memory_guard, db.running_queries)


def run_query(
    db: Database, sql: str, params: Parameters = None, stop: QueryStop | None = None
) -> QueryResult:
    """Start a read-only query; the caller iterates (or closes) the result. ``stop`` can end
    it from another thread."""
    cursor = db.connect()
    try:
        deadline = deadline_of(db, cursor)
    except BaseException:
        close_cursor(cursor)
        raise
    if stop is not None:
        stop.watch(cursor, deadline)
    try:
        streaming(cursor)
        with db.catalog_turn():  # the transaction's first read of the catalog
            cursor.execute("BEGIN TRANSACTION READ ONLY")
            widest = _check(db, cursor, sql, params)
        cursor.execute(sql, _bound(params))
        reader = cursor.to_arrow_reader(batch_rows(cursor.description, widest))
    except BaseException as exc:
        deadline.cancel()
        if stop is not None:
            stop.forget()
        close_cursor(cursor)
        deadline.check()
        if isinstance(exc, duckdb.TransactionException):
            raise ReadOnly(f"the query tried to write: {db.scrub(str(exc))}") from None
        if isinstance(exc, duckdb.PermissionException):
            raise _outside(exc, db) from None
        if isinstance(exc, duckdb.Error | UnicodeDecodeError | pa.ArrowException):
            raise _failed(exc, db) from None
        raise
    result = QueryResult(cursor, reader, deadline, db)
    if stop is not None:
        result.on_close(stop.forget)
    return result


@contextlib.contextmanager
def _snapshot(db: Database) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor inside a ``READ ONLY`` transaction: every lookup sees one committed state."""
    with db.cursor() as cur:
        cur.execute("BEGIN TRANSACTION READ ONLY")
        try:
            yield cur
        finally:
            with contextlib.suppress(duckdb.Error):
                cur.execute("ROLLBACK")


def _describe(cur: duckdb.DuckDBPyConnection, schema: str, table: str) -> TableInfo:
    """A table's columns and row count, under the name Arrowport shows for it."""
    columns = table_columns(cur, schema, table) or []
    count = cur.execute(f"SELECT count(*) FROM {_sql_name(schema, table)}").fetchone()
    return TableInfo(table_name(schema, table), columns, int(count[0]) if count else 0)


def list_tables(db: Database) -> list[TableInfo]:
    """Every table of the database, as one consistent snapshot.

    Names come from DuckDB's catalog, so they are not held to :func:`check_table_name`: a table
    created by SQL under any name (``"bad name"``) is listed too.
    """
    with _snapshot(db) as cur:
        return [_describe(cur, schema, table) for schema, table in _user_tables(cur)]


def list_table_schemas(db: Database) -> list[tuple[TableInfo, pa.Schema]]:
    """Every table of the database with its Arrow schema, as one consistent snapshot (each
    table looked up by name instead lists them all again: a square of their number)."""
    with _snapshot(db) as cur:
        return [
            (_describe(cur, schema, table), _arrow_schema(cur, schema, table))
            for schema, table in _user_tables(cur)
        ]


def _arrow_schema(cur: duckdb.DuckDBPyConnection, schema: str, table: str) -> pa.Schema:
    return relation_schema(cur.sql(f"SELECT * FROM {_sql_name(schema, table)}"))


def describe_table(db: Database, name: str) -> TableInfo:
    with _snapshot(db) as cur:
        return _describe(cur, *_locate(cur, name))


def read_table(db: Database, name: str) -> QueryResult:
    """Every row of table ``name`` (404 if it does not exist), streamed like a query."""
    with _snapshot(db) as cur:
        schema, table = _locate(cur, name)
    return run_query(db, f"SELECT * FROM {_sql_name(schema, table)}")


def query_schema(
    db: Database, sql: str, params: Parameters = None, stop: QueryStop | None = None
) -> pa.Schema | None:
    """The Arrow schema of ``sql``'s result, without computing its rows; None for a query that
    cannot be described without running it (the caller runs it as a query, admitted as one).
    Planning can take long too (DuckDB folds constants as it plans): it is held to the query
    time limit, and ``stop`` ends it from another thread.

    For Flight's ``get_schema`` / ``get_flight_info``, which must not run a query to describe it::

        query_schema(db, "SELECT * FROM t WHERE id > ?", [10])
    """
    with _snapshot(db) as cur:
        return schema_in(db, cur, sql, params, stop)


def schema_in(
    db: Database,
    cur: duckdb.DuckDBPyConnection,
    sql: str,
    params: Parameters = None,
    stop: QueryStop | None = None,
) -> pa.Schema | None:
    """:func:`query_schema` planned on ``cur``, in the transaction it is in (a client's
    snapshot: a table replaced since plans as it was)."""
    deadline = deadline_of(db, cur)
    if stop is not None:
        stop.watch(cur, deadline)
    try:
        return _planned_schema(db, cur, sql, params)
    except BaseException:
        deadline.check()  # 408 when its time ran out (DuckDB says "interrupted")
        raise
    finally:
        deadline.cancel()
        if stop is not None:
            stop.forget()


def _planned_schema(
    db: Database, cur: duckdb.DuckDBPyConnection, sql: str, params: Parameters
) -> pa.Schema | None:
    _check(db, cur, sql, params)
    try:
        if not params:
            # A relation is planned, not run, until it is fetched; LIMIT 0 fetches nothing.
            try:
                return relation_schema(cur.sql(sql))
            except duckdb.BinderException:
                _check_no_parameters(cur, sql)
                raise
        # Parameters are bound only by execute, so the query is wrapped to return no rows
        # (its own line, in case it ends with a comment; without its final ';', even one
        # followed by a comment). Caveat: a subquery renames duplicate output names
        # (a, a -> a, a_1).
        wrapped = f"SELECT * FROM (\n{_without_final_semicolons(sql)}\n) LIMIT 0"
        try:
            reader = cur.execute(wrapped, _bound(params)).to_arrow_reader()
            return mended_schema(reader.schema, column_mends(cur.description))
        except duckdb.ParserException:
            return None
    except duckdb.PermissionException as exc:
        raise _outside(exc, db) from None
    except (duckdb.Error, UnicodeDecodeError, pa.ArrowException) as exc:
        raise _failed(exc, db) from None


def _check_no_parameters(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    """400 naming the parameters ``sql`` takes, if any: planned without their values, DuckDB
    says such a query "can't be prepared" (which it can; its values are missing)."""
    try:
        statements = cur.extract_statements(sql)
    except duckdb.Error:
        return  # the planner's own error says what is wrong
    names = {name for statement in statements for name in statement.named_parameters}
    if names:
        listed = ", ".join(sorted(names, key=lambda name: (len(name), name)))
        raise QueryError(
            f"query failed: the query takes parameters ({listed}) and no values were sent for them"
        )


def _without_final_semicolons(sql: str) -> str:
    """``sql`` up to the ';' tokens that end it (comments after them are not tokens)."""
    raw = sql.encode()  # the tokenizer's positions count UTF-8 bytes
    end = len(raw)
    for position, kind in reversed(duckdb.tokenize(sql)):
        if kind != duckdb.token_type.operator or raw[position : position + 1] != b";":
            break
        end = position
    return raw[:end].decode()


def table_schema(db: Database, name: str) -> pa.Schema:
    """The Arrow schema of table ``name`` (404 if it does not exist), without reading rows."""
    with _snapshot(db) as cur:
        return _arrow_schema(cur, *_locate(cur, name))
