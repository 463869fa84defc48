"""Flight SQL bulk ingestion from the benchmark: ``adbc_ingest`` through the real ADBC driver
(adbc-driver-flightsql), one ingest one transaction on the server."""

from __future__ import annotations

import time
from typing import Literal

import adbc_driver_flightsql.dbapi as dbapi
import pyarrow as pa
from adbc_driver_manager.dbapi import Connection


def connect(port: int) -> Connection:
    """An ADBC DB-API connection in autocommit mode (ingestion never joins a transaction)."""
    return dbapi.connect(f"grpc://127.0.0.1:{port}", autocommit=True)


Mode = Literal["create", "append"]


def timed_ingest(conn: Connection, table: str, data: pa.Table, mode: Mode) -> float:
    """Seconds for one ``adbc_ingest`` of ``data`` (its record batches as they are chunked),
    until the server's reply, sent after its commit."""
    with conn.cursor() as cur:
        started = time.perf_counter()
        rows = cur.adbc_ingest(table, data, mode=mode)
        seconds = time.perf_counter() - started
    if rows != data.num_rows:
        raise RuntimeError(f"server reported {rows} rows, sent {data.num_rows}")
    return seconds
