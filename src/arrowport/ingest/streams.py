"""How a request meets the configured streams: its options resolved, its caller authorised.

Every adapter hands over an :class:`~arrowport.options.IngestRequest` and the authenticated
:class:`~arrowport.auth.Principal`; :meth:`Streams.resolve` is the one place that merges the
request with the stream's configuration and the defaults, refuses what a ``locked`` stream or
``streams_only`` forbids, and checks that the principal may write there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arrowport.auth import Principal
from arrowport.config import Settings, StreamSettings
from arrowport.errors import InvalidName, InvalidOptions, StreamLocked, UnknownStream
from arrowport.options import (
    IngestRequest,
    WriteMode,
    canonical_table,
    check_stream_name,
    check_table_name,
    is_table_name,
)
from arrowport.storage.table_writer import WritePolicy

# The fewest rows handed to DuckDB in one batch, whatever chunk_size asks: its vector's size.
MIN_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class IngestOptions:
    """A request's options once resolved: what will be written, where and how."""

    stream: str
    table: str
    mode: WriteMode
    chunk_size: int
    policy: WritePolicy
    dry_run: bool = False
    idempotency_key: str | None = None
    producer_id: str | None = None
    sequence: int | None = None

    @property
    def groupable(self) -> bool:
        """Small appends may share a transaction with others (group commit)."""
        return self.mode == "append" and not self.dry_run


class Streams:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._unconfigured = StreamSettings()  # what a stream with no configuration gets

    def table_for(self, stream: str) -> str:
        """The table a stream lands in when a request names none: configured, else its name
        (``main.t`` is ``t``)."""
        configured = self._settings.streams.get(stream)
        return canonical_table((configured.table if configured else None) or stream)

    def _own_table(self, stream: str, base: StreamSettings) -> str | None:
        """The stream's own table: configured, else its name if that is a table name without a
        dot (a dot picks no schema); otherwise none (``app.v1``, ``my-stream``), and a request
        must name the table."""
        if base.table is not None or ("." not in stream and is_table_name(stream)):
            return self.table_for(stream)
        return None

    def configured(self, stream: str) -> StreamSettings | None:
        """``stream``'s configuration (None: it has none); 404 ``unknown_stream`` for a stream
        that has none under ``streams_only``."""
        configured = self._settings.streams.get(stream)
        if configured is None and self._settings.streams_only:
            raise UnknownStream(f"stream {stream!r} is not configured", stream=stream)
        return configured

    def describe(self, stream: str) -> dict[str, Any]:
        """What a request to ``stream`` that sets no option of its own is written with, and
        whether its options are locked (a client splitting data into several requests needs
        to know whether the first replaces the table)."""
        check_stream_name(stream)
        configured = self.configured(stream)
        base = configured or self._unconfigured
        return {
            "name": stream,
            "table": self._own_table(stream, base),
            "mode": base.mode,
            "chunk_size": base.chunk_size or self._settings.defaults.chunk_size,
            "compression": base.compression,
            "key_columns": list(base.key_columns or ()),
            "schema_policy": base.schema_policy,
            "duplicate_keys": base.duplicate_keys,
            "locked": base.locked,
            "configured": configured is not None,
        }

    def resolve(self, request: IngestRequest, principal: Principal) -> IngestOptions:
        """Merge the request with its stream's configuration; check the principal may write it."""
        stream = request.stream
        principal.require("ingest", stream=stream)
        configured = self.configured(stream)
        base = configured or self._unconfigured
        own_table = self._own_table(stream, base)
        if configured is not None and configured.locked:
            _check_locked(stream, request, base, own_table or stream)
        wanted = request.table or own_table
        if wanted is None:
            raise InvalidName(
                f"stream {stream!r} is not a table name: name the table it lands in "
                "(the request's table option, or the stream's configured table)",
                stream=stream,
            )
        table = canonical_table(check_table_name(wanted))
        chunk_size = request.chunk_size or base.chunk_size or self._settings.defaults.chunk_size
        # Fewer rows per batch than a DuckDB vector only slows the insert (one row at a time: a
        # 100,000-row request held the writer for 9 s, then ran DuckDB out of memory).
        chunk_size = max(chunk_size, MIN_CHUNK_ROWS)
        policy = WritePolicy(
            mode=request.mode or base.mode,
            key_columns=tuple(request.key_columns or base.key_columns or ()),
            schema_policy=request.schema_policy or base.schema_policy,
            duplicate_keys=request.duplicate_keys or base.duplicate_keys,
            batch_rows=min(chunk_size, self._settings.defaults.coalesce_rows),
        )
        if policy.mode != "upsert":
            _check_upsert_only(request, policy.mode)
        elif not policy.key_columns:
            raise InvalidOptions(
                "mode upsert needs key columns: configure the stream's key_columns, or send "
                "key_columns with the request (HTTP: ?key_columns=a,b; a Flight put command: "
                '"key_columns": ["a", "b"]; Flight SQL: arrowport.key_columns=a,b)',
                field="key_columns",
            )
        # A stream-limited token writes only to its stream's own table: without this it could
        # name any target table in the request.
        principal.require_table(stream, table, own_table)
        return IngestOptions(
            stream=stream,
            table=table,
            mode=policy.mode,
            chunk_size=chunk_size,
            policy=policy,
            dry_run=request.dry_run,
            idempotency_key=request.idempotency_key,
            producer_id=request.producer_id,
            sequence=request.sequence,
        )


def _check_upsert_only(request: IngestRequest, mode: WriteMode) -> None:
    """Refuse upsert options sent for another mode: ignored, they would hide a mistake (the
    mode left out, or the options meant for another stream)."""
    given = [name for name in ("key_columns", "duplicate_keys") if getattr(request, name)]
    if given:
        whose = "" if request.mode is not None else " (the stream's: the request sends none)"
        raise InvalidOptions(
            f"{given[0]} applies to mode upsert only, and this request's mode is {mode!r}"
            f"{whose}: leave {' and '.join(given)} out, or send mode upsert",
            field=given[0],
        )


def _check_locked(
    stream: str, request: IngestRequest, configured: StreamSettings, table: str
) -> None:
    """Refuse every option the request sets that differs from the locked configuration."""
    pairs: dict[str, tuple[Any, Any]] = {
        # DuckDB's table names are case-insensitive.
        "table": (request.table and canonical_table(request.table).lower(), table.lower()),
        "mode": (request.mode, configured.mode),
        "key_columns": (
            list(request.key_columns) if request.key_columns else None,
            configured.key_columns or [],
        ),
        "schema_policy": (request.schema_policy, configured.schema_policy),
        "duplicate_keys": (request.duplicate_keys, configured.duplicate_keys),
    }
    differing = [
        f"{name}={requested!r} (configured: {wanted!r})"
        for name, (requested, wanted) in pairs.items()
        if requested is not None and requested != wanted
    ]
    if differing:
        raise StreamLocked(
            f"stream {stream!r} is locked to its configuration; refused: {', '.join(differing)}",
            stream=stream,
        )
