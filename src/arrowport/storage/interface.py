"""The storage interface the services use: writes, reads and metadata, delivery state, lifecycle.

Two implementations: :class:`~arrowport.storage.database.Database` (a DuckDB file, the embedded
default) and :class:`~arrowport.storage.lake.Lake` (a DuckLake shared by many nodes). Nothing
above ``storage/`` knows which one it talks to.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa

from arrowport.errors import ArrowportError
from arrowport.storage.query import Parameters, QueryResult, TableInfo
from arrowport.storage.query_stop import QueryStop
from arrowport.storage.writes import WriteJob, WriteOutcome


class Storage(Protocol):
    target: str
    query_timeout: float | None

    # -- writes --------------------------------------------------------------------------------

    def write(
        self, jobs: Sequence[WriteJob], dry_run: bool = False, block: bool = True
    ) -> list[WriteOutcome | ArrowportError]:
        """Write jobs in one transaction (see :meth:`Engine.write`)."""

    def write_one(self, job: WriteJob, dry_run: bool = False) -> WriteOutcome: ...

    def lock_names(self, job: WriteJob) -> set[str]: ...

    # -- delivery state ------------------------------------------------------------------------

    def last_sequence(self, stream: str, producer_id: str) -> int | None: ...

    # -- reads and metadata --------------------------------------------------------------------

    def query(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> QueryResult: ...

    def read_table(self, name: str) -> QueryResult: ...

    def tables(self) -> list[TableInfo]: ...

    def table(self, name: str) -> TableInfo: ...

    def table_schemas(self) -> list[tuple[TableInfo, pa.Schema]]: ...

    def query_schema(
        self, sql: str, params: Parameters = None, stop: QueryStop | None = None
    ) -> pa.Schema | None: ...

    def table_schema(self, name: str) -> pa.Schema: ...

    # -- lifecycle -----------------------------------------------------------------------------

    def ready(self) -> str | None:
        """Why writes cannot be taken now (None: they can)."""

    def size_bytes(self) -> int: ...

    def stats(self) -> dict[str, float]:
        """Figures of the target's own for the metrics, by name (``*_total``: counters)."""

    def close(self) -> None: ...
