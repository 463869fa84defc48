"""A DuckLake's catalog as Arrowport reaches it: where it is, and the claims that make a delivery
land at most once across every node.

DuckLake has no unique constraint, and two transactions that insert the same bookkeeping row both
commit. But a lake commit writes one row to the catalog's ``ducklake_snapshot_changes`` table,
carrying the commit's ``extra_info``, in the same catalog transaction as everything else it
commits. A trigger on that table (installed here, idempotently) reads the delivery claims a commit
lists in its ``extra_info`` and inserts each into a claims table with a primary key: a claim that
is already there makes the trigger fail, the catalog transaction rolls back, and the whole lake
commit with it. So of two commits claiming the same delivery, exactly one lands — whatever node
they come from — and a crash at any step leaves either the commit with its claims or neither
(docs/exactly-once.md has the whole argument).

The trigger's error says ``arrowport-claim-taken``: DuckLake retries commits whose error mentions
"unique", "conflict" and the like, which would only delay the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from arrowport.errors import StorageError

CLAIM_TAKEN = "arrowport-claim-taken"
CLAIMS_KEY = "arrowport_claims"
# libpq's defaults wait minutes for a host that does not answer; a node must say so quickly.
_PG_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
}
_KEY_VALUE = re.compile(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True)
class CatalogLocation:
    """``ducklake.catalog`` parsed: a PostgreSQL connection, a SQLite file or a DuckDB file."""

    kind: Literal["postgres", "sqlite", "duckdb"]
    target: str  # a libpq connection string (password included), or a file path
    password: str | None = None

    @classmethod
    def parse(cls, catalog: str, password: str | None = None) -> CatalogLocation:
        if catalog.startswith("postgres:"):
            dsn = catalog.removeprefix("postgres:")
            given = dict(_KEY_VALUE.findall(dsn))
            extra = {k: v for k, v in _PG_DEFAULTS.items() if k not in given}
            if password is not None and "password" not in given:
                extra["password"] = _quote_libpq(password)
            elif "password" in given:
                password = given["password"].strip("'")
            dsn = " ".join([dsn, *(f"{k}={v}" for k, v in extra.items())])
            return cls("postgres", dsn.strip(), password)
        if catalog.startswith("sqlite:"):
            return cls("sqlite", catalog.removeprefix("sqlite:"))
        return cls("duckdb", catalog)

    @property
    def attach_path(self) -> str:
        if self.kind == "duckdb":
            return self.target
        return f"{self.kind}:{self.target}"

    @property
    def many_processes(self) -> bool:
        """Whether several processes may share this catalog (a DuckDB file: only one)."""
        return self.kind != "duckdb"


def _quote_libpq(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def catalog_lock(
    location: CatalogLocation, key: int, metadata_schema: str | None, wait: bool = True
) -> Iterator[bool]:
    """Hold lock ``key`` of the lake whose catalog is in ``metadata_schema`` (one holder across
    every node: an advisory lock in the catalog's PostgreSQL database, a file lock beside a
    SQLite catalog) while the block runs. Yields whether it is held: with ``wait=False``, False
    when another node holds it. Lakes whose catalogs share a database have locks of their own."""
    if location.kind == "postgres":
        import psycopg

        try:
            conn = psycopg.connect(location.target, autocommit=True)
        except psycopg.Error as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StorageError(f"the lake's catalog cannot be reached: {reason}") from None
        # The two-key form: this lock's kind, and the lake (a hash of its schema's name).
        keys = [key, metadata_schema or "public"]
        with conn:
            if wait:
                conn.execute("SELECT pg_advisory_lock(%s::int4, hashtext(%s))", keys)
                held = True
            else:
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s::int4, hashtext(%s))", keys
                ).fetchone()
                held = bool(row and row[0])
            try:
                yield held
            finally:
                if held:
                    # A connection that broke took its session's locks with it.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("SELECT pg_advisory_unlock(%s::int4, hashtext(%s))", keys)
    elif location.kind == "sqlite":
        _schema(metadata_schema)  # a plain identifier, fit for a file's name
        suffix = f"-{metadata_schema}" if metadata_schema else ""
        with open(f"{location.target}.arrowport-lock-{key}{suffix}", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    else:
        yield True  # a DuckDB-file catalog has one process


def install_claims(location: CatalogLocation, metadata_schema: str | None) -> None:
    """Create the claims table and the trigger in the catalog database (idempotent; several
    nodes may run it at once)."""
    if location.kind == "postgres":
        _install_postgres(location.target, metadata_schema)
    elif location.kind == "sqlite":
        _install_sqlite(location.target)


def _schema(metadata_schema: str | None) -> str:
    """The catalog's PostgreSQL schema, quoted as DuckLake quotes it (case kept)."""
    schema = metadata_schema or "public"
    if not _IDENTIFIER.fullmatch(schema):
        raise StorageError(f"ducklake.metadata_schema {schema!r} is not a plain identifier")
    return f'"{schema}"'


def _install_postgres(dsn: str, metadata_schema: str | None) -> None:
    import psycopg  # only a PostgreSQL catalog needs it

    schema = _schema(metadata_schema)
    statements = [
        # Nodes starting together must not interleave these statements.
        "SELECT pg_advisory_xact_lock(8301547)",
        f"CREATE TABLE IF NOT EXISTS {schema}.arrowport_claims ("
        "claim text PRIMARY KEY, snapshot_id bigint NOT NULL, "
        "claimed_at timestamptz NOT NULL DEFAULT now())",
        f"""CREATE OR REPLACE FUNCTION {schema}.arrowport_claim() RETURNS trigger
            LANGUAGE plpgsql AS $fn$
            DECLARE claim text;
            BEGIN
              IF NEW.commit_extra_info IS NULL
                 OR NEW.commit_extra_info NOT LIKE '{{"{CLAIMS_KEY}":%' THEN
                RETURN NEW;
              END IF;
              FOR claim IN SELECT jsonb_array_elements_text(
                  NEW.commit_extra_info::jsonb -> '{CLAIMS_KEY}') LOOP
                INSERT INTO {schema}.arrowport_claims (claim, snapshot_id)
                  VALUES (claim, NEW.snapshot_id) ON CONFLICT DO NOTHING;
                IF NOT FOUND THEN
                  RAISE EXCEPTION '{CLAIM_TAKEN} %', claim;
                END IF;
              END LOOP;
              RETURN NEW;
            END $fn$""",
        f"CREATE OR REPLACE TRIGGER arrowport_claim BEFORE INSERT ON "
        f"{schema}.ducklake_snapshot_changes FOR EACH ROW EXECUTE FUNCTION "
        f"{schema}.arrowport_claim()",
    ]
    try:
        with psycopg.connect(dsn, autocommit=False) as conn, conn.transaction():
            for statement in statements:
                conn.execute(statement.encode())
    except psycopg.Error as exc:
        raise StorageError(
            f"cannot install delivery claims in the lake's PostgreSQL catalog: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None


def _install_sqlite(path: str) -> None:
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn, conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS arrowport_claims (claim TEXT PRIMARY KEY, "
                "snapshot_id INTEGER NOT NULL, claimed_at TEXT DEFAULT CURRENT_TIMESTAMP)"
            )
            # SQLite writes one transaction at a time: checking, then inserting, is atomic.
            conn.execute(
                f"""CREATE TRIGGER IF NOT EXISTS arrowport_claim
                BEFORE INSERT ON ducklake_snapshot_changes
                WHEN NEW.commit_extra_info LIKE '{{"{CLAIMS_KEY}":%'
                BEGIN
                  SELECT RAISE(ABORT, '{CLAIM_TAKEN}') WHERE EXISTS (
                    SELECT 1 FROM arrowport_claims, json_each(NEW.commit_extra_info,
                      '$.{CLAIMS_KEY}') AS j WHERE arrowport_claims.claim = j.value);
                  INSERT INTO arrowport_claims (claim, snapshot_id)
                    SELECT j.value, NEW.snapshot_id
                    FROM json_each(NEW.commit_extra_info, '$.{CLAIMS_KEY}') AS j;
                END"""
            )
    except sqlite3.Error as exc:
        raise StorageError(
            f"cannot install delivery claims in the lake's SQLite catalog: {exc}"
        ) from None


def claimed_snapshot(
    location: CatalogLocation, metadata_schema: str | None, claim: str
) -> int | None:
    """The snapshot of the committed lake commit that holds ``claim`` (it lives and dies with
    its commit); None if none does."""
    if location.kind == "postgres":
        import psycopg

        with psycopg.connect(location.target) as conn:
            row = conn.execute(
                f"SELECT snapshot_id FROM {_schema(metadata_schema)}.arrowport_claims "
                "WHERE claim = %s",
                [claim],
            ).fetchone()
            return None if row is None else int(row[0])
    if location.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(location.target, timeout=30)) as lite:
            found = lite.execute(
                "SELECT snapshot_id FROM arrowport_claims WHERE claim = ?", [claim]
            ).fetchone()
            return None if found is None else int(found[0])
    return None  # a DuckDB-file catalog commits in this process: a failed commit is none


def expire_claims(
    location: CatalogLocation, metadata_schema: str | None, hours: float, commit_hours: float
) -> int:
    """Forget delivery claims (``k``, ``p``) older than ``hours`` — by then the lake's own
    records answer for them: a key past its window is forgotten, a sequence at or below the
    producer's last is a duplicate — and commit claims (``w``) older than ``commit_hours``."""
    if location.kind == "postgres":
        import psycopg

        with psycopg.connect(location.target) as conn:
            cursor = conn.execute(
                f"DELETE FROM {_schema(metadata_schema)}.arrowport_claims "
                "WHERE (claim LIKE 'w%%' AND claimed_at < now() - make_interval(secs => %s)) "
                "OR (claim NOT LIKE 'w%%' AND claimed_at < now() - make_interval(secs => %s))",
                [commit_hours * 3600, hours * 3600],
            )
            return cursor.rowcount
    if location.kind == "sqlite" and Path(location.target).exists():
        with contextlib.closing(sqlite3.connect(location.target, timeout=30)) as lite, lite:
            removed = lite.execute(
                "DELETE FROM arrowport_claims "
                "WHERE (claim LIKE 'w%' AND claimed_at < datetime('now', ?)) "
                "OR (claim NOT LIKE 'w%' AND claimed_at < datetime('now', ?))",
                [f"-{int(commit_hours * 3600)} seconds", f"-{int(hours * 3600)} seconds"],
            )
            return removed.rowcount
    return 0


# How DuckDB reports a catalog connection lost mid-transaction: in whatever error the statement
# it broke raises (a binder error reading the file list, a commit whose ROLLBACK failed), not
# only as an I/O error. Such a request is the lake's failure, never the batch's.
_CATALOG_LOST = (
    "server closed the connection unexpectedly",
    "could not connect to server",
    "connection refused",
    "no connection to the server",
    "terminating connection due to administrator command",
    'failed to execute query "rollback"',
    "could not receive data from server",
    "could not send data to server",
    "ssl syscall error",
    "ssl connection has been closed unexpectedly",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is starting up",
)


def catalog_lost(message: str) -> bool:
    """Whether a DuckDB error's ``message`` says the catalog's connection was lost."""
    lowered = message.lower()
    return any(marker in lowered for marker in _CATALOG_LOST)
