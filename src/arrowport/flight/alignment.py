"""Realigning record batches received over Flight.

gRPC hands Arrow the message body wherever it landed in its receive buffer, so a batch's buffers
can start at any address; from pyarrow clients nearly every batch arrives one byte off. DuckDB
scans a ``RecordBatchReader`` through Arrow's Acero engine, which warns on stderr ("An input buffer
was poorly aligned") once per misaligned buffer per batch — hundreds of thousands of lines for a
put of many small batches — and reading misaligned values is undefined behaviour besides. So the
columns with a misaligned buffer are copied (~10 ms of copying per million rows of five columns);
checking a batch costs a few microseconds, and aligned batches pass through untouched.

The copies live until DuckDB's statement ends. Taken from fresh memory, every page of them would
fault on first touch (~30 ms of kernel time per million rows); taken from a jemalloc pool of their
own, the next statement reuses the pages this one freed. jemalloc hands idle pages back to the
system after about a second, so memory stays bounded by the statement size.
"""

from __future__ import annotations

import pyarrow as pa

# Acero wants each buffer aligned to its value width; 8 covers every fixed-width type.
_ALIGNMENT = 8


def _copy_pool() -> pa.MemoryPool:
    """jemalloc where pyarrow was built with it, else the default pool."""
    try:
        return pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool()


# Also where spilled batches are read back to (:mod:`arrowport.flight.spool`): same reuse.
ALIGNED_POOL = _copy_pool()


def _misaligned(array: pa.Array) -> bool:
    for buffer in array.buffers():  # this array's buffers and its children's
        if buffer is not None and buffer.address % _ALIGNMENT:
            return True
    if isinstance(array, pa.DictionaryArray):
        return _misaligned(array.dictionary)
    return False


def aligned(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` itself when every buffer is aligned, else a copy of its misaligned columns."""
    columns: list[pa.Array] | None = None
    for index, column in enumerate(batch.columns):
        if _misaligned(column):
            if columns is None:
                columns = list(batch.columns)
            # A fresh allocation is 64-byte aligned; concatenating one array copies it.
            columns[index] = pa.concat_arrays([column], memory_pool=ALIGNED_POOL)
    if columns is None:
        return batch
    return pa.RecordBatch.from_arrays(columns, schema=batch.schema)
