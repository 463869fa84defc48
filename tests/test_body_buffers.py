"""Pooled message-body blocks: reused only once nothing points into them, and bounded."""

from __future__ import annotations

import gc

import pyarrow as pa

from arrowport.ingest.body_buffers import BODY_BUFFERS, POOLED_BYTES, BodyBuffers
from arrowport.ingest.ipc_messages import PayloadLimits
from arrowport.ingest.ipc_stream import ViewReader, stream_messages
from arrowport.ingest.payload import IpcPayload


def _address(view: memoryview) -> int:
    return int(pa.py_buffer(view).address)


def test_a_block_is_lent_again_only_after_arrow_lets_go_of_it() -> None:
    pool = BodyBuffers(keep_bytes=16 * POOLED_BYTES)
    first = pool.copy(memoryview(b"a" * POOLED_BYTES))
    column = pa.Array.from_buffers(pa.uint8(), POOLED_BYTES, [None, pa.py_buffer(first)])
    address = _address(first)
    del first
    gc.collect()
    assert pool.free_bytes == 0  # the array still points into the block
    second = pool.copy(memoryview(b"b" * POOLED_BYTES))
    assert _address(second) != address
    assert column[0].as_py() == ord("a")
    assert column[-1].as_py() == ord("a")
    del column
    gc.collect()
    assert pool.free_bytes == POOLED_BYTES
    third = pool.copy(memoryview(b"c" * POOLED_BYTES))
    assert _address(third) == address  # the freed block, not a fresh one
    assert bytes(third[:2]) == b"cc"
    assert bytes(second[:2]) == b"bb"


def test_free_blocks_are_bounded() -> None:
    pool = BodyBuffers(keep_bytes=3 * POOLED_BYTES)
    lent = [pool.copy(memoryview(bytes(POOLED_BYTES))) for _ in range(8)]
    del lent
    gc.collect()
    assert pool.free_bytes == 3 * POOLED_BYTES


def test_a_short_fill_is_cut_to_what_was_written() -> None:
    pool = BodyBuffers()

    def fill(target: memoryview) -> int:
        target[:5] = b"hello"
        return 5

    assert bytes(pool.filled(POOLED_BYTES, fill)) == b"hello"


def test_large_bodies_read_from_a_file_decode_to_the_rows_sent() -> None:
    """Bodies read into pooled blocks (a file object, as an HTTP body is read),
    several streams one after another: each decodes to exactly its own rows."""
    limits = PayloadLimits(2**40, 2**40, 1000)
    for seed in range(3):
        table = pa.table({"x": pa.array(range(seed, seed + 200_000), pa.int64())})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=50_000)  # 400 KB bodies: pooled
        raw = pa.BufferReader(sink.getvalue())
        got = IpcPayload.from_file(raw, limits, 1_000_000).stream.read_all()
        assert got.equals(table)
        del got
        gc.collect()
        assert BODY_BUFFERS.free_bytes >= 400_000  # the bodies were pooled, and came back
        in_memory = list(stream_messages(ViewReader(sink.getvalue()), limits))
        assert len(in_memory) == 5  # schema + four batches


def test_a_block_given_back_while_the_pool_is_busy_is_not_lost() -> None:
    """A lease may die in a garbage collection that interrupts the thread holding the pool's
    lock: giving back must neither wait for that lock nor drop the block."""
    pool = BodyBuffers(keep_bytes=4 * POOLED_BYTES)
    lent = pool.copy(memoryview(bytes(POOLED_BYTES)))
    with pool._lock:  # as if this thread were inside the pool when the collector ran
        del lent
        gc.collect()
    assert pool.free_bytes == POOLED_BYTES


def test_pooled_views_are_plain_bytes() -> None:
    view = BodyBuffers().copy(memoryview(b"\xff" * POOLED_BYTES))
    assert view.format == "B"
    assert view[0] == 255
    assert view == b"\xff" * POOLED_BYTES
