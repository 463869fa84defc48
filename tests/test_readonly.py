"""Read-only queries stay read-only: no writes, no files, no extensions, no settings, one statement.

Each escape attempt goes through ``POST /query`` with a ``read`` token against a real server; it
must be refused (403, or 400 where DuckDB's own parser refuses it), leave no file behind, leak
nothing, and leave the server healthy with its data intact.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from arrowport.auth import hash_secret, new_token
from tests.conftest import ARROW_STREAM, ipc_bytes
from tests.server import ArrowportProcess

READER = new_token("reader")
ROOT = new_token("root")
MARKER = "s3cr3t-server-file-content"


def tokens() -> list[dict[str, object]]:
    return [
        {"name": "reader", "secret_hash": hash_secret(READER), "scopes": ["read"]},
        {"name": "root", "secret_hash": hash_secret(ROOT), "scopes": ["admin"]},
    ]


class Target:
    """The server plus the paths an attacker would like to read or write."""

    def __init__(self, server: ArrowportProcess, files: Path) -> None:
        self.server = server
        self.files = files
        self.csv = files / "private.csv"
        self.parquet = files / "private.parquet"
        self.out = files / "out"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    files = tmp_path_factory.mktemp("files")
    (files / "private.csv").write_text(f"secret\n{MARKER}\n")
    pq.write_table(pa.table({"secret": [MARKER]}), files / "private.parquet")
    (files / "out").mkdir()
    config = {"auth": {"tokens": tokens()}}
    with ArrowportProcess(tmp_path_factory.mktemp("readonly"), config=config) as server:
        response = httpx.post(
            server.url + "/stream/kept",
            content=ipc_bytes(pa.table({"id": [1, 2, 3]})),
            headers={"Content-Type": ARROW_STREAM, "Authorization": f"Bearer {ROOT}"},
        )
        assert response.status_code == 200, response.text
        yield Target(server, files)


@pytest.fixture
def reader(target: Target) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {READER}", "Accept": "application/json"}
    with httpx.Client(base_url=target.server.url, headers=headers, timeout=60) as client:
        yield client


def attempt(client: httpx.Client, sql: str) -> httpx.Response:
    return client.post("/query", json={"sql": sql})


def assert_refused(response: httpx.Response, *codes: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["code"] in (codes or ("read_only",))
    assert MARKER not in response.text


def assert_intact(target: Target, client: httpx.Client) -> None:
    assert target.server.healthy()
    assert list(target.out.iterdir()) == []
    count = attempt(client, "SELECT count(*) AS n FROM kept")
    assert count.status_code == 200, count.text
    assert count.json()["rows"] == [{"n": 3}]


# -- names ---------------------------------------------------------------------------------------

# A CTE's name reaches a catalog object wherever the CTE is not in scope, or when the reference
# carries a schema (DuckDB never matches a qualified name to a CTE).
CTE_ESCAPES = {
    "dotted_cte": (
        'WITH "pg_catalog.pg_settings" AS (SELECT 1) SELECT name, setting FROM pg_catalog.pg_settings'
    ),
    "main_qualified": "WITH duckdb_databases AS (SELECT 1) SELECT * FROM main.duckdb_databases",
    "out_of_scope": (
        "SELECT * FROM (WITH duckdb_databases AS (SELECT 1 AS x) SELECT * FROM duckdb_databases) a, "
        "duckdb_databases b"
    ),
    "subquery_cte_as_file": (
        'SELECT (WITH "{parquet}" AS (SELECT 1) SELECT 1) AS x, * FROM "{parquet}"'
    ),
    "subquery_cte_as_table": (
        "SELECT (WITH duckdb_databases AS (SELECT 1) SELECT 1) AS x, * FROM duckdb_databases"
    ),
    "own_body_database_file": 'WITH "{db}" AS (SELECT * FROM "{db}") SELECT * FROM "{db}"',
    "internal_dotted": (
        'WITH "_arrowport.idempotency_keys" AS (SELECT 1) SELECT * FROM _arrowport.idempotency_keys'
    ),
}


@pytest.mark.parametrize("sql", CTE_ESCAPES.values(), ids=CTE_ESCAPES.keys())
def test_a_cte_name_never_unlocks_a_catalog_object(
    target: Target, reader: httpx.Client, sql: str
) -> None:
    paths = {"parquet": target.files / "private.parquet", "db": target.server.db_path}
    response = attempt(reader, sql.format(**paths))
    assert_refused(response)
    assert "temp_directory" not in response.text
    assert_intact(target, reader)


def test_ctes_and_tables_are_read_by_their_names(target: Target, reader: httpx.Client) -> None:
    answer = attempt(reader, "WITH x AS (SELECT id FROM main.kept) SELECT count(*) AS n FROM x")
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [{"n": 3}]


# -- types built from text ------------------------------------------------------------------------

DEEP = "||".join(["repeat('[', 10000)"] * 10 + ["'\"INTEGER\"'"] + ["repeat(']', 10000)"] * 10)
STRUCTURES = {
    # 100,000 nested lists: DuckDB 1.5.5 dies of a SIGSEGV building the type.
    "deep_structure": f"SELECT length(typeof(json_transform('null', {DEEP}))) AS n",
    "variant": """SELECT from_json('[]', '["VARIANT"]') AS v""",
    # The same VARIANT, its letters JSON escapes (which DuckDB decodes).
    "escaped_variant": """SELECT from_json('[]', '["\\u0076ari\\u0061nt"]') AS v""",
    "computed": "SELECT json_transform('1', (SELECT 'INTEGER')) AS v",
    "too_deep_literal": "SELECT from_json('null', '"
    + "[" * 65
    + '"INTEGER"'
    + "]" * 65
    + "') AS v",
}


@pytest.mark.parametrize("sql", STRUCTURES.values(), ids=STRUCTURES.keys())
def test_json_structures_are_small_literals(target: Target, reader: httpx.Client, sql: str) -> None:
    response = attempt(reader, sql)
    assert_refused(response)
    assert response.json()["rule"] == "literal_size"
    assert_intact(target, reader)


@pytest.mark.parametrize(
    "sql",
    [
        # Rebuilds a parse tree recursively: 100,000 levels (ten joined repeat()s) crashed it.
        "SELECT json_deserialize_sql(json_serialize_sql('SELECT 1')) AS q",
        # Indents by depth: a 200 KB array 100,000 deep would take ~10 GB outside memory_limit.
        "SELECT json_pretty('[[1]]') AS p",
    ],
)
def test_json_functions_that_recurse_without_bound_are_refused(
    target: Target, reader: httpx.Client, sql: str
) -> None:
    assert_refused(attempt(reader, sql))
    assert_intact(target, reader)


def test_a_literal_json_structure_still_builds_its_type(reader: httpx.Client) -> None:
    sql = """SELECT json_transform('{"a": [1, 2]}', '{"a": ["INTEGER"]}') AS v"""
    answer = attempt(reader, sql)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [{"v": {"a": [1, 2]}}]


# -- files ---------------------------------------------------------------------------------------

FILE_READS = {
    "read_csv": "SELECT * FROM read_csv('{csv}')",
    "read_csv_auto": "SELECT * FROM read_csv_auto('{csv}')",
    "read_parquet": "SELECT * FROM read_parquet('{parquet}')",
    "parquet_metadata": "SELECT * FROM parquet_metadata('{parquet}')",
    "read_text": "SELECT * FROM read_text('{csv}')",
    "read_blob": "SELECT * FROM read_blob('{csv}')",
    "read_json": "SELECT * FROM read_json_auto('{csv}')",
    "glob": "SELECT * FROM glob('{files}/*')",
    "sniff_csv": "SELECT * FROM sniff_csv('{csv}')",
    "etc_passwd": "SELECT * FROM read_csv('/etc/passwd')",
    "in_subquery": "SELECT (SELECT count(*) FROM read_text('{csv}')) AS n",
    "in_cte": "WITH f AS (SELECT * FROM read_parquet('{parquet}')) SELECT * FROM f",
}


@pytest.mark.parametrize("sql", FILE_READS.values(), ids=FILE_READS.keys())
def test_file_reading_functions_are_refused(target: Target, reader: httpx.Client, sql: str) -> None:
    sql = sql.format(csv=target.csv, parquet=target.parquet, files=target.files)
    assert_refused(attempt(reader, sql))
    assert_intact(target, reader)


def test_replacement_scan_of_a_file_path_is_not_a_file_read(
    target: Target, reader: httpx.Client
) -> None:
    response = attempt(reader, f"SELECT * FROM '{target.parquet}'")
    assert response.status_code in (400, 403), response.text
    assert MARKER not in response.text


# -- writes and side channels --------------------------------------------------------------------

STATEMENTS = {
    "attach": "ATTACH '{out}/evil.duckdb' AS evil",
    "attach_read_only": "ATTACH '{out}/evil.duckdb' AS evil (READ_ONLY)",
    "copy_to": "COPY kept TO '{out}/dump.csv'",
    "copy_query_to": "COPY (SELECT * FROM kept) TO '{out}/dump.parquet' (FORMAT parquet)",
    "copy_from": "COPY kept FROM '{csv}'",
    "export_database": "EXPORT DATABASE '{out}/export'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "force_install": "FORCE INSTALL parquet",
    "set_external_access": "SET enable_external_access = true",
    "set_threads": "SET threads = 1",
    "set_global": "SET GLOBAL memory_limit = '1GB'",
    "reset": "RESET enable_external_access",
    "set_variable": "SET VARIABLE x = 1",
    "pragma": "PRAGMA enable_profiling",
    "pragma_threads": "PRAGMA threads = 1",
    "insert": "INSERT INTO kept VALUES (4)",
    "update": "UPDATE kept SET id = 0",
    "delete": "DELETE FROM kept",
    "drop": "DROP TABLE kept",
    "create": "CREATE TABLE made AS SELECT 1",
    "create_secret": "CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')",
    "checkpoint": "CHECKPOINT",
    "detach": "DETACH evil",
    "use": "USE system",
    "call": "CALL pragma_version()",
}


@pytest.mark.parametrize("sql", STATEMENTS.values(), ids=STATEMENTS.keys())
def test_statements_other_than_select_are_refused(
    target: Target, reader: httpx.Client, sql: str
) -> None:
    sql = sql.format(out=target.out, csv=target.csv)
    assert_refused(attempt(reader, sql))
    assert_intact(target, reader)


MULTIPLE = {
    "select_then_drop": "SELECT 1; DROP TABLE kept",
    "select_then_copy": "SELECT 1; COPY kept TO '{out}/dump.csv'",
    "select_then_attach": "SELECT 1; ATTACH '{out}/evil.duckdb'",
    "set_then_select": "SET enable_external_access = true; SELECT * FROM read_csv('{csv}')",
    "two_selects": "SELECT 1; SELECT 2",
    "trailing_comment_statement": "SELECT 1; /* hi */ INSERT INTO kept VALUES (9)",
}


@pytest.mark.parametrize("sql", MULTIPLE.values(), ids=MULTIPLE.keys())
def test_multiple_statements_are_refused(target: Target, reader: httpx.Client, sql: str) -> None:
    sql = sql.format(out=target.out, csv=target.csv)
    assert_refused(attempt(reader, sql))
    assert_intact(target, reader)


def test_a_long_chain_of_and_or_is_refused_and_a_shorter_one_runs(
    target: Target, reader: httpx.Client
) -> None:
    """DuckDB's parse of an AND / OR chain takes time growing with the square of its length,
    uninterrupted (90,000 terms: a minute): past 5,000 operators a query is refused."""
    chain = "SELECT count(*) AS n FROM kept WHERE " + " OR/**/".join(["id=1"] * 90_000)
    refused = attempt(reader, chain)
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "query_error"
    assert refused.json()["limit"] == 5_000
    shorter = "SELECT (" + " AND ".join(["true"] * 2_000) + " OR false) AS v"
    answer = attempt(reader, shorter)
    assert answer.status_code == 200, answer.text
    assert answer.json()["rows"] == [{"v": True}]
    assert_intact(target, reader)


@pytest.mark.parametrize("sql", ["", "   ", "-- nothing", "/* nothing */ ;"])
def test_an_empty_query_is_a_query_error(reader: httpx.Client, sql: str) -> None:
    answer = attempt(reader, sql)
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "query_error"
    assert "empty" in answer.json()["message"]


def test_a_pivot_runs_with_its_values_listed_and_says_so_without(
    target: Target, reader: httpx.Client
) -> None:
    listed = attempt(reader, "PIVOT kept ON id IN (1, 2) USING count(*)")
    assert listed.status_code == 200, listed.text
    assert listed.json()["rows"] == [{"1": 1, "2": 1}]
    unlisted = attempt(reader, "PIVOT kept ON id USING count(*)")
    assert unlisted.status_code == 400, unlisted.text
    assert unlisted.json()["code"] == "query_error"
    assert "IN (" in unlisted.json()["message"]
    assert_intact(target, reader)


def test_query_table_function_cannot_smuggle_a_statement(
    target: Target, reader: httpx.Client
) -> None:
    response = attempt(reader, f"SELECT * FROM query('COPY kept TO ''{target.out}/q.csv''')")
    assert response.status_code in (400, 403), response.text
    assert_intact(target, reader)


def test_params_are_values_not_sql(target: Target, reader: httpx.Client) -> None:
    response = reader.post(
        "/query", json={"sql": "SELECT ? AS v", "params": ["x'); DROP TABLE kept; --"]}
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [{"v": "x'); DROP TABLE kept; --"}]
    assert_intact(target, reader)


def test_file_access_stays_off_for_admin_tokens_too(target: Target) -> None:
    with httpx.Client(
        base_url=target.server.url,
        headers={"Authorization": f"Bearer {ROOT}"},
        timeout=60,
    ) as root:
        response = root.post("/query", json={"sql": f"SELECT * FROM read_csv('{target.csv}')"})
        assert_refused(response)


def test_ingest_still_works_with_file_access_off(target: Target, reader: httpx.Client) -> None:
    with httpx.Client(base_url=target.server.url, timeout=60) as client:
        response = client.post(
            "/stream/after_attempts",
            content=ipc_bytes(pa.table({"v": pa.array([1.5, 2.5])})),
            headers={"Content-Type": ARROW_STREAM, "Authorization": f"Bearer {ROOT}"},
        )
    assert response.status_code == 200, response.text
    total = attempt(reader, "SELECT sum(v) AS s FROM after_attempts")
    assert total.json()["rows"] == [{"s": 4.0}]


def test_allow_file_access_opts_back_in(tmp_path: Path) -> None:
    data = tmp_path / "shared.csv"
    data.write_text("a,b\n1,x\n2,y\n")
    config = {"duckdb": {"allow_file_access": True}}
    with ArrowportProcess(tmp_path / "server", config=config) as server:
        response = httpx.post(
            server.url + "/query",
            json={"sql": f"SELECT sum(a)::BIGINT AS s FROM read_csv('{data}')"},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["rows"] == [{"s": 3}]
        # Still one read-only SELECT: COPY ... TO stays refused.
        copy = httpx.post(
            server.url + "/query", json={"sql": f"COPY (SELECT 1) TO '{tmp_path}/o.csv'"}
        )
        assert copy.status_code == 403
        assert not (tmp_path / "o.csv").exists()
        # A reader's options name its columns' types: never VARIANT, as no cast may.
        variant = httpx.post(
            server.url + "/query",
            json={"sql": f"SELECT * FROM read_csv('{data}', columns={{'a': 'VARIANT'}})"},
        )
        assert variant.status_code == 403, variant.text
        assert variant.json()["code"] == "read_only"
