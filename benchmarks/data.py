"""The benchmark's data: one 5-column table shape, and the payloads each protocol sends.

Shape (what a metrics feed looks like): ``id`` int64, ``timestamp`` int64 (epoch microseconds),
``value`` float64, ``category`` string with 4 distinct values, ``metric`` float64 — about 41 bytes
per row as an Arrow IPC stream.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pybase64
import zstandard

ARROW_STREAM = "application/vnd.apache.arrow.stream"
CATEGORIES = ("alpha", "beta", "gamma", "delta")
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("timestamp", pa.int64()),
        ("value", pa.float64()),
        ("category", pa.string()),
        ("metric", pa.float64()),
    ]
)
_EPOCH_US = 1_700_000_000_000_000


# Producers send record batches of a bounded size; this is also DuckDB's row group size and the
# server's default chunk_size. A table made here is chunked this way, and so are its payloads.
BATCH_ROWS = 122_880
# What producers often send instead: batches well below a row group. DuckDB parallelises an
# insert only across row-group-sized batches, so these show what a server that hands them on
# as they arrive leaves unused.
PRODUCER_BATCH_ROWS = 10_000
PRODUCER_BATCHES = (PRODUCER_BATCH_ROWS, 65_536)


def make_table(rows: int, start_id: int = 0, seed: int = 0) -> pa.Table:
    """``rows`` rows with ids ``start_id ..`` in ``BATCH_ROWS`` chunks; deterministic."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start_id, start_id + rows, dtype=np.int64)
    categories = pa.array(CATEGORIES).take(pa.array(rng.integers(0, len(CATEGORIES), rows)))
    table = pa.table(
        [
            pa.array(ids),
            pa.array(_EPOCH_US + ids * 1_000),
            pa.array(rng.normal(100.0, 15.0, rows)),
            categories,
            pa.array(rng.random(rows)),
        ],
        schema=SCHEMA,
    )
    return pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), schema=SCHEMA)


def rebatched(table: pa.Table, batch_rows: int) -> pa.Table:
    """The same rows as ``batch_rows``-row record batches (the last one shorter)."""
    batches = table.combine_chunks().to_batches(max_chunksize=batch_rows)
    return pa.Table.from_batches(batches, schema=table.schema)


def ipc_stream(table: pa.Table, batch_rows: int | None = None) -> bytes:
    """A complete Arrow IPC stream (schema, batches, end-of-stream marker)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return sink.getvalue().to_pybytes()  # type: ignore[no-any-return]


def zstd(data: bytes, level: int = 3) -> bytes:
    """A zstd frame of ``data``, as sent with ``Content-Encoding: zstd``."""
    return zstandard.ZstdCompressor(level=level).compress(data)


def _seed_frame(schema: pa.Schema, target_table: str) -> tuple[bytes, bytes]:
    """The seed spec's JSON body before and after the base64 of ``batch.data``."""
    document = {
        "config": {"target_table": target_table, "chunk_size": BATCH_ROWS},
        "batch": {
            "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode(),
            "data": "",
        },
    }
    text = json.dumps(document).encode()
    cut = text.index(b'"data": "') + len(b'"data": "')
    return text[:cut], text[cut:]


def seed_json(table: pa.Table, target_table: str) -> bytes:
    """The seed spec's JSON body: base64 schema and base64 IPC stream."""
    head, tail = _seed_frame(table.schema, target_table)
    return head + base64.b64encode(ipc_stream(table)) + tail


def base64_pieces(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The base64 of the concatenated ``chunks``, one piece per chunk (whole 3-byte groups; the
    few bytes left over go with the next chunk)."""
    carry = b""
    for chunk in chunks:
        joined = carry + chunk
        cut = len(joined) - len(joined) % 3
        carry = joined[cut:]
        yield pybase64.b64encode(joined[:cut])
    yield pybase64.b64encode(carry)


class StreamPieces:
    """One batch's IPC bytes, replayed to build a stream of any size without holding it.

    ``head`` is the schema message, ``batch`` one record batch message, ``end`` the end-of-stream
    marker; ``head + batch * n + end`` is a valid IPC stream of ``n`` batches.
    """

    def __init__(self, batch: pa.RecordBatch) -> None:
        empty = ipc_stream(pa.Table.from_batches([], schema=batch.schema))
        full = ipc_stream(pa.Table.from_batches([batch]))
        self.head = empty[:-8]
        self.end = full[-8:]
        self.batch = full[len(self.head) : -8]
        self.rows_per_batch = batch.num_rows

    def batches_for(self, total_bytes: int) -> int:
        return max(1, -(-(total_bytes - len(self.head) - len(self.end)) // len(self.batch)))

    def size(self, batches: int) -> int:
        return len(self.head) + len(self.batch) * batches + len(self.end)

    def chunks(self, batches: int) -> Iterator[bytes]:
        """The stream's bytes, one message at a time (for a streaming request body)."""
        yield self.head
        for _ in range(batches):
            yield self.batch
        yield self.end


class SeedJsonStream:
    """A seed-format JSON body around ``batches`` replays of one batch, base64-encoded as it is
    sent, so a client can send a body of any size without holding it (or its IPC stream)."""

    def __init__(self, pieces: StreamPieces, batches: int, target_table: str, schema: pa.Schema):
        self.pieces = pieces
        self.batches = batches
        self.head, self.tail = _seed_frame(schema, target_table)

    @classmethod
    def of_size(cls, batch: pa.RecordBatch, body_bytes: int, target_table: str) -> SeedJsonStream:
        """The replayed stream whose JSON body is about ``body_bytes`` long."""
        pieces = StreamPieces(batch)
        stream = cls(pieces, 1, target_table, batch.schema)
        base64_bytes = body_bytes - len(stream.head) - len(stream.tail)
        stream.batches = pieces.batches_for(base64_bytes * 3 // 4)
        return stream

    @property
    def rows(self) -> int:
        return self.batches * int(self.pieces.rows_per_batch)

    def size(self) -> int:
        return len(self.head) + 4 * -(-self.pieces.size(self.batches) // 3) + len(self.tail)

    def chunks(self) -> Iterator[bytes]:
        yield self.head
        yield from base64_pieces(self.pieces.chunks(self.batches))
        yield self.tail
