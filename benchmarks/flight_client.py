"""Arrow Flight ``do_put`` from the benchmark: one put is one transaction on the server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight


def connect(port: int) -> flight.FlightClient:
    return flight.FlightClient(f"grpc://127.0.0.1:{port}")


def put(client: flight.FlightClient, stream: str, batches: Iterable[pa.RecordBatch]) -> Any:
    """``do_put`` the batches to descriptor path ``[stream]``; returns the server's reply (decoded
    JSON when it sent any). Returns only after the server finished the put (committed)."""
    batches = iter(batches)
    first = next(batches)
    writer, reader = client.do_put(flight.FlightDescriptor.for_path(stream), first.schema)
    writer.write_batch(first)
    for batch in batches:
        writer.write_batch(batch)
    writer.done_writing()
    metadata = reader.read()
    writer.close()
    if metadata is None:
        return None
    try:
        return json.loads(metadata.to_pybytes())
    except ValueError:
        return metadata.to_pybytes()


def put_retrying(
    client: flight.FlightClient, stream: str, batches: list[pa.RecordBatch]
) -> tuple[Any, int]:
    """``put``, retried after a short pause while the server answers ``overloaded``; returns the
    reply and the number of retries."""
    retries = 0
    pause = 0.005
    while True:
        try:
            return put(client, stream, batches), retries
        except flight.FlightUnavailableError as exc:
            if "overloaded" not in str(exc) or retries >= 1000:
                raise
        retries += 1
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def timed_put(client: flight.FlightClient, stream: str, table: pa.Table) -> float:
    """Seconds for one put of ``table`` (its record batches as they are chunked)."""
    started = time.perf_counter()
    reply = put(client, stream, table.to_batches())
    seconds = time.perf_counter() - started
    rows = reply.get("rows_processed") if isinstance(reply, dict) else None
    if rows is not None and rows != table.num_rows:
        raise RuntimeError(f"server reported {rows} rows, sent {table.num_rows}")
    return seconds


def repeated(batch: pa.RecordBatch, count: int) -> Iterable[pa.RecordBatch]:
    """The same batch ``count`` times: a stream of any size without holding it in memory."""
    for _ in range(count):
        yield batch
