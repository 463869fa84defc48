"""How ``arrowport ingest`` settles a CSV file's types before sending it (no server needed)."""

from __future__ import annotations

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


def test_columns_that_widen_late_are_settled_in_a_few_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty columns, empty for 150,000 rows, then an integer, a fraction and text in each: a
    block that does not fit widens every column it contradicts, and the reading goes on from
    there, rather than starting over once a column (the file read ~120 times)."""
    path = tmp_path / "sparse.csv"
    sparse_csv(path, 40, 150_000, ["7", "2.5", "x"])
    reads: list[int] = []
    batches = _csv._batches

    def counted(where: Path, skipped: int, schema: pa.Schema | None) -> Iterator[pa.RecordBatch]:
        reads.append(skipped)
        return batches(where, skipped, schema)

    monkeypatch.setattr(_csv, "_batches", counted)
    schema, rows = _csv.csv_schema(path)
    assert rows == 150_003
    assert schema.field("id").type == pa.int64()
    assert {schema.field(f"c{j}").type for j in range(40)} == {pa.string()}
    assert len(reads) <= 3, reads
    assert reads[0] == 0
    assert all(skipped > 100_000 for skipped in reads[1:])  # on from the block that did not fit


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "2.5"], pa.float64()),
        (["1", "x"], pa.string()),
        (["2024-05-01 10:00:00", "2024-05-01 10:00:00+02:00"], pa.string()),  # zone, none
        (["2024-05-01 10:00:00+02:00", "2024-05-01 10:00:00"], pa.string()),  # none, zone
        (["true", "yes"], pa.string()),
    ],
)
def test_a_late_value_widens_its_column_to_a_type_that_holds_both(
    tmp_path: Path, values: list[str], expected: pa.DataType
) -> None:
    path = tmp_path / "late.csv"
    with path.open("w") as out:
        out.write("n,v\n")
        for i in range(100_000):
            out.write(f"{i},{values[0]}\n")
        out.write(f"-1,{values[1]}\n")
    schema, rows = _csv.csv_schema(path)
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
    schema, rows = _csv.csv_schema(path)
    assert (rows, schema.field("v").type) == (100_001, pa.string())


def test_a_file_that_cannot_be_read_still_fails(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n" + "1,2\n" * 100_000 + "1,2,3\n")
    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 3"):
        _csv.csv_schema(path)
