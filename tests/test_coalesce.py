"""The batches DuckDB is handed: a write's batches joined and sliced to row-group size."""

from __future__ import annotations

import pyarrow as pa
import pytest

from arrowport.storage.coalesce import ROW_GROUP_ROWS, coalesce, coalesced
from tests.conftest import mixed_batches


def numbered(count: int, rows: int) -> list[pa.RecordBatch]:
    return [
        pa.record_batch({"k": pa.array(range(n * rows, (n + 1) * rows), pa.int64())})
        for n in range(count)
    ]


def sizes(batches: list[pa.RecordBatch]) -> list[int]:
    return [b.num_rows for b in batches]


def values(batches: list[pa.RecordBatch]) -> list[dict[str, object]]:
    return [row for batch in batches for row in batch.to_pylist()]


@pytest.mark.parametrize(
    ("count", "rows", "expected"),
    [
        (25, 10_000, [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 4_240]),
        (5_000, 7, [35_000]),
        (4, 65_536, [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 16_384]),
        (1, 300_000, [ROW_GROUP_ROWS, ROW_GROUP_ROWS, 54_240]),
        (3, ROW_GROUP_ROWS, [ROW_GROUP_ROWS] * 3),
    ],
)
def test_batches_are_joined_and_sliced_to_row_groups_in_order(
    count: int, rows: int, expected: list[int]
) -> None:
    batches = numbered(count, rows)
    out = list(coalesce(batches, ROW_GROUP_ROWS))
    assert sizes(out) == expected
    assert pa.Table.from_batches(out).column("k").to_pylist() == list(range(count * rows))


def test_whole_row_groups_are_passed_on_uncopied() -> None:
    (big,) = numbered(1, 2 * ROW_GROUP_ROWS)
    first, second = coalesce([big], ROW_GROUP_ROWS)
    data = big.column(0).buffers()[1]
    assert first.column(0).buffers()[1].address == data.address
    assert second.column(0).buffers()[1].address == data.address


def test_a_smaller_target_joins_and_slices_to_it() -> None:
    out = list(coalesce(numbered(7, 300), 1_000))
    assert sizes(out) == [1_000, 1_000, 100]
    assert values(out) == values(numbered(7, 300))


def test_wide_rows_end_a_batch_at_the_byte_limit() -> None:
    wide = [pa.record_batch({"s": pa.array(["x" * 100_000] * 10)}) for _ in range(20)]  # ~1 MB each
    out = list(coalesce(wide, ROW_GROUP_ROWS, max_bytes=4 * 1024**2))
    assert sum(sizes(out)) == 200
    assert all(batch.get_total_buffer_size() <= 4 * 1024**2 for batch in out)
    assert len(out) > 1


def test_empty_batches_are_dropped_and_no_batches_stay_none() -> None:
    empty = pa.record_batch({"k": pa.array([], pa.int64())})
    assert list(coalesce([], ROW_GROUP_ROWS)) == []
    assert list(coalesce([empty, empty], ROW_GROUP_ROWS)) == []
    out = list(coalesce([empty, *numbered(2, 5), empty], ROW_GROUP_ROWS))
    assert sizes(out) == [10]


def test_changing_dictionaries_and_nested_types_keep_their_values_and_types() -> None:
    batches = mixed_batches(50, 7)
    (joined,) = coalesce(batches, ROW_GROUP_ROWS)
    assert joined.schema == batches[0].schema
    assert joined.to_pylist() == values(batches)
    dictionary = joined.column(1)
    assert isinstance(dictionary, pa.DictionaryArray)
    assert len(dictionary.dictionary) == 150  # every batch's words, unified


def test_dictionaries_that_cannot_be_unified_pass_as_they_came() -> None:
    batches = [
        pa.record_batch(
            {
                "d": pa.DictionaryArray.from_arrays(
                    pa.array(range(100), pa.int8()), pa.array([f"v{n}_{i}" for i in range(100)])
                )
            }
        )
        for n in range(3)
    ]
    out = list(coalesce(batches, ROW_GROUP_ROWS))
    assert sizes(out) == [100, 100, 100]
    assert values(out) == values(batches)


def test_extension_types_survive_joining() -> None:
    storage = pa.array([bytes([n]) * 16 for n in range(4)], pa.binary(16))
    uuids = pa.ExtensionArray.from_storage(pa.uuid(), storage)
    batches = [pa.record_batch({"u": uuids})] * 3
    (joined,) = coalesce(batches, ROW_GROUP_ROWS)
    assert joined.schema.field("u").type == pa.uuid()
    assert joined.column(0).storage.to_pylist() == storage.to_pylist() * 3


def test_a_reader_is_coalesced_lazily_and_a_table_at_once() -> None:
    batches = numbered(30, 10_000)
    reader = coalesced(pa.RecordBatchReader.from_batches(batches[0].schema, batches), 100_000)
    assert isinstance(reader, pa.RecordBatchReader)
    assert sizes(list(reader)) == [100_000, 100_000, 100_000]
    table = coalesced(pa.Table.from_batches(batches), 100_000)
    assert isinstance(table, pa.Table)
    assert [len(c) for c in table.column(0).chunks] == [100_000, 100_000, 100_000]
    assert table.column("k").to_pylist() == list(range(300_000))


def _unifiable_never() -> list[pa.RecordBatch]:
    words = pa.array([f"v{i}" for i in range(100)])
    return [
        pa.record_batch(
            {"d": pa.DictionaryArray.from_arrays(pa.array(range(100), pa.int8()), words)}
        )
        for _ in range(3)
    ]


@pytest.mark.parametrize(
    "batches",
    [
        [],
        [pa.record_batch({"k": pa.array([], pa.int64())})] * 2,
        numbered(16, 1_000),
        [pa.record_batch({"k": pa.array([], pa.int64())}), *numbered(3, 5)],
        numbered(1, ROW_GROUP_ROWS),
        mixed_batches(50, 7),
        _unifiable_never(),
        numbered(20, 10_000),  # past a row group: sliced
        [pa.record_batch({"s": pa.array(["x" * 100_000] * 40)})] * 10,  # past the byte limit
    ],
)
def test_a_table_is_coalesced_as_its_batches_are(batches: list[pa.RecordBatch]) -> None:
    """A table small enough for one batch is joined without measuring each batch: the same
    batches as :func:`coalesce` makes of it."""
    schema = batches[0].schema if batches else pa.schema([("k", pa.int64())])
    table = coalesced(pa.Table.from_batches(batches, schema=schema), ROW_GROUP_ROWS)
    assert isinstance(table, pa.Table)
    expected = list(coalesce(batches, ROW_GROUP_ROWS))
    assert [b.num_rows for b in table.to_batches()] == sizes(expected)
    assert table.schema == schema
    assert table.to_pylist() == values(expected)


def test_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="rows must be positive"):
        list(coalesce(numbered(1, 1), 0))
