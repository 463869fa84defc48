"""How many rows each Arrow batch of a read's answer holds, by its columns' DuckDB types."""

from __future__ import annotations

import duckdb

from arrowport.storage.result_batches import (
    MAX_BATCH_ROWS,
    VARIABLE_BATCH_ROWS,
    batch_rows,
)

# A value of each fixed-width type DuckDB answers with, over 4,096 rows.
FIXED = {
    "b": "true",
    "i8": "1::TINYINT",
    "u8": "1::UTINYINT",
    "i16": "1::SMALLINT",
    "u16": "1::USMALLINT",
    "i32": "1::INTEGER",
    "u32": "1::UINTEGER",
    "i64": "1::BIGINT",
    "u64": "1::UBIGINT",
    "i128": "1::HUGEINT",
    "u128": "1::UHUGEINT",
    "f32": "1::FLOAT",
    "f64": "1::DOUBLE",
    "dec": "1.5::DECIMAL(38, 2)",
    "d": "DATE '2024-01-01'",
    "t": "TIME '01:02:03'",
    "tns": "'01:02:03'::TIME_NS",
    "ttz": "'01:02:03+00'::TIMETZ",
    "ts": "TIMESTAMP '2024-01-01'",
    "ts_s": "'2024-01-01'::TIMESTAMP_S",
    "ts_ms": "'2024-01-01'::TIMESTAMP_MS",
    "ts_ns": "'2024-01-01'::TIMESTAMP_NS",
    "tstz": "'2024-01-01'::TIMESTAMPTZ",
    "iv": "INTERVAL 1 DAY",
    "u": "uuid()",
    "e": "'a'::ENUM('a', 'b')",
    "arr": "[1.5, 2.5]::DOUBLE[2]",
}


def test_every_fixed_width_type_is_known_and_no_wider_than_its_count() -> None:
    """Fixed-width answers are sized by each type's width, found by its DuckDB type id: an id
    DuckDB renamed would make them come a vector at a time; a width counted short, larger
    batches than meant."""
    con = duckdb.connect()
    for name, value in FIXED.items():
        cursor = con.execute(f"SELECT {value} AS {name} FROM range(4096)")
        rows = batch_rows(cursor.description)
        assert rows > VARIABLE_BATCH_ROWS, (name, cursor.description)
        table = cursor.to_arrow_table()
        width = 8 * 1024**2 // rows
        assert table.column(0).nbytes / table.num_rows <= width, (name, table.schema)


def test_variable_width_answers_come_a_few_vectors_at_a_time() -> None:
    con = duckdb.connect()
    for value in ("'x'", "[1]", "{'a': 1}", "map([1], [2])", "'x'::BLOB", "1::BIGNUM"):
        cursor = con.execute(f"SELECT 1 AS n, {value} AS v")
        assert batch_rows(cursor.description) == VARIABLE_BATCH_ROWS, value
    cursor = con.execute("SELECT 1 AS n, 'x' AS v")
    assert batch_rows(cursor.description, widest_input=1024**2) == 8
    assert batch_rows(con.execute("SELECT 1::TINYINT AS n").description) == MAX_BATCH_ROWS
