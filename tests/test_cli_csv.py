"""How ``arrowport ingest`` settles a CSV file's types before sending it (no server needed)."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from arrowport.cli import _csv


def sparse_csv(path: Path, columns: int, rows: int, late: list[str]) -> None:
    """``columns`` columns empty for ``rows`` rows, then one row of each of ``late`` in all."""
    with path.open("w") as out:
        out.write("id," + ",".join(f"c{j}" for j in range(columns)) + "\n")
        empty = "," * columns
        for i in range(rows):
            out.write(f"{i}{empty}\n")
        for value in late:
            out.write("0," + ",".join([value] * columns) + "\n")


def settled(path: Path) -> tuple[pa.Schema, int]:
    """:func:`csv_schema`, checked against the reading that sends the file: it reads whole
    with those types, the same number of rows."""
    schema, rows = _csv.csv_schema(path)
    assert sum(batch.num_rows for batch in _csv.csv_batches(path, schema)) == rows
    return schema, rows


def test_columns_that_widen_late_are_settled_in_a_few_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty columns, empty for 150,000 rows, then an integer, a fraction and text in each: the
    block that does not fit widens every column it contradicts at once, rather than the file
    being read again once a column (~120 times)."""
    path = tmp_path / "sparse.csv"
    sparse_csv(path, 40, 150_000, ["7", "2.5", "x"])
    reads: list[pa.Schema | None] = []
    batches = _csv.csv_batches

    def counted(
        where: Path, schema: pa.Schema | None = None, encoding: str = _csv.UTF8
    ) -> Iterator[pa.RecordBatch]:
        reads.append(schema)
        return batches(where, schema, encoding)

    monkeypatch.setattr(_csv, "csv_batches", counted)
    schema, rows = _csv.csv_schema(path)
    assert rows == 150_003
    assert schema.field("id").type == pa.int64()
    assert {schema.field(f"c{j}").type for j in range(40)} == {pa.string()}
    assert len(reads) <= 3, len(reads)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "2.5"], pa.float64()),
        (["1", "x"], pa.string()),
        (["2024-05-01 10:00:00", "2024-05-01 10:00:00+02:00"], pa.string()),  # zone, none
        (["2024-05-01 10:00:00+02:00", "2024-05-01 10:00:00"], pa.string()),  # none, zone
        (["true", "yes"], pa.string()),
        # a fraction of a second makes the column nanoseconds, whose range the first value
        # is outside: text
        (["9999-12-31 23:59:59", "2020-01-01 00:00:00.5"], pa.string()),
        (["1500-01-01 00:00:00", "2020-01-01 00:00:00.5"], pa.string()),
    ],
)
def test_a_late_value_widens_its_column_to_a_type_that_holds_both(
    tmp_path: Path, values: list[str], expected: pa.DataType
) -> None:
    path = tmp_path / "late.csv"
    with path.open("w") as out:
        out.write("n,v\n")
        out.write(f"0,{values[0]}\n")
        for i in range(1, 100_000):
            out.write(f"{i},{values[0] if i < 70_000 else ''}\n")
        out.write(f"-1,{values[1]}\n")
    schema, rows = settled(path)
    assert rows == 100_001
    assert schema.field("v").type == expected


def test_empty_lines_are_not_counted_as_rows(tmp_path: Path) -> None:
    """Resuming after a block that did not fit skips rows by pyarrow's count, which includes
    empty lines; the rows reported are the file's."""
    path = tmp_path / "gaps.csv"
    with path.open("w") as out:
        out.write("n,v\n")
        for i in range(100_000):
            out.write(f"{i},{i}\n\n")
        out.write("-1,x\n")
    schema, rows = settled(path)
    assert (rows, schema.field("v").type) == (100_001, pa.string())


def test_a_file_that_cannot_be_read_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n" + "1,2\n" * 100_000 + "1,2,3\n")
    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 3"):
        _csv.csv_schema(path)


def test_a_value_over_several_lines_is_one_row(tmp_path: Path) -> None:
    """A quoted value with line breaks in it, where a block ends, and a misfit after it: the
    file reads whole (counting lines, not rows, to go on after the misfit would split it)."""
    path = tmp_path / "lines.csv"
    with path.open("w") as out:
        out.write("n,v\n")
        for i in range(120_000):
            out.write(f'{i},"line one\nline two"\n' if i % 1000 == 999 else f"{i},{i}\n")
        out.write("-1,1.5\n")
    schema, rows = settled(path)
    assert rows == 120_001
    assert schema.field("v").type == pa.string()


@pytest.mark.parametrize("name", ["UP.CSV.GZ", "mixed.Csv.Gz", "low.csv.gz"])
def test_a_compressed_file_is_read_whatever_the_case_of_its_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"a,b\n1,x\n2,y\n"))
    schema, rows = settled(path)
    assert (schema.names, rows) == (["a", "b"], 2)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b"a,a", "the header names a column more than once: ['a']"),
        (b"a,,", "the header names a column more than once: ['']"),
        (b"caf\xe9,b", "the header is not UTF-8 text"),
    ],
)
def test_a_header_that_cannot_name_the_columns_is_refused(
    tmp_path: Path, header: bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    row = b",".join([b"1"] * (header.count(b",") + 1))
    path.write_bytes(header + b"\n" + row + b"\n")
    with pytest.raises(ValueError, match=re.escape(message)):
        _csv.csv_schema(path)
