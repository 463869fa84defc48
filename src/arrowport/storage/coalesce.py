"""Row-group-sized batches for DuckDB, whatever batch size the producer chose.

DuckDB 1.5 inserts an Arrow scan in parallel only when every batch fills a row group
(:data:`ROW_GROUP_ROWS`): smaller batches become collections that its insert merges into row
groups one after another (measured: 10,000 or 65,536-row batches insert half as fast on 2 cores,
and a sixth as fast on 16, as 122,880-row ones). So the consecutive batches of one write are joined (a
memcpy, cheap next to the insert) and sliced into batches of exactly ``rows`` rows; only the last
one is shorter. Rows keep their order, and types their meaning: dictionaries that differ between
batches are unified, as Arrow concatenates them.

Memory stays bounded: one batch is assembled at a time, and a joined batch also ends at
:data:`MAX_BATCH_BYTES`, so that wide rows never make one batch hold gigabytes.

    >>> batches = [pa.record_batch({"x": list(range(10_000))})] * 25
    >>> [b.num_rows for b in coalesce(batches, 122_880)]
    [122880, 122880, 4240]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from arrowport.storage.schema import child_types, has_encoding, has_union

# DuckDB's row group size, and the default of ``defaults.coalesce_rows``.
ROW_GROUP_ROWS = 122_880

# A joined batch ends here even short of its rows. Also keeps a string column's 32-bit offsets
# far from overflowing when batches are joined.
MAX_BATCH_BYTES = 32 * 1024**2


def coalesce(
    batches: Iterable[pa.RecordBatch], rows: int, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[pa.RecordBatch]:
    """``batches`` as batches of exactly ``rows`` rows (the last one shorter; one past
    ``max_bytes`` ends early). A batch that is already a whole one is passed on uncopied."""
    if rows < 1:
        raise ValueError("rows must be positive")
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    pending_bytes = 0.0
    for batch in batches:
        count = batch.num_rows
        row_bytes = batch_bytes(batch) / count if count else 0.0
        offset = 0
        while offset < count:
            take = min(rows - pending_rows, count - offset)
            piece = batch if take == count else batch.slice(offset, take)
            offset += take
            if not pending and take == rows:
                yield piece
                continue
            size = row_bytes * take
            if pending and pending_bytes + size > max_bytes:
                yield from _joined(pending)
                pending, pending_rows, pending_bytes = [], 0, 0.0
            pending.append(piece)
            pending_rows += take
            pending_bytes += size
            if pending_rows >= rows or pending_bytes >= max_bytes:
                yield from _joined(pending)
                pending, pending_rows, pending_bytes = [], 0, 0.0
    if pending:
        yield from _joined(pending)


def batch_bytes(batch: pa.RecordBatch) -> int:
    """Bytes of ``batch``: of a slice, its own part of the buffers (``nbytes``). pyarrow 26
    crashes computing that for a list of unions with null entries, so a batch holding a union
    (which DuckDB cannot read anyway) counts its buffers whole."""
    if any(has_union(field.type) for field in batch.schema):
        return int(batch.get_total_buffer_size())
    return int(batch.nbytes)


def _joined(pieces: list[pa.RecordBatch]) -> list[pa.RecordBatch]:
    """``pieces`` as one batch; as they are where Arrow cannot join them (dictionaries whose union
    needs a wider index type than theirs): DuckDB then reads them as sent, as before."""
    if len(pieces) == 1:
        return pieces
    try:
        return [pa.concat_batches(pieces)]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return list(pieces)


def _rebased(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``batches``, each column that nests an encoding copied to start at offset 0 where it is a
    slice: DuckDB 1.5.5 misreads a run-end encoding (or a dictionary with null indices) inside a
    sliced list or struct, silently (177,120 of 300,000 rows of a struct of run ends landed
    wrong, mostly NULL)."""
    # Columns with a dictionary or run-end encoding below their top level.
    nesting = [
        i for i, field in enumerate(schema) if any(map(has_encoding, child_types(field.type)))
    ]
    for batch in batches:
        if nesting and any(batch.column(i).offset for i in nesting):
            columns = list(batch.columns)
            for i in nesting:
                if columns[i].offset:
                    columns[i] = pa.concat_arrays([columns[i]])
            batch = pa.RecordBatch.from_arrays(columns, schema=batch.schema)
        yield batch


def coalesced(data: pa.RecordBatchReader | pa.Table, rows: int) -> pa.RecordBatchReader | pa.Table:
    """``data`` with its batches coalesced: a reader lazily, one batch at a time; a table (small,
    in memory already) at once, as a table."""
    if isinstance(data, pa.Table):
        batches = [batch for batch in data.to_batches() if batch.num_rows]
        # Each column's size is at most its batch's buffers (shared ones counted once).
        bound = sum(b.get_total_buffer_size() * b.num_columns for b in batches)
        if data.num_rows <= rows and bound <= MAX_BATCH_BYTES:
            # One batch holds it all: joined at once, as coalesce would, without measuring each
            # batch (a group commit's many small ones).
            batches = _joined(batches) if batches else []
        else:
            batches = list(coalesce(batches, rows))
        return pa.Table.from_batches(_rebased(batches, data.schema), schema=data.schema)
    return pa.RecordBatchReader.from_batches(
        data.schema, _rebased(coalesce(data, rows), data.schema)
    )
