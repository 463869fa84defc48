"""``arrowport ingest`` loads that replace or create the table (``--mode``, or the stream's own
mode): one load of all their files, resumed as one; locked streams; files of no rows. And what
``arrowport query`` draws (values Python cannot hold, column names that look like markup), and
the connection options' checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.server import ArrowportProcess
from tests.test_cli_client import (
    ARROWPORT,
    TOKENS,
    arrowport,
    environment,
    expected,
    last_line,
    one_line,
    run_on_terminal,
    sample,
    stats,
    table_exists,
)

CONFIG: dict[str, Any] = {
    "auth": {"tokens": TOKENS},
    "streams": {
        "snap": {"table": "snap", "mode": "replace"},
        "locked_snap": {"table": "locked_snap", "mode": "replace", "locked": True},
        "locked_log": {"table": "locked_log", "mode": "append", "locked": True},
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("cli_loads"), config=CONFIG) as process:
        yield process


def ingest(server: ArrowportProcess, *args: str) -> str:
    result = arrowport(server.url, "ingest", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


# -- loads that replace or create ----------------------------------------------------------------


def test_a_changed_file_of_a_replace_load_sends_the_whole_load_again(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    pq.write_table(sample(1_000), tmp_path / "1.parquet")
    pq.write_table(sample(500, 1_000), tmp_path / "2.parquet")
    load = [str(tmp_path), "--stream", "loads", "--table", "replaced", "--mode", "replace"]
    ingest(server, *load)
    assert stats(server.url, "replaced") == expected(1_500)
    assert "nothing to send" in ingest(server, *load)  # the same load: it has landed
    # The first file changes: it replaces the table again, and the second must follow it.
    os.utime(tmp_path / "1.parquet", ns=(1, 1))
    out = ingest(server, *load)
    assert "landed 1,500 rows from 2 files" in out
    assert stats(server.url, "replaced") == expected(1_500)
    # A file appended to the same table earlier does not make a later replace load of it a
    # rerun: replacing with it alone leaves its rows alone.
    pq.write_table(sample(300, 5_000), tmp_path / "3.parquet")
    alone = str(tmp_path / "3.parquet")
    ingest(server, alone, "--stream", "loads", "--table", "replaced")
    assert stats(server.url, "replaced")[0] == 1_800
    ingest(server, alone, "--stream", "loads", "--table", "replaced", "--mode", "replace")
    assert stats(server.url, "replaced") == expected(300, 5_000)


def test_a_replace_load_whose_first_file_sends_nothing_replaces_with_the_next(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    pq.write_table(sample(100, 1_000), tmp_path / "old.parquet")
    ingest(server, str(tmp_path / "old.parquet"), "--stream", "loads", "--table", "header_first")
    load = tmp_path / "load"
    load.mkdir()
    (load / "1.csv").write_text("id,label,value\n")  # a header alone: no types, sends nothing
    pq.write_table(sample(50), load / "2.parquet")
    into = ["--stream", "loads", "--table", "header_first"]
    created = arrowport(server.url, "ingest", str(load), *into, "--mode", "create")
    assert created.returncode == 1
    assert last_line(created).startswith("arrowport: table_exists (409): ")
    assert stats(server.url, "header_first") == expected(100, 1_000)
    out = ingest(server, str(load), *into, "--mode", "replace")
    assert "landed 50 rows from 2 files" in out
    assert stats(server.url, "header_first") == expected(50)
    assert "nothing to send" in ingest(server, str(load), *into, "--mode", "replace")


def test_files_for_a_stream_that_replaces_land_whole(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    pq.write_table(sample(2_000), tmp_path / "a.parquet")
    pq.write_table(sample(3_000, 2_000), tmp_path / "b.parquet")
    out = ingest(server, str(tmp_path), "--stream", "snap", "--batch-rows", "700")
    assert "landed 5,000 rows from 2 files in table snap" in out
    assert stats(server.url, "snap") == expected(5_000)


def test_files_for_a_locked_stream_that_replaces_are_refused_before_sending(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    pq.write_table(sample(10), tmp_path / "only.parquet")
    ingest(
        server, str(tmp_path / "only.parquet"), "--stream", "locked_snap"
    )  # one file, one request
    assert stats(server.url, "locked_snap") == expected(10)
    pq.write_table(sample(20, 100), tmp_path / "more.parquet")
    two = arrowport(server.url, "ingest", str(tmp_path), "--stream", "locked_snap")
    assert two.returncode == 1
    assert "locked" in one_line(two.stderr)
    assert "nothing was sent" in two.stderr
    many = arrowport(
        server.url, "ingest", str(tmp_path / "more.parquet"), "--stream", "locked_snap",
        "--batch-rows", "5",
    )  # fmt: skip
    assert many.returncode == 1
    assert "stream_locked (403)" in one_line(many.stderr)
    assert stats(server.url, "locked_snap") == expected(10)  # untouched


def test_files_replacing_through_a_stream_locked_to_append_are_refused_for_what_it_is(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    pq.write_table(sample(10), tmp_path / "a.parquet")
    pq.write_table(sample(20, 100), tmp_path / "b.parquet")
    result = arrowport(
        server.url, "ingest", str(tmp_path), "--stream", "locked_log", "--mode", "replace"
    )
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith("arrowport: stream_locked (403): "), line
    assert "mode='replace' (configured: 'append')" in line
    assert not table_exists(server.url, "locked_log")


def test_an_arrow_stream_of_no_rows_creates_or_empties_the_table(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    path = tmp_path / "empty.arrows"
    schema = pa.schema([("id", pa.int64()), ("label", pa.string())])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, schema):
        pass
    ingest(server, str(path), "--stream", "loads", "--table", "created_empty")
    assert stats(server.url, "created_empty") == (0, 0, 0)
    pq.write_table(sample(50), tmp_path / "rows.parquet")
    ingest(server, str(tmp_path / "rows.parquet"), "--stream", "loads", "--table", "emptied")
    assert stats(server.url, "emptied") == expected(50)
    ingest(server, str(path), "--stream", "loads", "--table", "emptied", "--mode", "replace")
    assert stats(server.url, "emptied") == (0, 0, 0)
    # A CSV header alone says no column's type: it sends nothing, whatever the mode.
    pq.write_table(sample(50).select(["id", "label"]), tmp_path / "again.parquet")
    ingest(server, str(tmp_path / "again.parquet"), "--stream", "loads", "--table", "emptied")
    header = tmp_path / "header.csv"
    header.write_text("id,label\n")
    ingest(server, str(header), "--stream", "loads", "--table", "emptied", "--mode", "replace")
    assert stats(server.url, "emptied") == expected(50)
    ingest(server, str(header), "--stream", "loads", "--table", "never_typed")
    assert not table_exists(server.url, "never_typed")


# -- what query draws ----------------------------------------------------------------------------


def test_the_query_table_draws_values_python_cannot_hold(server: ArrowportProcess) -> None:
    sql = (
        "SELECT 'infinity'::TIMESTAMP AS t, '-infinity'::DATE AS d, "
        '\'294000-01-01\'::TIMESTAMP AS far, 1 AS "x[/]", 2 AS "[bold]y"'
    )
    plain = arrowport(server.url, "query", sql, "--format", "table")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0] == "t\td\tfar\tx[/]\t[bold]y"
    assert plain.stdout.splitlines()[1].startswith("infinity\t-infinity\t294000-01-01")
    drawn = run_on_terminal([*ARROWPORT, "query", sql], environment(server.url))
    assert "Traceback" not in drawn
    assert "infinity" in drawn
    assert "x[/]" in drawn
    assert "[bold]y" in drawn


# -- connection options --------------------------------------------------------------------------


def test_an_empty_token_and_a_bad_timeout_are_one_line(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = arrowport(server.url, "tables", "--token-file", str(empty), token=None)
    assert result.returncode == 1
    assert one_line(result.stderr) == f"arrowport: --token-file {empty} is empty"
    result = arrowport(server.url, "tables", "--token", "", token=None)
    assert one_line(result.stderr) == "arrowport: --token is empty"
    for bad in ("-1", "inf", "nan"):
        result = arrowport(server.url, "tables", "--timeout", bad)
        assert result.returncode == 1
        assert "--timeout must be" in one_line(result.stderr)
    assert arrowport(server.url, "tables", "--timeout", "0").returncode == 0
    quick = arrowport(
        server.url, "query", "SELECT sum(a.range * b.range) FROM range(60000) a, range(60000) b",
        "--timeout", "0.2",
    )  # fmt: skip
    assert quick.returncode == 1
    assert "not sent again" in one_line(quick.stderr)
