"""Delivery bookkeeping on a DuckLake, where tables have no keys and inserts never conflict.

The records are the file target's — idempotency keys with their fingerprint and result, producer
offsets — kept as plain rows in the lake, in the same commit as the data: a producer's last
sequence is the largest recorded. What stops two nodes from recording the same key (or the same
sequence) is not the rows but the commit's claims (:mod:`arrowport.storage.lake_catalog`): each
delivery this transaction records is listed in the commit's ``extra_info``, and the catalog
refuses a commit whose claim another commit made first.
"""

from __future__ import annotations

import json
from typing import Any

import duckdb

from arrowport.storage.delivery import (
    IDEMPOTENCY_TABLE,
    PRODUCERS_TABLE,
    Delivery,
    DeliveryLedger,
)
from arrowport.storage.lake_catalog import CLAIMS_KEY

SCHEMA_SQL = (
    f"CREATE TABLE IF NOT EXISTS {IDEMPOTENCY_TABLE} (stream VARCHAR NOT NULL, "
    "key VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, result VARCHAR NOT NULL, "
    "created_at TIMESTAMPTZ NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {PRODUCERS_TABLE} (stream VARCHAR NOT NULL, "
    "producer_id VARCHAR NOT NULL, sequence BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL)",
)

# A claim names one delivery: "k" + stream + key, or "p" + stream + producer + sequence. The unit
# separator cannot appear in a stream name; keys are free text, so it comes last.
_SEP = "\x1f"


def commit_claim(token: str) -> str:
    """The claim every commit of one write carries, however often it is tried: a second commit
    of the same write is refused, and whether the first landed can be looked up."""
    return f"w{_SEP}{token}"


def claims_of(delivery: Delivery) -> list[str]:
    claims = []
    if delivery.idempotency_key is not None:
        claims.append(f"k{_SEP}{delivery.stream}{_SEP}{delivery.idempotency_key}")
    if delivery.producer_id is not None and delivery.sequence is not None:
        claims.append(
            f"p{_SEP}{delivery.stream}{_SEP}{delivery.sequence}{_SEP}{delivery.producer_id}"
        )
    return claims


class LakeLedger(DeliveryLedger):
    def __init__(
        self, cur: duckdb.DuckDBPyConnection, catalog: str, write_token: str | None = None
    ) -> None:
        super().__init__(cur)
        self._catalog = catalog
        self._claims: list[str] = [commit_claim(write_token)] if write_token else []

    def record(self, delivery: Delivery, result: dict[str, Any], index: int) -> None:
        self._records[index] = result
        if delivery.idempotency_key is not None:
            assert delivery.fingerprint is not None
            self._cur.execute(
                f"INSERT INTO {IDEMPOTENCY_TABLE} VALUES (?, ?, ?, ?, now())",
                [
                    delivery.stream,
                    delivery.idempotency_key,
                    delivery.fingerprint(),
                    json.dumps(result),
                ],
            )
        if delivery.producer_id is not None and delivery.sequence is not None:
            self._cur.execute(
                f"INSERT INTO {PRODUCERS_TABLE} VALUES (?, ?, ?, now())",
                [delivery.stream, delivery.producer_id, delivery.sequence],
            )
        self._claims += claims_of(delivery)

    def compact(self) -> int:
        """Keep only each producer's last sequence (the only one the ledger reads)."""
        row = self._cur.execute(
            f"DELETE FROM {PRODUCERS_TABLE} AS old WHERE sequence < (SELECT max(sequence) "
            f"FROM {PRODUCERS_TABLE} AS last WHERE last.stream = old.stream "
            "AND last.producer_id = old.producer_id)"
        ).fetchone()
        return int(row[0]) if row else 0

    def finish(self) -> None:
        """List this transaction's claims (its write's, its deliveries') in its commit, for the
        catalog to claim."""
        if not self._claims:
            return
        extra = json.dumps({CLAIMS_KEY: self._claims})
        self._cur.execute(
            f"CALL {self._catalog}.set_commit_message('arrowport', 'deliveries', extra_info => ?)",
            [extra],
        )
