"""How one batch meets its table: create, replace, append or upsert, under a schema policy.

Runs inside a transaction the caller owns. Every statement it executes is returned as an action,
so a dry run can roll back and show exactly what would have happened.

* ``append`` (default) inserts by column name; ``create`` refuses an existing table (409);
  ``replace`` swaps the table's contents in the same transaction (readers see the old rows until
  the commit, never an empty table); ``upsert`` merges on key columns.
* ``strict`` schema policy: unknown columns, types that do not convert losslessly and missing
  NOT NULL columns are a 409 naming them (a narrower type, or a missing nullable column, fits).
* ``evolve``: new columns are added as nullable and safe widenings applied (``ALTER`` before any
  row is written, as DuckDB requires in one transaction); anything unsafe is still a 409.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from arrowport.errors import (
    ArrowportError,
    DuplicateKeys,
    InvalidName,
    InvalidOptions,
    InvalidValue,
    SchemaConflict,
    TableExists,
    UnknownTable,
)
from arrowport.options import DuplicateKeysPolicy, SchemaPolicy, WriteMode
from arrowport.storage.catalog import TransactionCatalog
from arrowport.storage.coalesce import ROW_GROUP_ROWS, coalesced
from arrowport.storage.identifiers import DEFAULT_SCHEMA, quote, quote_table, split_table
from arrowport.storage.schema import (
    Column,
    arrow_columns,
    check_compatible,
    create_table_sql,
    is_safe_cast,
)
from arrowport.storage.sql_parse import fold
from arrowport.storage.values import BatchCheck, ValueGuard


@dataclass(frozen=True)
class WritePolicy:
    mode: WriteMode = "append"
    key_columns: tuple[str, ...] = ()
    schema_policy: SchemaPolicy = "strict"
    duplicate_keys: DuplicateKeysPolicy = "error"
    # False: a missing table is a 404 instead of being created (Flight SQL's ingest "append").
    create_missing: bool = True
    # Rows of each batch DuckDB is handed: the request's batches are joined or sliced to it.
    batch_rows: int = ROW_GROUP_ROWS
    # Values the storage itself refuses (see Lake.write), checked as DuckDB scans each batch.
    value_check: BatchCheck | None = None


@dataclass(frozen=True)
class TableWrite:
    table: str
    rows: int
    created: bool
    actions: list[str] = field(default_factory=list)


def reshapes(
    table: str, policy: WritePolicy, schema: pa.Schema, existing: list[Column] | None
) -> bool:
    """Whether writing rows of ``schema`` to ``table`` (its columns ``existing``; None if there
    is no such table) creates, replaces or alters it. A batch that does not fit counts too: it
    fails anyway."""
    if policy.mode == "replace" or existing is None:
        return True
    if policy.schema_policy != "evolve":
        return False
    try:
        return bool(_evolve(table, arrow_columns(schema), existing))
    except ArrowportError:
        return True


def _evolve(table: str, incoming: list[Column], existing: list[Column]) -> list[str]:
    """ALTER statements that make ``existing`` accept ``incoming``; 409 for unsafe changes."""
    by_name = {fold(c.name): c for c in existing}
    statements = []
    unsafe = []
    for column in incoming:
        target = by_name.get(fold(column.name))
        if target is None:
            statements.append(
                f"ALTER TABLE {quote_table(table)} ADD COLUMN {quote(column.name)} {column.type}"
            )
        elif column.all_null or is_safe_cast(column.type, target.type):
            continue
        elif is_safe_cast(target.type, column.type):
            statements.append(
                f"ALTER TABLE {quote_table(table)} ALTER COLUMN {quote(target.name)} "
                f"SET DATA TYPE {column.type}"
            )
        else:
            unsafe.append(f"{column.name} ({column.type} into {target.type})")
    present = {fold(c.name) for c in incoming}
    missing = [c.name for c in existing if not c.nullable and fold(c.name) not in present]
    if unsafe or missing:
        problems = []
        if unsafe:
            problems.append("unsafe type changes: " + ", ".join(unsafe))
        if missing:
            problems.append("missing NOT NULL columns: " + ", ".join(missing))
        raise SchemaConflict(
            f"batch does not fit table {table!r} even with schema evolution: "
            + "; ".join(problems),
            table=table,
        )
    return statements


class _Runner:
    """Executes and records statements."""

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self.cur = cur
        self.actions: list[str] = []

    def run(self, sql: str, record: bool = True) -> duckdb.DuckDBPyConnection:
        if record:
            self.actions.append(sql)
        return self.cur.execute(sql)


def _create_schema(runner: _Runner, table: str) -> None:
    """Creates the schema of a ``schema.table`` name on demand. A schema named like one of the
    attached databases (``db`` for ``db.duckdb``) would make ``db.t`` ambiguous: refused."""
    schema, _ = split_table(table)
    if schema == DEFAULT_SCHEMA:
        return
    clash = runner.cur.execute(
        "SELECT database_name FROM duckdb_databases() WHERE lower(database_name) = lower(?)",
        [schema],
    ).fetchone()
    if clash is not None:
        raise InvalidName(
            f"schema {schema!r} has the name of a database this server has attached "
            f"({clash[0]!r}): choose another schema name",
            table=table,
        )
    runner.run(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")


def write_table(
    catalog: TransactionCatalog,
    table: str,
    data: pa.RecordBatchReader | pa.Table,
    policy: WritePolicy,
) -> TableWrite:
    cur = catalog.cur
    runner = _Runner(cur)
    incoming = arrow_columns(data.schema)
    last_wins = policy.mode == "upsert" and policy.duplicate_keys == "last_wins"
    if last_wins and any(fold(c.name) == POSITION_COLUMN for c in incoming):
        raise InvalidOptions(
            f"column name {POSITION_COLUMN!r} is reserved for duplicate_keys: last_wins; "
            "rename it or send each key once",
            columns=[POSITION_COLUMN],
        )
    existing = catalog.columns(table)
    if policy.mode == "create" and existing is not None:
        raise TableExists(f"table {table!r} already exists", table=table)
    if existing is None and not policy.create_missing:
        raise UnknownTable(f"table {table!r} does not exist", table=table)
    # A replace of an existing table makes a table too, but answers that none was created:
    # the table was there already.
    created = existing is None
    if policy.mode == "replace" or existing is None:
        catalog.mark_changed(table)
        _create_schema(runner, table)
        runner.run(create_table_sql(table, incoming, replace=policy.mode == "replace"))
    elif policy.schema_policy == "evolve":
        for statement in _evolve(table, incoming, existing):
            catalog.mark_changed(table)
            runner.run(statement)
    else:
        check_compatible(table, incoming, existing)
    # Columns DuckDB fills in itself (a DEFAULT or GENERATED expression) are only ever made by
    # SQL outside Arrowport: none in a table it has just created or replaced.
    computed = (
        policy.mode != "replace" and existing is not None and any(c.computed for c in existing)
    )
    # Values DuckDB would silently change (sub-microsecond time zones, ...) are refused.
    guard = ValueGuard(coalesced(data, policy.batch_rows), policy.value_check)
    try:
        checked = guard.reader
        if (
            policy.mode != "upsert"
            and isinstance(checked, pa.Table)
            and not computed
            and _same_names(checked.schema.names, cur.table(quote_table(table)).columns)
        ):
            # A small write (a group commit's), in memory, that names the table's columns in
            # their order as this transaction sees them: inserted by position, as BY NAME would
            # place it, without registering and dropping a view of it (on a busy server, a
            # tenth of a group's commit). Handed over as an Arrow C stream: a pyarrow Table
            # DuckDB scans through pyarrow.dataset, taking the GIL back more often (a 16,000-row
            # insert and commit: 11 times, not 8; benchmarks/duckdb_gil.py), each a wait while
            # the event loop holds it.
            cur.from_arrow(checked.__arrow_c_stream__()).insert_into(quote_table(table))
            rows = checked.num_rows
            runner.actions.append(_insert_action(table))
        else:
            rows = _insert_registered(runner, table, checked, incoming, policy)
    except duckdb.Error:
        guard.raise_error()  # DuckDB wraps errors raised inside its scan; answer with ours
        raise
    return TableWrite(table, rows, created, runner.actions)


def _insert_registered(
    runner: _Runner,
    table: str,
    data: pa.RecordBatchReader | pa.Table,
    incoming: list[Column],
    policy: WritePolicy,
) -> int:
    """Insert (or upsert) ``data`` scanned as a registered view, a stream in several statements;
    the rows inserted."""
    cur = runner.cur
    source = f"_arrowport_src_{uuid.uuid4().hex}"
    try:
        if policy.mode == "upsert":
            last_wins = policy.duplicate_keys == "last_wins"
            cur.register(source, _with_positions(data) if last_wins else data)
            return _upsert(runner, table, source, incoming, policy)
        rows = 0
        for part in _statement_parts(data):
            cur.register(source, part)
            row = runner.run(
                f"INSERT INTO {quote_table(table)} BY NAME SELECT * FROM {quote(source)}",
                record=False,
            ).fetchone()
            rows += int(row[0]) if row else 0
        runner.actions.append(_insert_action(table))
        return rows
    finally:
        cur.unregister(source)


def _insert_action(table: str) -> str:
    """How a dry run shows an insert of a write's rows (by name, whichever way it went in)."""
    return f"INSERT INTO {quote_table(table)} BY NAME (batch rows)"


def _same_names(incoming: list[str], columns: list[str]) -> bool:
    """Whether ``incoming`` names ``columns`` in order, as DuckDB matches names: without
    regard to the case of ASCII letters (only theirs)."""
    return len(incoming) == len(columns) and all(
        fold(a) == fold(b) for a, b in zip(incoming, columns, strict=True)
    )


# DuckDB keeps the Arrow buffers a statement has scanned alive until the statement ends, so one
# INSERT of a multi-gigabyte stream would hold all of it in memory. A stream is therefore
# inserted by several statements of at most this many rows or bytes each (whichever comes first),
# inside the same transaction: the row cap bounds narrow rows, the byte cap wide ones. The byte
# cap is most of what a large upload costs in memory (twice over Flight, whose realigned copies
# are recycled by the next statement); a statement boundary costs a few milliseconds.
STATEMENT_ROWS = 1_048_576
STATEMENT_BYTES = 64 * 1024 * 1024


def _statement_parts(
    data: pa.RecordBatchReader | pa.Table,
) -> Iterator[pa.RecordBatchReader | pa.Table]:
    """``data`` as a series of readers, each ending with the batch that reaches
    :data:`STATEMENT_ROWS` rows or :data:`STATEMENT_BYTES` bytes (a table: whole)."""
    if isinstance(data, pa.Table):
        yield data
        return
    batches = iter(data)
    exhausted = False

    def part() -> Iterator[pa.RecordBatch]:
        nonlocal exhausted
        rows = 0
        size = 0
        for batch in batches:
            yield batch
            rows += batch.num_rows
            size += batch.get_total_buffer_size()
            if rows >= STATEMENT_ROWS or size >= STATEMENT_BYTES:
                return
        exhausted = True

    while not exhausted:
        yield pa.RecordBatchReader.from_batches(data.schema, part())


# ``duplicate_keys: last_wins`` numbers the rows as they arrive, in this extra column: SQL's
# ``row_number() OVER ()`` promises no order once DuckDB scans in parallel. A batch may not use it.
POSITION_COLUMN = "__arrowport_row_position"


def _positions(start: int, count: int) -> pa.Array:
    """``start, start + 1, ..., start + count - 1`` as int64, without a Python loop."""
    ones = pa.repeat(pa.scalar(1, pa.int64()), count)
    positions: pa.Array = pc.cumulative_sum(ones, start=start - 1)
    return positions


def _with_positions(data: pa.RecordBatchReader | pa.Table) -> pa.RecordBatchReader | pa.Table:
    """``data`` with :data:`POSITION_COLUMN` appended: each row's position in the request."""
    field = pa.field(POSITION_COLUMN, pa.int64(), nullable=False)
    if isinstance(data, pa.Table):
        return data.append_column(field, _positions(0, data.num_rows))
    schema = data.schema.append(field)

    def numbered() -> Iterator[pa.RecordBatch]:
        start = 0
        for batch in data:
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, _positions(start, batch.num_rows)], schema=schema
            )
            start += batch.num_rows

    return pa.RecordBatchReader.from_batches(schema, numbered())


def _upsert(
    runner: _Runner, table: str, source: str, incoming: list[Column], policy: WritePolicy
) -> int:
    keys = list(policy.key_columns)
    if not keys:
        raise InvalidOptions("mode upsert needs key columns (stream key_columns or ?key_columns=)")
    names = {fold(c.name): c.name for c in incoming}
    missing = [k for k in keys if fold(k) not in names]
    if missing:
        raise SchemaConflict(
            f"upsert key columns missing from the batch: {', '.join(missing)}", columns=missing
        )
    staged = f"_arrowport_stage_{uuid.uuid4().hex}"
    key_list = ", ".join(quote(k) for k in keys)
    if policy.duplicate_keys == "last_wins":
        # Keep the last row of each key, in the order the request sent them.
        position = quote(POSITION_COLUMN)
        runner.run(
            f"CREATE TEMP TABLE {quote(staged)} AS SELECT * EXCLUDE ({position}) "
            f"FROM {quote(source)} QUALIFY row_number() OVER (PARTITION BY {key_list} "
            f"ORDER BY {position} DESC) = 1",
            record=False,
        )
    else:
        runner.run(
            f"CREATE TEMP TABLE {quote(staged)} AS SELECT * FROM {quote(source)}", record=False
        )
    any_null = " OR ".join(f"{quote(k)} IS NULL" for k in keys)
    counted = runner.run(
        f"SELECT count(*), count(*) FILTER (WHERE {any_null}) FROM {quote(staged)}",
        record=False,
    ).fetchone()
    staged_rows, null_keys = (int(counted[0]), int(counted[1])) if counted else (0, 0)
    if null_keys:
        raise InvalidValue(f"{null_keys} rows have a NULL upsert key ({', '.join(keys)})")
    repeated = runner.run(
        f"SELECT {key_list} FROM {quote(staged)} GROUP BY ALL HAVING count(*) > 1 LIMIT 5",
        record=False,
    ).fetchall()
    if repeated:
        raise DuplicateKeys(
            f"the batch repeats upsert keys ({', '.join(keys)}): {repeated}; "
            "send each key once or set duplicate_keys: last_wins",
            columns=keys,
        )
    on = " AND ".join(f"t.{quote(k)} = s.{quote(k)}" for k in keys)
    updates = ", ".join(
        f"{quote(c.name)} = s.{quote(c.name)}"
        for c in incoming
        if fold(c.name) not in {fold(k) for k in keys}
    )
    matched = f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else ""
    runner.run(
        f"MERGE INTO {quote_table(table)} AS t USING {quote(staged)} AS s ON ({on}) "
        f"{matched}WHEN NOT MATCHED THEN INSERT BY NAME",
        record=False,
    )
    runner.actions.append(f"MERGE INTO {quote_table(table)} ON ({key_list}) (batch rows)")
    # Dropped only on success: after a failed statement DuckDB has aborted the transaction and
    # refuses every further one (the DROP's error would hide the real one); the caller's rollback
    # removes the staging table then.
    runner.run(f"DROP TABLE {quote(staged)}", record=False)
    # Every staged row was written or matched. MERGE's own count leaves out the matched rows
    # when only keys are sent (no column to update): a key already there counted as nothing.
    return staged_rows
