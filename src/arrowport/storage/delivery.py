"""Exactly-once bookkeeping, kept in the same DuckDB transaction as the rows it describes.

Two mechanisms, both optional per request:

* **Idempotency keys** — ``(stream, key)`` is recorded with a fingerprint of the payload and the
  result. A retry with the same key and payload gets the original result back (``duplicate``) and
  writes nothing; the same key with another payload is a 409 ``idempotency_conflict``, and so is
  a used key on a request whose producer sequence is new (the key and the offset disagree).
* **Producer offsets** — ``(stream, producer_id)`` records the last committed ``sequence``. A sequence
  at or below it is a duplicate; anything but the next one is a 409 ``sequence_gap``.

Because the records commit with the rows, a crash can never leave rows without their record or a
record without its rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb

from arrowport.errors import IdempotencyConflict, SequenceGap
from arrowport.storage.identifiers import INTERNAL_SCHEMA, quote

IDEMPOTENCY_TABLE = f"{quote(INTERNAL_SCHEMA)}.idempotency_keys"
PRODUCERS_TABLE = f"{quote(INTERNAL_SCHEMA)}.producer_offsets"
_IDEMPOTENCY = IDEMPOTENCY_TABLE
_PRODUCERS = PRODUCERS_TABLE

SCHEMA_SQL = (
    f"CREATE TABLE IF NOT EXISTS {_IDEMPOTENCY} ("
    "stream VARCHAR NOT NULL, key VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, "
    "result VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
    "PRIMARY KEY (stream, key))",
    f"CREATE TABLE IF NOT EXISTS {_PRODUCERS} ("
    "stream VARCHAR NOT NULL, producer_id VARCHAR NOT NULL, sequence BIGINT NOT NULL, "
    "updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (stream, producer_id))",
)


@dataclass(frozen=True)
class Delivery:
    """What a request asks of delivery (checked by :class:`~arrowport.options.IngestRequest`).
    ``fingerprint`` is called only when a key is checked or recorded (for a streamed body it is
    known once the body has been read)."""

    stream: str
    idempotency_key: str | None = None
    producer_id: str | None = None
    sequence: int | None = None
    fingerprint: Callable[[], str] | None = None

    def lock_names(self) -> list[str]:
        names = []
        if self.idempotency_key is not None:
            names.append(f"k:{self.stream}:{self.idempotency_key}")
        if self.producer_id is not None:
            names.append(f"p:{self.stream}:{self.producer_id}")
        return names


@dataclass(frozen=True)
class Duplicate:
    """The request was already committed: answer with this, write nothing. ``owner`` is the index
    of an earlier job in the same transaction whose result this one repeats."""

    result: dict[str, Any]
    owner: int | None = None


class DeliveryLedger:
    """Checks and records deliveries inside one transaction (the DuckDB file's ledger: a primary
    key on each table, and the server's locks, keep a key or an offset from being taken twice).

    Several requests can share a transaction (group commit), so what they will record is tracked
    here too: the second of two writes with the same key in one group is a duplicate of the first.
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection) -> None:
        self._cur = cur
        self._keys: dict[tuple[str, str], tuple[Delivery, int]] = {}
        self._offsets: dict[tuple[str, str], int] = {}
        self._records: dict[int, dict[str, Any]] = {}

    def check(self, delivery: Delivery) -> Duplicate | None:
        """Return a :class:`Duplicate`, raise a 409, or return None: go ahead and write."""
        if delivery.producer_id is not None and delivery.sequence is not None:
            producer = (delivery.stream, delivery.producer_id)
            last = self._offsets.get(producer)
            if last is None:
                last = self.last_sequence(*producer)
            if last is not None and delivery.sequence <= last:
                return Duplicate({"last_sequence": last})
            if last is not None and delivery.sequence != last + 1:
                raise SequenceGap(
                    f"producer {delivery.producer_id!r} sent sequence {delivery.sequence}, "
                    f"expected {last + 1}",
                    expected_sequence=last + 1,
                    last_sequence=last,
                )
        if delivery.idempotency_key is not None:
            key = (delivery.stream, delivery.idempotency_key)
            pending = self._keys.get(key)
            if pending is not None:
                owner, index = pending
                assert owner.fingerprint is not None
                duplicate = self._compare(delivery, owner.fingerprint(), {})
                self._refuse_new_offset(delivery)
                return Duplicate(duplicate.result, owner=index)
            row = self._cur.execute(
                f"SELECT fingerprint, result FROM {_IDEMPOTENCY} WHERE stream = ? AND key = ? "
                "ORDER BY created_at LIMIT 1",
                list(key),
            ).fetchone()
            if row is not None:
                duplicate = self._compare(delivery, row[0], json.loads(row[1]))
                self._refuse_new_offset(delivery)
                return duplicate
        return None

    @staticmethod
    def _refuse_new_offset(delivery: Delivery) -> None:
        """A used key on a request whose sequence is new: the request that used the key did not
        carry this sequence (its commit would have made the sequence a duplicate), so answering
        it as a duplicate would leave the sequence unrecorded and the producer's next one a gap.
        """
        if delivery.producer_id is not None and delivery.sequence is not None:
            raise IdempotencyConflict(
                f"idempotency key {delivery.idempotency_key!r} was already used on this stream, "
                f"but not with producer {delivery.producer_id!r} sequence {delivery.sequence}, "
                "which is not committed yet: the key and the sequence disagree",
                idempotency_key=delivery.idempotency_key,
            )

    @staticmethod
    def _compare(delivery: Delivery, stored: str, result: dict[str, Any]) -> Duplicate:
        assert delivery.fingerprint is not None
        if delivery.fingerprint() != stored:
            raise IdempotencyConflict(
                f"idempotency key {delivery.idempotency_key!r} was already used for a different "
                "payload on this stream",
                idempotency_key=delivery.idempotency_key,
            )
        return Duplicate(result)

    def claim(self, delivery: Delivery, index: int) -> None:
        """Job ``index`` of this transaction will write: later jobs must see its key and offset."""
        if delivery.idempotency_key is not None:
            self._keys[(delivery.stream, delivery.idempotency_key)] = (delivery, index)
        if delivery.producer_id is not None and delivery.sequence is not None:
            self._offsets[(delivery.stream, delivery.producer_id)] = delivery.sequence

    def recorded(self, index: int) -> dict[str, Any]:
        return self._records[index]

    def finish(self) -> None:
        """Every job of the transaction is recorded (the commit follows)."""

    def last_sequence(self, stream: str, producer_id: str) -> int | None:
        row = self._cur.execute(
            f"SELECT max(sequence) FROM {_PRODUCERS} WHERE stream = ? AND producer_id = ?",
            [stream, producer_id],
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def expire(self, older_than_hours: float) -> int:
        """Forget idempotency keys older than ``older_than_hours``; returns how many went."""
        row = self._cur.execute(
            f"DELETE FROM {_IDEMPOTENCY} WHERE created_at < now() - to_microseconds(?::BIGINT)",
            [int(older_than_hours * 3600 * 1_000_000)],
        ).fetchone()
        return int(row[0]) if row else 0

    def record(self, delivery: Delivery, result: dict[str, Any], index: int) -> None:
        """Store the delivery state of job ``index`` after its rows were inserted."""
        self._records[index] = result
        if delivery.idempotency_key is not None:
            assert delivery.fingerprint is not None
            self._cur.execute(
                f"INSERT INTO {_IDEMPOTENCY} (stream, key, fingerprint, result) VALUES (?, ?, ?, ?)",
                [
                    delivery.stream,
                    delivery.idempotency_key,
                    delivery.fingerprint(),
                    json.dumps(result),
                ],
            )
        if delivery.producer_id is not None and delivery.sequence is not None:
            self._cur.execute(
                f"INSERT INTO {_PRODUCERS} (stream, producer_id, sequence) VALUES (?, ?, ?) "
                "ON CONFLICT (stream, producer_id) DO UPDATE "
                "SET sequence = excluded.sequence, updated_at = now()",
                [delivery.stream, delivery.producer_id, delivery.sequence],
            )
