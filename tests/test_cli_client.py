"""The people-facing commands against real servers: ``arrowport ingest`` for every file format,
directories and globs, resuming after an interruption, its progress on a terminal and in a log;
``query``, ``tables`` and ``streams``; failures as one line."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from arrowport.auth import hash_secret, new_token
from tests.server import ArrowportProcess

SECRET = new_token("cli")
TOKENS = [{"name": "cli", "secret_hash": hash_secret(SECRET), "scopes": ["admin"]}]
CONFIG: dict[str, Any] = {
    "auth": {"tokens": TOKENS},
    "streams": {"events": {"table": "event_rows", "mode": "append"}},
}
ARROWPORT = [sys.executable, "-m", "arrowport"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("cli"), config=CONFIG) as process:
        yield process


def environment(url: str, token: str | None = SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
    env |= {"ARROWPORT_URL": url, "COLUMNS": "120"}
    if token is not None:
        env["ARROWPORT_TOKEN"] = token
    return env


def arrowport(
    url: str, *args: str, token: str | None = SECRET, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ARROWPORT, *args],
        env=environment(url, token),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def stats(url: str, table: str, token: str | None = SECRET) -> tuple[int, int, int]:
    """(rows, distinct ids, sum of ids) of ``table``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sql = f'SELECT count(*) AS n, count(DISTINCT id) AS d, coalesce(sum(id), 0)::BIGINT AS s FROM "{table}"'
    response = httpx.post(url + "/query", json={"sql": sql}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    row = pa.ipc.open_stream(response.content).read_all().to_pylist()[0]
    return row["n"], row["d"], row["s"]


def expected(n: int, start: int = 0) -> tuple[int, int, int]:
    return n, n, sum(range(start, start + n))


def sample(n: int, start: int = 0) -> pa.Table:
    ids = range(start, start + n)
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "label": [f'row {i}, "quoted"' for i in ids],
            "value": pa.array([i / 4 for i in ids], pa.float64()),
        }
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- file formats --------------------------------------------------------------------------------


def write_ndjson(table: pa.Table, path: Path) -> None:
    with path.open("w") as out:
        for row in table.to_pylist():
            out.write(json.dumps(row) + "\n")


def write_ipc_file(table: pa.Table, path: Path) -> None:
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table, max_chunksize=700)


def write_ipc_stream(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=700)


def write_csv_gz(table: pa.Table, path: Path) -> None:
    buffer = pa.BufferOutputStream()
    pacsv.write_csv(table, buffer)
    path.write_bytes(gzip.compress(buffer.getvalue().to_pybytes()))


WRITERS: dict[str, tuple[str, Callable[[pa.Table, Path], None]]] = {
    "parquet": ("data.parquet", lambda t, p: pq.write_table(t, p, row_group_size=1_000)),
    "ipc_file": ("data.arrow", write_ipc_file),
    "ipc_stream": ("data.arrows", write_ipc_stream),
    "ipc_stream_named_arrow": ("data.arrow", write_ipc_stream),
    "csv": ("data.csv", lambda t, p: pacsv.write_csv(t, p)),
    "csv_gz": ("data.csv.gz", write_csv_gz),
    "ndjson": ("data.ndjson", write_ndjson),
}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_each_format_lands_exactly(server: ArrowportProcess, tmp_path: Path, kind: str) -> None:
    name, write = WRITERS[kind]
    write(sample(5_000), tmp_path / name)
    table = f"fmt_{kind}"
    result = arrowport(
        server.url, "ingest", str(tmp_path / name), "--stream", "formats", "--table", table,
        "--batch-rows", "1500",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"landed 5,000 rows from 1 file in table {table} in ")
    assert stats(server.url, table) == expected(5_000)
    answer = httpx.post(
        server.url + "/query",
        json={"sql": f"SELECT label, value FROM {table} WHERE id = 7"},
        headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
    ).json()
    assert answer["rows"] == [{"label": 'row 7, "quoted"', "value": 1.75}]


def test_a_directory_and_a_glob_land_every_file(server: ArrowportProcess, tmp_path: Path) -> None:
    parts = tmp_path / "parts"
    (parts / "2024").mkdir(parents=True)
    pq.write_table(sample(3_000, 0), parts / "a.parquet")
    pq.write_table(sample(2_000, 3_000), parts / "b.parquet")
    pq.write_table(sample(1_000, 5_000), parts / "2024" / "c.parquet")
    (parts / "_SUCCESS").write_text("")
    (parts / ".hidden.parquet").write_text("not parquet")
    result = arrowport(
        server.url, "ingest", str(parts), "--stream", "dirs", "--table", "from_dir",
        "--batch-rows", "1000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "landed 6,000 rows from 3 files" in result.stdout
    assert stats(server.url, "from_dir") == expected(6_000)

    texts = tmp_path / "texts"
    (texts / "deeper").mkdir(parents=True)
    pacsv.write_csv(sample(1_500, 0), texts / "one.csv")
    pacsv.write_csv(sample(2_500, 1_500), texts / "deeper" / "two.csv")
    (texts / "notes.txt").write_text("ignored: the pattern does not match it")
    result = arrowport(
        server.url, "ingest", str(texts / "**" / "*.csv"), "--stream", "globs", "--table",
        "from_glob",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "landed 4,000 rows from 2 files" in result.stdout
    assert stats(server.url, "from_glob") == expected(4_000)


def test_a_quoted_glob_under_the_home_directory_lands(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    (tmp_path / "exports").mkdir()
    pq.write_table(sample(400), tmp_path / "exports" / "a.parquet")
    pq.write_table(sample(600, 400), tmp_path / "exports" / "b.parquet")
    result = subprocess.run(
        [*ARROWPORT, "ingest", "~/exports/*.parquet", "--stream", "s", "--table", "from_home"],
        env=environment(server.url) | {"HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "landed 1,000 rows from 2 files" in result.stdout
    assert stats(server.url, "from_home") == expected(1_000)


def test_format_option_overrides_the_name(server: ArrowportProcess, tmp_path: Path) -> None:
    pacsv.write_csv(sample(300), tmp_path / "export.txt")
    result = arrowport(
        server.url, "ingest", str(tmp_path / "export.txt"), "--stream", "s", "--table", "by_flag",
        "--format", "csv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stats(server.url, "by_flag") == expected(300)
    refused = arrowport(server.url, "ingest", str(tmp_path / "export.txt"), "--stream", "s")
    assert refused.returncode == 1
    assert "cannot tell its format" in one_line(refused.stderr)


# -- columns and whole files --------------------------------------------------------------------


def query_rows(url: str, sql: str) -> list[dict[str, Any]]:
    response = httpx.post(
        url + "/query", json={"sql": sql}, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = pa.ipc.open_stream(response.content).read_all().to_pylist()
    return rows


def table_exists(url: str, table: str) -> bool:
    found = query_rows(
        url, f"SELECT count(*) AS n FROM duckdb_tables() WHERE table_name = '{table}'"
    )
    return bool(found[0]["n"])


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_csv_files_with_other_columns_land_with_their_own(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    (tmp_path / "ok.csv").write_text("a,b\n1,2\n")
    (tmp_path / "diff.csv").write_text("x,y,z\n1,2,3\n")
    files = [str(tmp_path / "ok.csv"), str(tmp_path / "diff.csv")]
    # strict (the default): the second file's columns are refused by the server, not nulled
    strict = arrowport(server.url, "ingest", *files, "--stream", "s", "--table", "cols_strict")
    assert strict.returncode == 1, strict.stdout
    line = last_line(strict)
    assert line.startswith("arrowport: schema_conflict (409): "), line
    assert "x, y, z" in line, line
    assert "diff.csv, file 2 of 2" in line, line
    assert query_rows(server.url, "SELECT * FROM cols_strict") == [{"a": 1, "b": 2}]
    # evolve: every column of every file lands
    evolve = arrowport(
        server.url, "ingest", *files, "--stream", "s", "--table", "cols_evolve",
        "--schema-policy", "evolve",
    )  # fmt: skip
    assert evolve.returncode == 0, evolve.stderr
    assert query_rows(server.url, "SELECT * FROM cols_evolve ORDER BY a NULLS LAST") == [
        {"a": 1, "b": 2, "x": None, "y": None, "z": None},
        {"a": None, "b": None, "x": 1, "y": 2, "z": 3},
    ]


def test_csv_files_share_one_type_per_column(server: ArrowportProcess, tmp_path: Path) -> None:
    (tmp_path / "1.csv").write_text("code,v\n7,1\n")
    (tmp_path / "2.csv").write_text("code,v\nA7,2.5\n")
    result = arrowport(server.url, "ingest", str(tmp_path), "--stream", "s", "--table", "typed")
    assert result.returncode == 0, result.stderr
    assert query_rows(server.url, "SELECT * FROM typed ORDER BY v") == [
        {"code": "7", "v": 1.0},
        {"code": "A7", "v": 2.5},
    ]


def late_csv(path: Path, rows: int, late: dict[int, str]) -> None:
    """A CSV file of ``rows`` rows (an integer column ``n``, and ``late``: empty, then
    ``late[i]`` on row ``i`` and again on the last row), compressed when ``path`` says so."""
    lines = ["n,late\n"]
    for i in range(rows):
        lines.append(f"{i},{late.get(i, '')}\n")
    lines.append(f"{rows},{late[max(late)]}\n")
    data = "".join(lines).encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


LATE_VALUES = {  # empty, then one value, then one its type cannot hold
    "float": ({150_000: "7", 160_000: "2.5"}, pa.float64()),
    "text": ({150_000: "7", 160_000: "abc"}, pa.string()),
    "bool_text": ({150_000: "true", 160_000: "maybe"}, pa.string()),
    "timestamp_text": ({150_000: "2024-05-01 10:00:00", 160_000: "soon"}, pa.string()),
}


@pytest.mark.parametrize("kind", list(LATE_VALUES))
@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_a_csv_value_the_first_rows_type_cannot_hold_widens_its_column(
    server: ArrowportProcess, tmp_path: Path, kind: str, suffix: str
) -> None:
    """Types come from the whole file, not its first block: a value far into the file that
    the first rows' type cannot hold widens the column (before anything is sent), and every row
    lands, none twice."""
    late, expected = LATE_VALUES[kind]
    path = tmp_path / f"late{suffix}"
    late_csv(path, 200_000, late)
    table = f"late_{kind}_{suffix.count('.')}"
    result = arrowport(
        server.url, "ingest", str(path), "--stream", "s", "--table", table, "--batch-rows", "20000"
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "landed 200,001 rows" in result.stdout
    assert "200,001 rows)" in result.stderr  # known before sending: the progress's total
    landed = pa.ipc.open_stream(
        httpx.post(
            server.url + "/query",
            json={"sql": f"SELECT * FROM {table} ORDER BY n"},
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=30,
        ).content
    ).read_all()
    assert landed.schema.field("n").type == pa.int64()
    assert landed.schema.field("late").type == expected
    assert landed.column("n").to_pylist() == list(range(200_001))
    values = landed.column("late").cast(pa.string()).to_pylist()
    present = {i: v for i, v in enumerate(values) if v not in (None, "")}  # text: "" for empty
    assert sorted(present) == [*sorted(late), 200_000]
    assert present[160_000] == late[160_000]


def test_a_csv_file_that_breaks_off_late_is_refused_before_sending(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    """A CSV file with a row far into it that cannot be read (more fields than its header)
    fails before any of its requests is sent: nothing of it lands, where the requests before
    that row would have."""
    path = tmp_path / "ragged.csv"
    rows = [f"{i},{i}\n" for i in range(300_000)]
    rows[250_000] = "1,2,3\n"
    path.write_text("a,b\n" + "".join(rows))
    result = arrowport(
        server.url, "ingest", str(path), "--stream", "s", "--table", "ragged",
        "--batch-rows", "10000",
    )  # fmt: skip
    assert result.returncode == 1
    line = last_line(result)
    assert line.startswith(f"arrowport: {path}: cannot read it as csv: "), line
    assert "Expected 2 columns, got 3" in line, line
    tables = httpx.get(
        server.url + "/tables", headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    ).json()
    assert "ragged" not in [t["name"] for t in tables]


def test_a_csv_file_that_is_not_utf8_is_refused_or_read_in_its_encoding(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    """A Latin-1 CSV file is refused, naming the column and ``--encoding``, whether its first
    block or a later one is not UTF-8 (a first block was taken for bytes and landed as BLOB);
    with ``--encoding latin-1`` it lands as text."""
    early = tmp_path / "early.csv"
    early.write_bytes("name,n\ncafé,1\nbar,2\n".encode("latin-1"))
    late = tmp_path / "late.csv"
    rows = [f"row{i},{i}\n" for i in range(200_000)] + ["café,1\n"]
    late.write_bytes(("name,n\n" + "".join(rows)).encode("latin-1"))
    for path in (early, late):
        result = arrowport(
            server.url, "ingest", str(path), "--stream", "s", "--table", "latin_" + path.stem
        )  # fmt: skip
        assert result.returncode == 1
        line = last_line(result)
        assert line == (
            f"arrowport: {path}: cannot read it as csv: column 'name' holds bytes that are not "
            "UTF-8 text: give the file's encoding with --encoding (e.g. latin-1, cp1252), or "
            "convert the file to UTF-8"
        ), line
    result = arrowport(
        server.url, "ingest", str(early), "--stream", "s", "--table", "latin_read",
        "--encoding", "latin-1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert query_rows(server.url, "SELECT name, typeof(name) AS t FROM latin_read") == [
        {"name": "café", "t": "VARCHAR"},
        {"name": "bar", "t": "VARCHAR"},
    ]
    tables = httpx.get(
        server.url + "/tables", headers={"Authorization": f"Bearer {SECRET}"}, timeout=30
    ).json()
    assert not {"latin_early", "latin_late"} & {t["name"] for t in tables}
    result = arrowport(server.url, "ingest", str(early), "--stream", "s", "--encoding", "klingon")
    assert result.returncode == 1
    assert last_line(result) == "arrowport: --encoding: unknown text encoding 'klingon'"
    for codec in ("rot13", "zlib_codec", "base64", "punycode"):
        result = arrowport(server.url, "ingest", str(early), "--stream", "s", "--encoding", codec)
        assert result.returncode == 1
        assert last_line(result) == (
            f"arrowport: --encoding: {codec!r} is not a text encoding pyarrow can read"
        )


def test_reading_large_csv_files_through_is_announced(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    """Reading 64 MB of CSV through for its types takes a while: stderr says so first (here
    the file then fails at once, with a row too many fields long, before anything is sent)."""
    path = tmp_path / "big.csv"
    with path.open("w") as out:
        out.write("a,b\n1,2,3\n")
        out.write("1,2\n" * (17 * 1024**2))  # 68 MiB
    result = arrowport(server.url, "ingest", str(path), "--stream", "s", "--table", "big")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        "arrowport: reading 1 CSV/NDJSON file (71 MB) through for their columns' types "
        "before sending"
    ), lines
    assert lines[-1].startswith(f"arrowport: {path}: cannot read it as csv: "), lines


def test_an_ndjson_key_first_seen_on_the_last_line_lands(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    path = tmp_path / "late.ndjson"
    with path.open("w") as out:
        for i in range(200_000):
            out.write(f'{{"a":{i}}}\n')
        out.write('{"a":-1,"c":"important"}\n')
    result = arrowport(server.url, "ingest", str(path), "--stream", "s", "--table", "late_key")
    assert result.returncode == 0, result.stderr
    assert "landed 200,001 rows" in result.stdout
    assert query_rows(server.url, "SELECT count(*) AS n, sum(a) AS s FROM late_key") == [
        {"n": 200_001, "s": sum(range(200_000)) - 1}
    ]
    assert query_rows(server.url, "SELECT a FROM late_key WHERE c = 'important'") == [{"a": -1}]


def test_ndjson_files_with_other_keys_land_with_their_own(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    (tmp_path / "1.ndjson").write_text('{"a":1,"s":{"x":1}}\n')
    (tmp_path / "2.ndjson").write_text('{"a":2.5,"s":{"y":"q"}}\n{"b":true}\n')
    files = [str(tmp_path / "1.ndjson"), str(tmp_path / "2.ndjson")]
    strict = arrowport(server.url, "ingest", *files, "--stream", "s", "--table", "keys_strict")
    assert strict.returncode == 1
    line = last_line(strict)
    assert line.startswith("arrowport: schema_conflict (409): "), line
    assert "2.ndjson" in line, line
    assert query_rows(server.url, "SELECT count(*) AS n FROM keys_strict") == [{"n": 1}]
    evolve = arrowport(
        server.url, "ingest", *files, "--stream", "s", "--table", "keys_evolve",
        "--schema-policy", "evolve",
    )  # fmt: skip
    assert evolve.returncode == 0, evolve.stderr
    assert query_rows(server.url, "SELECT a, s, b FROM keys_evolve ORDER BY a NULLS LAST") == [
        {"a": 1.0, "s": {"x": 1, "y": None}, "b": None},
        {"a": 2.5, "s": {"x": None, "y": "q"}, "b": None},
        {"a": None, "s": None, "b": True},
    ]


def test_an_ndjson_key_with_no_common_type_is_refused_before_sending(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    near = tmp_path / "near.ndjson"  # numbers, then text a few lines on
    near.write_text('{"a":1}\n\n{"a":2.5}\n{"a":"text"}\n')
    # 8 MiB of numbers (whole blocks of lines: the file is read in blocks of a power of two
    # bytes, up to a line's end), then text: the conflict is between blocks
    far = tmp_path / "far.ndjson"
    numbers = 8 * 1024 * 1024 // 128
    with far.open("w") as out:
        for i in range(numbers):
            line = f'{{"a":{i},"pad":""}}\n'
            out.write(line.replace('""', '"' + "p" * (128 - len(line)) + '"'))
        out.writelines('{"a":"text"}\n' for _ in range(1_000))
    assert far.stat().st_size == numbers * 128 + 13 * 1_000
    for path, where in ((near, "on line 4, a string"), (far, f"in lines {numbers + 1}-")):
        result = arrowport(
            server.url, "ingest", str(path), "--stream", "s", "--table", path.stem,
            "--batch-rows", "10",
        )  # fmt: skip
        assert result.returncode == 1
        message = one_line(result.stderr)
        assert f"{path.name}: key 'a' holds " in message, message
        assert where in message, message
        assert not table_exists(server.url, path.stem)


def test_a_json_array_is_refused_as_not_one_object_per_line(
    server: ArrowportProcess, tmp_path: Path
) -> None:
    for name, text in (
        ("array.json", '[{"a": 1}, {"a": 2}]\n'),
        ("pretty.json", '[\n  {"a": 1},\n  {"a": 2}\n]\n'),
        ("later.ndjson", '{"a": 1}\n[{"a": 2}]\n'),
    ):
        path = tmp_path / name
        path.write_text(text)
        result = arrowport(server.url, "ingest", str(path), "--stream", "s", "--table", "arrays")
        assert result.returncode == 1
        message = one_line(result.stderr)
        line = 2 if name == "later.ndjson" else 1
        assert f"{name}: line {line} starts a JSON array: ndjson holds one JSON object" in message
        assert not table_exists(server.url, "arrays")


def ipc_stream_prefix(batches: list[pa.RecordBatch]) -> bytes:
    """An IPC stream of ``batches`` as a writer leaves it before it is closed: no end marker."""
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, batches[0].schema)
    for batch in batches:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def test_a_truncated_arrow_file_lands_nothing(server: ArrowportProcess, tmp_path: Path) -> None:
    halves = sample(1_000).to_batches(max_chunksize=500)
    (tmp_path / "cut.arrows").write_bytes(ipc_stream_prefix(halves[:1]))
    whole = tmp_path / "whole.arrow"
    write_ipc_file(sample(1_000), whole)
    (tmp_path / "cut.arrow").write_bytes(whole.read_bytes()[:-40])
    (tmp_path / "cut_inside.arrows").write_bytes(ipc_stream_prefix(halves)[:-100])
    for name in ("cut.arrows", "cut.arrow", "cut_inside.arrows"):
        table = "cut_" + name.replace(".", "_")
        result = arrowport(
            server.url, "ingest", str(tmp_path / name), "--stream", "s", "--table", table,
            "--batch-rows", "100",
        )  # fmt: skip
        assert result.returncode == 1, (name, result.stdout)
        line = one_line(result.stderr)
        assert f"{name}: the Arrow IPC " in line, line
        assert "cut short" in line, line
        assert "nothing of it was sent" in line, line
        assert not table_exists(server.url, table), name
    # the end marker of streams written before Arrow 0.15 (a zero length alone) is an end too
    legacy = pa.ipc.IpcWriteOptions(use_legacy_format=True)
    with (
        pa.OSFile(str(tmp_path / "legacy.arrows"), "wb") as sink,
        pa.ipc.new_stream(sink, halves[0].schema, options=legacy) as writer,
    ):
        for batch in halves:
            writer.write_batch(batch)
    result = arrowport(
        server.url, "ingest", str(tmp_path / "legacy.arrows"), "--stream", "s", "--table",
        "legacy_end",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert stats(server.url, "legacy_end") == expected(1_000)


# -- resuming ------------------------------------------------------------------------------------


class SlowLink:
    """A TCP relay to ``port`` that holds every piece a client sends for ``delay`` seconds: a
    slow network in front of the server."""

    def __init__(self, port: int, delay: float) -> None:
        self.target = port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed under us by close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(
                target=self._pump, args=(client, upstream, self.delay), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(delay)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def test_an_interrupted_ingest_resumes_and_lands_every_row_once(tmp_path: Path) -> None:
    """Ctrl-C in the middle of a file sent over a slow link (each request takes 50 ms or
    more), then the same command again: the rest lands, nothing twice."""
    total = 60_000
    path = tmp_path / "big.parquet"
    pq.write_table(sample(total), path, row_group_size=7_000)
    with ArrowportProcess(tmp_path / "server") as server:
        link = SlowLink(server.port, delay=0.05)
        command = [
            *ARROWPORT, "ingest", str(path), "--stream", "resumable", "--table", "big",
            "--batch-rows", "1000",
        ]  # fmt: skip
        env = environment(link.url, token=None)
        first = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            deadline = time.monotonic() + 60
            landed = 0
            while landed < 5_000 and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.05)
                tables = httpx.get(server.url + "/tables", timeout=10).json()
                landed = sum(t["row_count"] for t in tables if t["name"] == "big")
            first.send_signal(signal.SIGINT)
            _, stderr = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
            link.close()
        assert first.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "run the same command again" in stderr.strip().splitlines()[-1]
        after_interrupt = stats(server.url, "big", token=None)[0]
        assert 5_000 <= after_interrupt < total
        assert after_interrupt % 1_000 == 0  # whole requests only

        env = environment(server.url, token=None)  # the rest over a fast link
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert stats(server.url, "big", token=None) == expected(total)
        assert f"landed {total - after_interrupt:,} rows" in second.stdout
        assert f"{after_interrupt:,} rows had landed before" in second.stdout

        third = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert third.returncode == 0, third.stderr
        assert "nothing to send" in third.stdout
        assert stats(server.url, "big", token=None) == expected(total)

        # A new --run-id is a new load of the same file.
        fourth = subprocess.run(
            [*command, "--run-id", "again"], env=env, capture_output=True, text=True, timeout=120
        )
        assert fourth.returncode == 0, fourth.stderr
        assert stats(server.url, "big", token=None)[0] == 2 * total


# -- progress ------------------------------------------------------------------------------------


def run_on_terminal(command: list[str], env: dict[str, str], timeout: float = 120) -> str:
    """Run ``command`` with a pseudo-terminal as its stdin, stdout and stderr; what it wrote."""
    leader, follower = os.openpty()
    try:
        process = subprocess.Popen(
            command,
            env=env | {"TERM": "xterm-256color"},
            stdin=follower,
            stdout=follower,
            stderr=follower,
            close_fds=True,
        )
    finally:
        os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the command is done
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(leader)
    assert process.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal(server: ArrowportProcess, tmp_path: Path) -> None:
    pq.write_table(sample(200_000), tmp_path / "p.parquet", row_group_size=20_000)
    command = [
        *ARROWPORT, "ingest", str(tmp_path / "p.parquet"), "--stream", "tty", "--table",
        "on_terminal", "--batch-rows", "10000",
    ]  # fmt: skip
    output = run_on_terminal(command, environment(server.url))
    assert "\x1b[" in output  # drawn, not logged
    assert "200,000/200,000 rows" in output
    assert "rows/s" in output
    assert "p.parquet" in output
    assert "arrowport: ingest" not in output  # no log lines on a terminal
    assert stats(server.url, "on_terminal") == expected(200_000)


def test_plain_lines_when_not_a_terminal(server: ArrowportProcess, tmp_path: Path) -> None:
    pq.write_table(sample(20_000), tmp_path / "a.parquet")
    pacsv.write_csv(sample(1_000, 20_000), tmp_path / "b.csv")
    result = arrowport(
        server.url, "ingest", str(tmp_path / "a.parquet"), str(tmp_path / "b.csv"),
        "--stream", "logged", "--table", "logged",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("arrowport: ") for line in lines), lines
    assert lines[0].startswith(f"arrowport: ingest {tmp_path / 'a.parquet'} (1 of 2, parquet")
    assert "20,000 rows" in lines[0]
    assert any(line.startswith("arrowport: a.parquet: done, 20,000 rows landed") for line in lines)
    assert any(line.startswith("arrowport: b.csv: done, 1,000 rows landed") for line in lines)
    assert "landed 21,000 rows from 2 files in table logged" in result.stdout
    assert "rows/s" in result.stdout
    assert stats(server.url, "logged") == expected(21_000)


# -- reading -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def events(server: ArrowportProcess, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("events") / "events.parquet"
    pq.write_table(sample(25), path)
    result = arrowport(server.url, "ingest", str(path), "--stream", "events")
    assert result.returncode == 0, result.stderr
    return "event_rows"


def test_query_as_csv_and_json(server: ArrowportProcess, events: str) -> None:
    sql = f"SELECT id, label FROM {events} WHERE id < 3 ORDER BY id"
    csv = arrowport(server.url, "query", sql, "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout.splitlines()[0] == '"id","label"'
    assert csv.stdout.splitlines()[1:] == [f'{i},"row {i}, ""quoted"""' for i in range(3)]
    assert arrowport(server.url, "query", sql).stdout == csv.stdout  # csv off a terminal
    answer = arrowport(server.url, "query", sql, "--format", "json")
    assert answer.returncode == 0, answer.stderr
    document = json.loads(answer.stdout)
    assert document["row_count"] == 3
    assert document["rows"][2] == {"id": 2, "label": 'row 2, "quoted"'}
    with_params = arrowport(
        server.url, "query", f"SELECT count(*) AS n FROM {events} WHERE id >= ? AND label <> ?",
        "-p", "20", "-p", "nothing", "--format", "json",
    )  # fmt: skip
    assert json.loads(with_params.stdout)["rows"] == [{"n": 5}]


def test_query_as_arrow_and_table(server: ArrowportProcess, events: str, tmp_path: Path) -> None:
    sql = f"SELECT id FROM {events} ORDER BY id"
    result = subprocess.run(
        [*ARROWPORT, "query", sql, "--format", "arrow"],
        env=environment(server.url),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert pa.ipc.open_stream(result.stdout).read_all().column("id").to_pylist() == list(range(25))
    (tmp_path / "token").write_text(SECRET + "\n")
    table = arrowport(
        server.url, "query", f"SELECT id, NULL AS nothing FROM {events} WHERE id = 4",
        "--format", "table", "--token-file", str(tmp_path / "token"), token=None,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines() == ["id\tnothing", "4\tNULL"]
    on_terminal = run_on_terminal(
        [*ARROWPORT, "query", f"SELECT id, label FROM {events} WHERE id = 4"],
        environment(server.url),
    )
    assert "┃" in on_terminal  # a drawn table, with its header
    assert "label" in on_terminal
    assert 'row 4, "quoted"' in on_terminal
    assert "1 row" in on_terminal


def test_tables_and_streams(server: ArrowportProcess, events: str) -> None:
    tables = arrowport(server.url, "tables")
    assert tables.returncode == 0, tables.stderr
    lines = tables.stdout.splitlines()
    assert lines[0] == "table\trows\tcolumns"
    assert f"{events}\t25\tid BIGINT, label VARCHAR, value DOUBLE" in lines
    listed = json.loads(arrowport(server.url, "tables", "--format", "json").stdout)
    mine = next(t for t in listed if t["name"] == events)
    assert mine["row_count"] == 25
    assert [c["name"] for c in mine["columns"]] == ["id", "label", "value"]
    streams = arrowport(server.url, "streams")
    assert streams.returncode == 0, streams.stderr
    assert streams.stdout.splitlines()[0] == "stream\ttable\tmode\tchunk_size\tcompression"
    assert streams.stdout.splitlines()[1].startswith("events\tevent_rows\tappend\t")
    assert json.loads(arrowport(server.url, "streams", "--format", "json").stdout)[0]["name"] == (
        "events"
    )


# -- failures ------------------------------------------------------------------------------------


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_a_server_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = closed_port_url()
    pq.write_table(sample(10), tmp_path / "x.parquet")
    for args in (
        ["tables", "--retries", "0"],
        ["query", "SELECT 1", "--retries", "0"],
        ["ingest", str(tmp_path / "x.parquet"), "--stream", "s", "--retries", "0"],
    ):
        result = arrowport(url, *args)
        assert result.returncode == 1, args
        line = one_line(result.stderr)
        assert line.startswith("arrowport: connection_error: cannot reach http://127.0.0.1:"), line
        assert "Connection refused" in line


def test_retries_are_reported_then_give_up(tmp_path: Path) -> None:
    result = arrowport(closed_port_url(), "streams", "--retries", "1")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "retry 1 of 1" in lines[0]
    assert lines[1].startswith("arrowport: connection_error")


def test_a_bad_token_is_one_line(server: ArrowportProcess, tmp_path: Path) -> None:
    result = arrowport(server.url, "tables", token="ap_cli_wrong")
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("arrowport: unauthenticated (401): ")
    pq.write_table(sample(10), tmp_path / "x.parquet")
    result = arrowport(
        server.url, "ingest", str(tmp_path / "x.parquet"), "--stream", "s", token=None
    )
    assert result.returncode == 1
    assert one_line(result.stderr).startswith("arrowport: unauthenticated (401): ")


def test_bad_input_is_one_line(server: ArrowportProcess, tmp_path: Path) -> None:
    missing = arrowport(server.url, "ingest", str(tmp_path / "nope.parquet"), "--stream", "s")
    assert missing.returncode == 1
    assert one_line(missing.stderr).endswith("nope.parquet: no such file or directory")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    broken = arrowport(server.url, "ingest", str(tmp_path / "broken.parquet"), "--stream", "s")
    assert broken.returncode == 1
    assert "broken.parquet" in one_line(broken.stderr)
    pacsv.write_csv(pa.table({"id": ["text"]}), tmp_path / "text.csv")
    arrowport(server.url, "ingest", str(tmp_path / "text.csv"), "--stream", "s", "--table", "ints")
    pq.write_table(sample(5), tmp_path / "ints.parquet")
    conflict = arrowport(
        server.url, "ingest", str(tmp_path / "ints.parquet"), "--stream", "s", "--table", "ints"
    )
    assert conflict.returncode == 1
    assert one_line(conflict.stderr).startswith("arrowport: schema_conflict (409): ")
    sql_error = arrowport(server.url, "query", "SELECT nope FROM nowhere")
    assert sql_error.returncode == 1
    assert one_line(sql_error.stderr).startswith("arrowport: ")


def test_bad_values_and_options_are_one_line(server: ArrowportProcess, tmp_path: Path) -> None:
    pacsv.write_csv(sample(3), tmp_path / "f.csv")
    csv = str(tmp_path / "f.csv")
    cases = [
        (["query", "SELECT ?", "-p", "NaN"], "arrowport: -p NaN: JSON has no NaN or infinity"),
        (["query", "SELECT ?", "-p", "[1, -Infinity]"], "JSON has no NaN or infinity"),
        (["query", "SELECT ?", "-p", "1e999"], "1e999 is too large for a double"),
        (["query", "SELECT ?", "-p", "\udcff"], "arrowport: -p/--param is not valid UTF-8"),
        (["query", "SELECT '\udcff'"], "arrowport: the SQL is not valid UTF-8 text"),
        (["tables", "--url", "http://[::1"], "url 'http://[::1' is not a valid URL"),
        (["tables", "--url", "http://"], "url 'http://' names no host"),
        (["tables", "--token", "t\u00f8ken"], "token must be printable ASCII"),
        (["tables", "--ca-file", str(tmp_path / "no.pem")], f"--ca-file {tmp_path / 'no.pem'}"),
        (
            ["ingest", csv, "--stream", "s", "--batch-rows", "99999999999999999999"],
            "arrowport: --batch-rows must be from 1 to 2,147,483,647",
        ),
        (["ingest", csv, "--stream", "s", "--batch-rows", "0"], "--batch-rows must be from 1"),
        (["ingest", "/dev/zero", "--stream", "s"], "/dev/zero: not a regular file"),
    ]
    for args, expected_text in cases:
        result = arrowport(server.url, *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        line = one_line(result.stderr)
        assert line.startswith("arrowport: "), (args, line)
        assert expected_text in line, (args, line)
    assert "No such file or directory" in one_line(
        arrowport(server.url, "tables", "--ca-file", str(tmp_path / "no.pem")).stderr
    )
    sql = "SELECT ?::DOUBLE AS v, ? AS w"
    text = arrowport(server.url, "query", sql, "-p", '"NaN"', "-p", "1.5")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[1:] == ["nan,1.5"], text.stdout


def test_serve_token_and_settings_are_still_there() -> None:
    result = subprocess.run([*ARROWPORT, "--help"], capture_output=True, text=True, timeout=60)
    for command in ("serve", "token", "settings", "ingest", "query", "tables", "streams"):
        assert command in result.stdout
