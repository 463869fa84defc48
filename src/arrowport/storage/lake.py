"""The DuckLake target: a lakehouse shared by many Arrowport nodes — its catalog in PostgreSQL
(or, for one machine, SQLite or a DuckDB file), its data as Parquet in a directory or any
S3-compatible store — written through the same DuckDB SQL as the file target.

What differs from the file (:mod:`arrowport.storage.database`):

* the extensions come from their pinned PyPI packages (``duckdb-extension-*``), loaded with
  autoinstall off: nothing is ever downloaded;
* other nodes change the lake too, so table columns are never cached, and a commit the lake
  refuses (another node's commit got there first, a catalog blip) is retried with backoff and
  jitter when the write can be replayed (group-committed requests), or answered with a
  retryable 503 when it cannot (a stream already read) (:mod:`arrowport.storage.lake_commits`);
* delivery records are plain rows, made unique across nodes by claims the catalog checks in the
  commit itself (:mod:`arrowport.storage.lake_catalog`, docs/exactly-once.md);
* upserts on the lake take turns cluster-wide (DuckLake 1.5.5 lets two transactions insert the
  same new key: each upsert also updates a guard row, and two such commits conflict);
* types the lake cannot store (ENUM, UNION, fixed-size lists, BIT, BIGNUM, TIME_NS) are a 422
  naming the column before anything is written.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import duckdb
import pyarrow as pa
import structlog

from arrowport.config import DuckDBSettings, DuckLakeSettings
from arrowport.errors import (
    ArrowportError,
    Overloaded,
    StorageError,
    StorageUnavailable,
    is_disk_full,
    shown,
)
from arrowport.storage.background import Periodic
from arrowport.storage.catalog import TableCatalog, TransactionCatalog
from arrowport.storage.database import open_connection
from arrowport.storage.delivery import Delivery, DeliveryLedger, Duplicate
from arrowport.storage.engine import Engine, is_io_failure
from arrowport.storage.lake_catalog import (
    CatalogLocation,
    catalog_lock,
    claimed_snapshot,
    install_claims,
)
from arrowport.storage.lake_commits import commit_retrying, lake_refusal
from arrowport.storage.lake_figures import (
    FIGURES_SECONDS,
    MaintenanceRecorder,
    read_figures,
)
from arrowport.storage.lake_files import lost_files
from arrowport.storage.lake_ledger import LakeLedger, commit_claim
from arrowport.storage.lake_open import (
    LAKE,
    UPSERT_GUARD,
    attach,
    load_extensions,
    prepare,
    probe_path,
    probe_store,
    read_secret,
)
from arrowport.storage.lake_text import (
    check_lake_delivery,
    check_lake_names,
    check_lake_query,
    check_lake_text,
)
from arrowport.storage.lake_turns import Turns
from arrowport.storage.lake_types import check_lake_types
from arrowport.storage.lake_watch import STORE_CHECK_SECONDS, Watch, ask_store
from arrowport.storage.sql_guard import ReadGuard
from arrowport.storage.writes import WriteJob, WriteOutcome

log = structlog.get_logger(__name__)

_STARTUP_LOCK_KEY = 8301546
LAKE_MEMORY_LIMIT = "1GB"
# A catalog connection that cannot be made fails within libpq's connect_timeout (5 s): a
# question still unanswered after this is hung.
CATALOG_PATIENCE = 10.0


class Lake(Engine):
    """A DuckLake as this node's storage. Thread-safe: every caller gets its own cursor."""

    target = "ducklake"

    def __init__(
        self,
        duck: DuckDBSettings,
        lake: DuckLakeSettings,
        query_timeout: float | None = None,
        idempotency_window_hours: float = 24.0,
    ) -> None:
        if lake.catalog is None or lake.data_path is None:
            raise StorageError("a DuckLake needs ducklake.catalog and ducklake.data_path")
        password = read_secret(
            lake.catalog_password, lake.catalog_password_file, "ducklake.catalog_password"
        )
        self.location = CatalogLocation.parse(lake.catalog, password)
        self.settings = lake
        self.data_path = lake.data_path
        self.idempotency_window_hours = idempotency_window_hours
        extensions = Path(tempfile.gettempdir()) / f"arrowport-extensions-{os.getuid()}"
        if "memory_limit" not in duck.model_fields_set:
            # Parquet writers buffer whole row groups: concurrent bulk writes to a lake need
            # more than the file target's default.
            duck = duck.model_copy(update={"memory_limit": LAKE_MEMORY_LIMIT})
        root = open_connection(duck, ":memory:", {"extension_directory": str(extensions)})
        super().__init__(root, query_timeout)
        self.catalog = TableCatalog(cached=False)  # other nodes change tables too
        # Writes that create, replace or alter a table take turns with this node's other work
        # (see arrowport.storage.lake_turns).
        self._loads = Turns()
        self._drops = Turns()
        self._commits = Turns()
        self._attempt = threading.local()  # the write this thread is committing
        secrets = [
            s
            for s in (
                self.location.password,
                read_secret(lake.s3_secret, lake.s3_secret_file, "s3 secret"),
            )
            if s
        ]
        self.hide_paths(*((s, "***") for s in secrets), (self.location.target, "<catalog>"))
        try:
            # Nodes starting together on a new lake take turns to create its catalog tables.
            with catalog_lock(self.location, _STARTUP_LOCK_KEY, lake.metadata_schema):
                self._open(root, lake)
        except (StorageError, duckdb.Error) as exc:
            root.close()
            message = exc.message if isinstance(exc, StorageError) else str(exc)
            raise StorageError(f"cannot open the lake: {self.scrub(message)}") from None
        if not duck.allow_file_access:
            # Queries see only the lake; the lake itself still reads and writes its data path.
            root.execute("SET allowed_directories = [?]", [self._data_dir()])
            root.execute("SET enable_external_access = false")
        self.guard = ReadGuard(duck.allow_file_access, self._own_files(), check_lake_query)
        self.maintenance = MaintenanceRecorder()
        self._figures: dict[str, float] = {}
        with contextlib.suppress(ArrowportError, duckdb.Error):
            self.measure()
        self.on_close(
            Periodic("arrowport-lake-figures", FIGURES_SECONDS, self.measure, self.scrub).stop
        )
        s3 = self.data_path.startswith("s3://")
        what = "the lake's object store" if s3 else "the lake's data directory"
        probe = probe_path(self._data_dir())
        ask = functools.partial(ask_store, super().connect, what, probe, self.scrub)
        self._store_watch = Watch(what, ask, lake.store_timeout_seconds)
        store_checks = Periodic(
            "arrowport-lake-store", STORE_CHECK_SECONDS, self._store_watch.check
        )
        # Not held by a check the store never answers: the thread is a daemon.
        self.on_close(functools.partial(store_checks.stop, wait=1.0))
        self._catalog_watch = Watch("the lake's catalog", self._ask_catalog, CATALOG_PATIENCE)

    # -- opening -------------------------------------------------------------------------------

    def _open(self, root: duckdb.DuckDBPyConnection, lake: DuckLakeSettings) -> None:
        try:
            load_extensions(root, self.location, self.data_path)
            attach(root, self.location, lake)
        except duckdb.Error as exc:
            raise StorageError(self.scrub(str(exc))) from None
        probe_store(root, self._data_dir(), self.scrub)
        install_claims(self.location, lake.metadata_schema)
        prepare(root)

    def _own_files(self) -> list[str]:
        """What no query may read even with file access on: the data directory (everything in
        it) and a catalog kept in a local file, with its journals."""
        own = [] if self.data_path.startswith("s3://") else [self._data_dir()]
        if self.location.kind != "postgres":
            catalog = self.location.target
            own += [catalog, *(catalog + end for end in ("-wal", "-shm", "-journal", ".wal"))]
        return own

    def _data_dir(self) -> str:
        if self.data_path.startswith("s3://"):
            return self.data_path if self.data_path.endswith("/") else self.data_path + "/"
        return os.path.realpath(self.data_path)

    # -- connections ---------------------------------------------------------------------------

    def connect(self) -> duckdb.DuckDBPyConnection:
        cur = super().connect()
        try:
            with self._loads.shared():
                cur.execute(f"USE {LAKE}")  # reads the catalog's latest snapshot
        except duckdb.Error as exc:
            cur.close()
            if isinstance(exc, duckdb.IOException | duckdb.ConnectionException):
                raise self._unreachable(exc) from None
            raise self.translate(exc) from None
        return cur

    def _unreachable(self, exc: BaseException) -> StorageUnavailable:
        reason = self.scrub(str(exc)).splitlines()[0]
        return StorageUnavailable(f"the lake cannot be reached now ({reason}); retry shortly")

    def ready(self) -> str | None:
        problem = super().ready() or self._store_watch.problem()
        if problem is not None:
            return problem
        self._catalog_watch.check()
        return self._catalog_watch.problem()

    def _catalog_error(self) -> ArrowportError | None:
        try:
            with self.cursor():  # opening one reads the catalog's latest snapshot
                pass
        except ArrowportError as exc:
            return exc
        return None

    def _ask_catalog(self) -> str | None:
        error = self._catalog_error()
        return error.message if error is not None else None

    def query_failure(self, exc: BaseException) -> ArrowportError | None:
        """An I/O error is the catalog's or the object store's (a read's Parquet files), unless
        queries may read files of their own: the lake is out of reach. Any other error is asked
        again of the catalog: a query that failed because it went away is not at fault
        either."""
        if is_io_failure(exc) and not is_disk_full(exc) and not self.guard.file_access:
            return self._unreachable(exc)
        return super().query_failure(exc) or self._catalog_gone()

    def _catalog_gone(self) -> StorageUnavailable | None:
        error = self._catalog_error()
        return error if isinstance(error, StorageUnavailable) else None

    def catalog_turn(self, long: bool = False) -> contextlib.AbstractContextManager[None]:
        return self._loads.shared(long)

    def dropping_schemas(self) -> contextlib.AbstractContextManager[None]:
        """Held by maintenance that drops cached schema versions (flushing inlined data,
        expiring snapshots): it waits for every transaction that reshapes a table."""
        return self._drops.alone()

    # -- writes --------------------------------------------------------------------------------

    def transaction_turn(self, reshaping: bool) -> contextlib.AbstractContextManager[None]:
        return self._drops.shared() if reshaping else contextlib.nullcontext()

    @contextlib.contextmanager
    def commit_turn(self, reshaping: bool) -> Iterator[None]:
        # A reshaping commit loses the race for each next snapshot to a stream of appends: the
        # node's other commits wait for it. A commit DuckLake retries reads the latest schema
        # version again: a shared turn at loads too (see arrowport.storage.lake_turns).
        with self._commits.alone() if reshaping else self._commits.shared(), self._loads.shared():
            yield

    def begin(self, cur: duckdb.DuckDBPyConnection, reshaping: bool) -> None:
        # The transaction's first read of the lake loads its schema version now, within the
        # turn (alone for one that reshapes a table); its later statements find it cached.
        with self._loads.alone() if reshaping else self._loads.shared():
            cur.begin()
            cur.execute(f"SELECT count(*) FROM duckdb_schemas() WHERE database_name = '{LAKE}'")

    def ledger(self, cur: duckdb.DuckDBPyConnection) -> DeliveryLedger:
        return LakeLedger(cur, LAKE, getattr(self._attempt, "token", None))

    def _write_jobs(
        self, catalog: TransactionCatalog, jobs: Sequence[WriteJob]
    ) -> list[WriteOutcome | ArrowportError]:
        outcomes = super()._write_jobs(catalog, jobs)
        self._attempt.outcomes = outcomes  # the answers, should its commit land unseen
        return outcomes

    def write(
        self, jobs: Sequence[WriteJob], dry_run: bool = False, block: bool = True
    ) -> list[WriteOutcome | ArrowportError]:
        """As :meth:`Engine.write`, retrying what the lake refused for now.

        Every attempt's commit carries the same write claim. A commit whose answer was lost
        (the catalog committed, the reply never came) is therefore found, not repeated: its
        claim is in the catalog, and a replay of it is refused by that claim.
        """
        for job in jobs:
            check_lake_types(job.data.schema)
            check_lake_names(job.table, job.data.schema)
            check_lake_delivery(job.delivery)
        jobs = [
            replace(job, policy=replace(job.policy, value_check=check_lake_text)) for job in jobs
        ]
        problem = self._store_watch.problem()
        if problem is not None:
            # Known now (until the next check, every few seconds, sees it answer): answered at
            # once rather than after waiting on the store again.
            raise StorageUnavailable(f"{problem}; retry shortly")
        self._attempt.token = uuid.uuid4().hex
        self._attempt.tables = [job.table for job in jobs]
        write_once = super().write

        def attempt() -> list[WriteOutcome | ArrowportError]:
            self._attempt.outcomes = None
            return write_once(jobs, dry_run, block)

        try:
            return commit_retrying(
                attempt,
                lambda: None if dry_run else self._attempt.outcomes,
                self._landed,
                lambda: self._as_duplicates(jobs),
                self.settings,
                replayable=all(isinstance(job.data, pa.Table) for job in jobs),
            )
        finally:
            self._attempt.token = self._attempt.outcomes = self._attempt.tables = None

    def _landed(self) -> bool:
        """Whether a commit of the current write is in the catalog. A catalog that cannot be
        asked leaves it unknown: then nothing is claimed either way."""
        claim = commit_claim(self._attempt.token)
        for attempt in range(5):
            try:
                snapshot = claimed_snapshot(self.location, self.settings.metadata_schema, claim)
                break
            except Exception as exc:  # psycopg or sqlite3: the catalog is unreachable
                reason = self.scrub(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
                time.sleep(min(2.0, 0.1 * 2**attempt))
        else:
            raise StorageUnavailable(
                f"the lake's catalog could not be reached to learn whether this write was "
                f"committed ({reason}); it may have been: retry with the same idempotency key "
                "or producer sequence, which lands it at most once"
            )
        if snapshot is None:
            return False
        self._check_files(snapshot)
        return True

    def _check_files(self, snapshot: int) -> None:
        """A commit found in the catalog after its answer was lost must still have its files
        (see :mod:`arrowport.storage.lake_files`): it is not answered as landed without them."""
        tables = sorted(set(self._attempt.tables))
        try:
            with self.cursor() as cur:
                missing = lost_files(cur, LAKE, tables, snapshot)
        except (duckdb.Error, ArrowportError) as exc:  # the lake is out of reach again
            log.warning(
                "the files of a commit whose answer was lost could not be checked",
                snapshot=snapshot,
                tables=tables,
                reason=self.scrub(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            return
        if not missing:
            return
        log.error(
            "a lake commit landed without its files",
            snapshot=snapshot,
            tables=tables,
            missing=len(missing),
            files=[self.scrub(path) for path in missing[:10]],
        )
        raise StorageError(
            f"this write was committed to the lake (snapshot {snapshot}), but its answer was "
            f"lost and DuckLake deleted the {len(missing)} file(s) it had written, as it does "
            f"after any failed commit: the catalog lists files the store no longer has, and "
            f"reads of {', '.join(shown(t) for t in tables)} fail until the table is repaired "
            "(see docs/exactly-once.md)"
        )

    def _as_duplicates(self, jobs: Sequence[WriteJob]) -> list[WriteOutcome | ArrowportError]:
        """A stream already read cannot be written again: its delivery was committed by another
        node meanwhile, so answer as its duplicate."""
        answers: list[WriteOutcome | ArrowportError] = []
        with self.cursor() as cur:
            ledger = self.ledger(cur)
            for job in jobs:
                verdict = ledger.check(job.delivery) if job.delivery is not None else None
                if not isinstance(verdict, Duplicate):
                    raise Overloaded(
                        "another node was committing this delivery; retry shortly", retry_after=1
                    )
                record = verdict.result
                answers.append(
                    WriteOutcome(
                        str(record.get("table", job.table)),
                        int(record.get("rows", 0)),
                        created=False,
                        duplicate=True,
                        last_sequence=record.get("last_sequence"),
                    )
                )
        return answers

    def before_commit(self, cur: duckdb.DuckDBPyConnection, jobs: Sequence[WriteJob]) -> None:
        if any(job.mode == "upsert" for job in jobs):
            # Upserts take turns: two commits that both update this row conflict.
            cur.execute(f"UPDATE {UPSERT_GUARD} SET turn = turn + 1")

    def translate(self, exc: BaseException) -> BaseException:
        # An invalidated database first: its errors repeat the one that invalidated it, which
        # may read as the lake refusing a commit (a lost catalog), tried again for nothing.
        if isinstance(exc, duckdb.FatalException):
            invalidated = self._invalidated(exc)
            if invalidated is not None:
                return invalidated
        return lake_refusal(exc, self.scrub) or super().translate(exc)

    def size_bytes(self) -> int:
        return int(self._figures.get("size_bytes", 0))

    def stats(self) -> dict[str, float]:
        sizes = {name: value for name, value in self._figures.items() if name != "size_bytes"}
        return self.maintenance.figures() | sizes

    def measure(self) -> None:
        """Read the lake's figures for the metrics, in the background (and after maintenance)."""
        with self.cursor() as cur:
            self._figures = read_figures(cur)

    def _before_close(self) -> None:
        with contextlib.suppress(duckdb.Error):
            self._root.execute("USE memory")
            self._root.execute(f"DETACH {LAKE}")


__all__ = ["Delivery", "Lake"]
