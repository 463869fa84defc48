"""The measurements. Each case returns a plain dict that goes into the results JSON as is."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
from tests.server import ArrowportProcess

from benchmarks import data, inprocess
from benchmarks.lean_http import Connection
from benchmarks.monitor import (
    Background,
    CpuUse,
    RssSampler,
    latency_summary,
    median,
    peak_rss_mb,
    tree_rss_mb,
)
from benchmarks.servers import Servers, flight_port, row_stats

BINARY_HEADERS = {"Content-Type": data.ARROW_STREAM}
ZSTD_HEADERS = {"Content-Type": data.ARROW_STREAM, "Content-Encoding": "zstd"}
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Plan:
    """How much to measure; ``--quick`` and the full run differ only here."""

    sizes: tuple[int, ...]
    repeats: dict[int, int]
    clients: int
    batches_per_client: int
    batch_rows: int
    sequential_inserts: int
    health_rows: int
    health_ingests: int
    big_bytes: int | None
    big_batch_rows: int
    big_json_bytes: int | None


FULL = Plan(
    sizes=(1_000, 100_000, 1_000_000),
    repeats={1_000: 50, 100_000: 9, 1_000_000: 9},
    clients=16,
    batches_per_client=200,
    batch_rows=1_000,
    sequential_inserts=500,
    health_rows=1_000_000,
    health_ingests=3,
    big_bytes=2 * 1024**3,
    big_batch_rows=100_000,
    # Under the server's default limits.max_json_body_bytes (512 MiB).
    big_json_bytes=500 * 10**6,
)
QUICK = Plan(
    sizes=(1_000, 100_000),
    repeats={1_000: 15, 100_000: 5},
    clients=16,
    batches_per_client=20,
    batch_rows=1_000,
    sequential_inserts=100,
    health_rows=100_000,
    health_ingests=5,
    big_bytes=None,
    big_batch_rows=100_000,
    big_json_bytes=None,
)


class NotAvailable(Exception):
    """The server cannot run this case (e.g. Flight is not served)."""


def _throughput(rows: int, times: list[float], limit_times: list[float] | None) -> dict[str, Any]:
    """Median figures; with ``limit_times`` (in-process inserts interleaved with the requests),
    ``ratio`` is this case's rows/s over the in-process rows/s measured alongside it."""
    seconds = median(times)
    result: dict[str, Any] = {
        "rows": rows,
        "repeats": len(times),
        "median_s": seconds,
        "rows_per_s": rows / seconds,
        "latency": latency_summary(times),
        "times_s": times,
    }
    if limit_times:
        result["limit_rows_per_s"] = rows / median(limit_times)
        result["limit_times_s"] = limit_times
        result["ratio"] = result["rows_per_s"] / result["limit_rows_per_s"]
    return result


def _check(reply_status: int, body: Any, rows: int) -> None:
    if reply_status != 200:
        raise RuntimeError(f"ingest answered {reply_status}: {body!r}"[:500])
    landed = body.get("rows_processed") if isinstance(body, dict) else None
    if landed != rows:
        raise RuntimeError(f"server reported {landed} rows, sent {rows}")


def _verify(server: ArrowportProcess, table: str, expected: int) -> dict[str, Any]:
    return _checked(row_stats(server, table), expected)


def _checked(stats: dict[str, Any], expected: int) -> dict[str, Any]:
    """``stats`` (see ``row_stats_sql``) with the expected row count and whether it matched."""
    return stats | {"expected_rows": expected, "verified": stats["rows"] == expected}


# -- the limit ---------------------------------------------------------------------------------


def in_process(plan: Plan, tables: dict[int, pa.Table], workdir: Path) -> dict[str, Any]:
    """The limit at each size (row-group-sized batches), and the same rows inserted as the
    producers' smaller batches, interleaved with it (``producer_batches``: ratio to the limit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, Any] = {}
    producer: dict[str, dict[str, Any]] = {str(rows): {} for rows in data.PRODUCER_BATCHES}
    for size in plan.sizes:
        layouts = {"row_group": tables[size]} | {
            str(rows): data.rebatched(tables[size], rows)
            for rows in data.PRODUCER_BATCHES
            if size > rows
        }
        times = inprocess.interleaved_times(layouts, workdir, plan.repeats[size])
        limit_times = times.pop("row_group")
        sizes[str(size)] = _throughput(size, limit_times, None)
        for rows, layout_times in times.items():
            producer[rows][str(size)] = _throughput(size, layout_times, limit_times)
    small = data.make_table(plan.batch_rows * plan.sequential_inserts, seed=7)
    batches = [
        small.slice(i * plan.batch_rows, plan.batch_rows) for i in range(plan.sequential_inserts)
    ]
    seq = inprocess.sequential_small(batches, workdir / "inproc_seq.duckdb")
    sequential = {
        "batch_rows": plan.batch_rows,
        "inserts": len(seq),
        "rows_per_s": plan.batch_rows * len(seq) / sum(seq),
        "latency": latency_summary(seq),
    }
    for path in workdir.glob("inproc_*"):
        path.unlink(missing_ok=True)
    return {
        "sizes": sizes,
        "producer_batches": {rows: found for rows, found in producer.items() if found},
        "sequential": sequential,
    }


# -- one client, one request at a time ---------------------------------------------------------


# Server cases whose producer sends small record batches; their paired limit stays the
# row-group-sized insert, so their ratio shows what not coalescing costs.
PRODUCER_CASES = {"http-binary-10k", "flight-10k"}


def _sizes(kind: str, plan: Plan) -> tuple[int, ...]:
    """The sizes a case runs: all of the plan's, or for a producer-batch case those that hold
    more than one batch (at or below one batch the payload is the same as the plain case's)."""
    if kind not in PRODUCER_CASES:
        return plan.sizes
    sizes = tuple(s for s in plan.sizes if s > data.PRODUCER_BATCH_ROWS)
    if not sizes:
        raise NotAvailable(f"needs a size above {data.PRODUCER_BATCH_ROWS:,} rows (--sizes)")
    return sizes


def _http_payload(kind: str, table: pa.Table, name: str) -> tuple[str, bytes, dict[str, str]]:
    if kind == "http-json":
        return f"/stream/{name}", data.seed_json(table, name), JSON_HEADERS
    if kind == "http-binary-10k":
        table = data.rebatched(table, data.PRODUCER_BATCH_ROWS)
    ipc = data.ipc_stream(table)
    if kind == "http-zstd":
        return f"/stream/{name}", data.zstd(ipc), ZSTD_HEADERS
    return f"/stream/{name}", ipc, BINARY_HEADERS


def http_sizes(
    kind: str, servers: Servers, plan: Plan, tables: dict[int, pa.Table]
) -> dict[str, Any]:
    """Sequential requests of each size over one keep-alive connection; fresh table per size.

    The first request of each size creates the table and is not timed. Before each timed
    request, the same rows are inserted in-process once (the paired limit)."""
    sizes = _sizes(kind, plan)
    with servers.start(kind) as server:

        async def run() -> dict[str, Any]:
            results: dict[str, Any] = {}
            async with Connection(server.url) as conn:
                for size in sizes:
                    name = f"{kind.replace('-', '_')}_{size}"
                    path, body, headers = _http_payload(kind, tables[size], name)
                    reply = await conn.post(path, body, headers)
                    _check(reply.status, reply.json(), size)
                    times, limit_times = [], []
                    with inprocess.Limit(
                        tables[size], servers.root / f"limit_{name}.duckdb"
                    ) as limit:
                        for _ in range(plan.repeats[size]):
                            limit_times.append(limit.time())
                            reply = await conn.post(path, body, headers)
                            _check(reply.status, reply.json(), size)
                            times.append(reply.seconds)
                    result = _throughput(size, times, limit_times)
                    result["body_bytes"] = len(body)
                    result["check"] = _verify(server, name, size * (plan.repeats[size] + 1))
                    results[str(size)] = result
            return results

        return {"sizes": asyncio.run(run())}


def _timed_puts(
    port: int,
    plan: Plan,
    tables: dict[int, pa.Table],
    limits: Path,
    prefix: str,
    sizes: tuple[int, ...] | None = None,
    batch_rows: int | None = None,
) -> dict[int, dict[str, Any]]:
    """``do_put`` of each size, one at a time, paired with in-process inserts like HTTP; the
    first put of each size creates its table ``<prefix>_<size>`` and is not timed. With
    ``batch_rows`` the put sends batches of that many rows; the paired limit is unchanged."""
    from benchmarks import flight_client

    client = flight_client.connect(port)
    results: dict[int, dict[str, Any]] = {}
    for size in sizes or plan.sizes:
        name = f"{prefix}_{size}"
        payload = tables[size] if batch_rows is None else data.rebatched(tables[size], batch_rows)
        flight_client.timed_put(client, name, payload)
        times, limit_times = [], []
        with inprocess.Limit(tables[size], limits / f"limit_{name}.duckdb") as limit:
            for _ in range(plan.repeats[size]):
                limit_times.append(limit.time())
                times.append(flight_client.timed_put(client, name, payload))
        results[size] = _throughput(size, times, limit_times)
    client.close()
    return results


def flight_sizes(
    servers: Servers, plan: Plan, tables: dict[int, pa.Table], kind: str = "flight"
) -> dict[str, Any]:
    """Arrowport's ``do_put`` of each size (see :func:`_timed_puts`); ``flight-10k`` sends the
    producer's 10,000-row batches."""
    sizes = _sizes(kind, plan)
    batch_rows = data.PRODUCER_BATCH_ROWS if kind in PRODUCER_CASES else None
    prefix = kind.replace("-", "_")
    with servers.start(kind) as server:
        port = flight_port(server)
        if port is None:
            raise NotAvailable("flight: not available")
        results = _timed_puts(port, plan, tables, servers.root, prefix, sizes, batch_rows)
        for size, result in results.items():
            result["check"] = _verify(server, f"{prefix}_{size}", size * (plan.repeats[size] + 1))
        return {"sizes": {str(size): result for size, result in results.items()}}


def adbc_sizes(servers: Servers, plan: Plan, tables: dict[int, pa.Table]) -> dict[str, Any]:
    """Flight SQL ``adbc_ingest`` of each size through the real ADBC driver, one at a time,
    paired with in-process inserts like the other per-size cases: the first ingest of each size
    creates ``adbc_<size>`` (mode ``create``) and is not timed; the timed ones append."""
    try:
        from benchmarks import adbc_client
    except ImportError as exc:  # the dev extras bring the ADBC driver
        raise NotAvailable(f"adbc: {exc}") from None

    with servers.start("adbc-ingest") as server:
        port = flight_port(server)
        if port is None:
            raise NotAvailable("flight: not available")
        conn = adbc_client.connect(port)
        results: dict[str, Any] = {}
        try:
            for size in plan.sizes:
                name = f"adbc_{size}"
                adbc_client.timed_ingest(conn, name, tables[size], "create")
                times, limit_times = [], []
                with inprocess.Limit(tables[size], servers.root / f"limit_{name}.duckdb") as limit:
                    for _ in range(plan.repeats[size]):
                        limit_times.append(limit.time())
                        times.append(adbc_client.timed_ingest(conn, name, tables[size], "append"))
                result = _throughput(size, times, limit_times)
                result["check"] = _verify(server, name, size * (plan.repeats[size] + 1))
                results[str(size)] = result
        finally:
            conn.close()
        return {"sizes": results}


def bare_flight_sizes(servers: Servers, plan: Plan, tables: dict[int, pa.Table]) -> dict[str, Any]:
    """The same puts against :mod:`benchmarks.bare_flight`: the ceiling of any Flight server."""
    from benchmarks import bare_flight

    workdir = servers.root / "flight-bare"
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "bare.duckdb"
    with bare_flight.running(db_path) as port:
        results = _timed_puts(port, plan, tables, workdir, "bare")
    for size, result in results.items():
        landed = bare_flight.landed(db_path, f"bare_{size}")
        result["check"] = _checked(landed, size * (plan.repeats[size] + 1))
    return {"sizes": {str(size): result for size, result in results.items()}}


# -- many clients ------------------------------------------------------------------------------


class HealthProbe(Background):
    """GET /health every ``interval`` seconds on its own connection and thread.

    Samples are ``(started, seconds)`` pairs on the ``time.perf_counter`` clock."""

    def __init__(self, url: str, interval: float = 0.01) -> None:
        super().__init__("health-probe")
        self.url = url
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.failures = 0

    def _run(self) -> None:
        async def loop() -> None:
            async with Connection(self.url) as conn:
                while not self._stop.is_set():
                    started = time.perf_counter()
                    reply = await conn.get("/health")
                    if reply.status == 200:
                        self.samples.append((started, reply.seconds))
                    else:
                        self.failures += 1
                    await asyncio.sleep(self.interval)

        asyncio.run(loop())

    def between(self, start: float, end: float) -> list[float]:
        return [s for t, s in self.samples if start <= t <= end]


def _small_batches(plan: Plan) -> list[list[pa.Table]]:
    total = plan.clients * plan.batches_per_client * plan.batch_rows
    table = data.make_table(total, start_id=1_000_000_000, seed=11)
    return [
        [
            table.slice((c * plan.batches_per_client + b) * plan.batch_rows, plan.batch_rows)
            for b in range(plan.batches_per_client)
        ]
        for c in range(plan.clients)
    ]


def _concurrent_result(
    plan: Plan,
    seconds: float,
    latencies: list[float],
    health: list[float] | None,
    seq_limit: dict[str, Any] | None,
    cpu: CpuUse,
) -> dict[str, Any]:
    """Aggregate figures of a many-clients run; ``health`` is the ``/health`` latencies sampled
    during it (None for a server without one); ``cpu`` what the server and the load generator
    spent in it (the timed window, the untimed first request excluded)."""
    rows = plan.clients * plan.batches_per_client * plan.batch_rows
    result: dict[str, Any] = {
        "clients": plan.clients,
        "batches_per_client": plan.batches_per_client,
        "batch_rows": plan.batch_rows,
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "latency": latency_summary(latencies),
        "cpu_per_request": cpu.per_request(plan.clients * plan.batches_per_client),
    }
    if health is not None:
        result["health_under_load"] = latency_summary(health)
    if seq_limit is not None:
        result["ratio_to_sequential"] = result["rows_per_s"] / seq_limit["rows_per_s"]
    return result


def concurrent_http(
    servers: Servers, plan: Plan, seq_limit: dict[str, Any] | None
) -> dict[str, Any]:
    bodies = [[data.ipc_stream(t) for t in client] for client in _small_batches(plan)]
    name = "concurrent_http"
    path = f"/stream/{name}"
    with servers.start("concurrent-http") as server:
        latencies: list[float] = []

        retries = 0

        async def one_client(own: list[bytes]) -> None:
            nonlocal retries
            async with Connection(server.url) as conn:
                for body in own:
                    started = time.perf_counter()
                    pause = 0.005
                    reply = await conn.post(path, body, BINARY_HEADERS)
                    while reply.status == 503 and retries < 10_000:
                        retries += 1
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, 0.1)
                        reply = await conn.post(path, body, BINARY_HEADERS)
                    _check(reply.status, reply.json(), plan.batch_rows)
                    latencies.append(time.perf_counter() - started)

        cpu = CpuUse(server.proc.pid)

        async def run() -> tuple[float, float]:
            async with Connection(server.url) as conn:  # creates the table, untimed
                reply = await conn.post(path, bodies[0][0], BINARY_HEADERS)
                _check(reply.status, reply.json(), plan.batch_rows)
            started = time.perf_counter()
            with cpu:
                await asyncio.gather(*(one_client(own) for own in bodies))
            return started, time.perf_counter() - started

        with HealthProbe(server.url, interval=0.02) as probe:
            started, seconds = asyncio.run(run())
        health = probe.between(started, started + seconds)
        result = _concurrent_result(plan, seconds, latencies, health, seq_limit, cpu)
        result["retries"] = retries
        result["check"] = _verify(server, name, result["rows"] + plan.batch_rows)
        return result


def concurrent_flight(
    servers: Servers, plan: Plan, seq_limit: dict[str, Any] | None
) -> dict[str, Any]:
    from benchmarks import flight_client

    batches = [
        [t.combine_chunks().to_batches()[0] for t in client] for client in _small_batches(plan)
    ]
    name = "concurrent_flight"
    with servers.start("concurrent-flight") as server:
        port = flight_port(server)
        if port is None:
            raise NotAvailable("flight: not available")
        first = flight_client.connect(port)
        flight_client.put(first, name, [batches[0][0]])  # creates the table, untimed
        first.close()
        latencies: list[float] = []
        retried: list[int] = []
        lock = threading.Lock()

        def one_client(own: list[pa.RecordBatch]) -> None:
            client = flight_client.connect(port)
            mine = []
            retries = 0
            for batch in own:
                t0 = time.perf_counter()
                _, again = flight_client.put_retrying(client, name, [batch])
                mine.append(time.perf_counter() - t0)
                retries += again
            client.close()
            with lock:
                latencies.extend(mine)
                retried.append(retries)

        with HealthProbe(server.url, interval=0.02) as probe, CpuUse(server.proc.pid) as cpu:
            started = time.perf_counter()
            with ThreadPoolExecutor(plan.clients) as pool:
                for future in [pool.submit(one_client, own) for own in batches]:
                    future.result()
            seconds = time.perf_counter() - started
        health = probe.between(started, started + seconds)
        result = _concurrent_result(plan, seconds, latencies, health, seq_limit, cpu)
        result["retries"] = sum(retried)
        result["check"] = _verify(server, name, result["rows"] + plan.batch_rows)
        return result


# -- the peer: DuckDB's own remote protocol ----------------------------------------------------


def quack_case(
    servers: Servers, plan: Plan, tables: dict[int, pa.Table], seq_limit: dict[str, Any] | None
) -> dict[str, Any]:
    """DuckDB's Quack protocol (:mod:`benchmarks.quack`), each part against a fresh Quack server
    on a fresh file: bulk inserts of each size over one connection, paired with in-process
    inserts like the other per-size cases, then the many-clients load of the concurrent cases."""
    from benchmarks import quack

    reason = quack.unavailable()
    if reason is not None:
        raise NotAvailable(reason)
    workdir = servers.root / "quack"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    return {
        "sizes": _quack_sizes(plan, tables, workdir),
        "concurrent": _quack_concurrent(plan, workdir, seq_limit),
    }


def _quack_sizes(plan: Plan, tables: dict[int, pa.Table], workdir: Path) -> dict[str, Any]:
    from benchmarks import quack
    from benchmarks.bare_flight import landed

    db_path = workdir / "bulk.duckdb"
    results: dict[str, Any] = {}
    with quack.running(db_path) as served, quack.Client(served.port) as client:
        for size in plan.sizes:
            name = f"quack_{size}"
            client.create(name, tables[size])
            client.insert(name, tables[size])  # untimed, like every case's first request
            times, limit_times = [], []
            with inprocess.Limit(tables[size], workdir / f"limit_{name}.duckdb") as limit:
                for _ in range(plan.repeats[size]):
                    limit_times.append(limit.time())
                    times.append(client.insert(name, tables[size]))
            results[str(size)] = _throughput(size, times, limit_times)
    # Read back from the file once the server has stopped: independent of the protocol.
    for key, result in results.items():
        expected = int(key) * (plan.repeats[int(key)] + 1)
        result["check"] = _checked(landed(db_path, f"quack_{key}"), expected)
    return results


def _quack_concurrent(
    plan: Plan, workdir: Path, seq_limit: dict[str, Any] | None
) -> dict[str, Any]:
    """``plan.clients`` threads, each its own DuckDB instance and Quack connection (opened before
    the clock starts), one ``INSERT`` per small batch."""
    from benchmarks import quack
    from benchmarks.bare_flight import landed

    batches = _small_batches(plan)
    db_path = workdir / "concurrent.duckdb"
    name = "quack_concurrent"
    latencies: list[float] = []
    lock = threading.Lock()

    def one_client(client: quack.Client, own: list[pa.Table]) -> None:
        mine = [client.insert(name, table) for table in own]
        with lock:
            latencies.extend(mine)

    with quack.running(db_path) as served, ExitStack() as stack:
        first = stack.enter_context(quack.Client(served.port, threads=1))
        first.create(name, batches[0][0])
        first.insert(name, batches[0][0])  # untimed, like the other concurrent cases
        # The others attach after the table exists: a client reads the remote catalog when it
        # attaches. One thread each, like the other load generators' one thread or task each.
        clients = [first] + [
            stack.enter_context(quack.Client(served.port, threads=1)) for _ in batches[1:]
        ]
        started = time.perf_counter()
        with CpuUse(served.pid) as cpu, ThreadPoolExecutor(plan.clients) as pool:
            pairs = zip(clients, batches, strict=True)
            for future in [pool.submit(one_client, *pair) for pair in pairs]:
                future.result()
        seconds = time.perf_counter() - started
    result = _concurrent_result(plan, seconds, latencies, None, seq_limit, cpu)
    result["check"] = _checked(landed(db_path, name), result["rows"] + plan.batch_rows)
    return result


# -- /health while a large ingest runs ---------------------------------------------------------


def health_during_ingest(servers: Servers, plan: Plan, table: pa.Table) -> dict[str, Any]:
    body = data.ipc_stream(table)
    name = "health_ingest"
    with servers.start("health") as server:

        async def ingest() -> list[tuple[float, float]]:
            windows = []
            async with Connection(server.url) as conn:
                for _ in range(plan.health_ingests):
                    started = time.perf_counter()
                    reply = await conn.post(f"/stream/{name}", body, BINARY_HEADERS)
                    _check(reply.status, reply.json(), table.num_rows)
                    windows.append((started, started + reply.seconds))
            return windows

        with HealthProbe(server.url, interval=0.005) as probe:
            idle_from = time.perf_counter()
            time.sleep(1.0)
            idle = probe.between(idle_from, time.perf_counter())
            windows = asyncio.run(ingest())
        during = [s for start, end in windows for s in probe.between(start, end)]
        return {
            "ingest_rows": table.num_rows,
            "ingests": len(windows),
            "ingest_seconds": [end - start for start, end in windows],
            "health_idle": latency_summary(idle),
            "health_during_ingest": latency_summary(during),
            "probe_failures": probe.failures,
            "check": _verify(server, name, table.num_rows * len(windows)),
        }


# -- memory while a 2 GB stream lands ----------------------------------------------------------


def _rss_result(
    server: ArrowportProcess,
    name: str,
    sampler: RssSampler,
    idle_mb: float,
    pieces: data.StreamPieces,
    batches: int,
    seconds: float,
) -> dict[str, Any]:
    assert server.proc is not None
    rows = batches * pieces.rows_per_batch
    return {
        "body_bytes": pieces.size(batches),
        "stream_bytes": pieces.size(batches),
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "mb_per_s": pieces.size(batches) / seconds / 1e6,
        "idle_rss_mb": idle_mb,
        "peak_rss_mb_sampled": sampler.peak_mb,
        "peak_rss_mb_hwm": peak_rss_mb(server.proc.pid),
        "peak_rss_mb": max(sampler.peak_mb, peak_rss_mb(server.proc.pid)),
        "rss_samples": sampler.samples,
        "check": _verify(server, name, rows),
    }


def big_http(servers: Servers, plan: Plan) -> dict[str, Any]:
    assert plan.big_bytes is not None
    pieces = data.StreamPieces(data.make_table(plan.big_batch_rows, seed=5).to_batches()[0])
    batches = pieces.batches_for(plan.big_bytes)
    name = "big_http"
    with servers.start("rss-http") as server:
        assert server.proc is not None
        idle_mb = tree_rss_mb(server.proc.pid)
        with RssSampler(server.proc.pid) as sampler:
            started = time.perf_counter()
            # A generator body: httpx sends it chunked and never holds the whole stream.
            response = httpx.post(
                f"{server.url}/stream/{name}",
                content=pieces.chunks(batches),
                headers=BINARY_HEADERS,
                timeout=None,
            )
            seconds = time.perf_counter() - started
        _check(response.status_code, response.json(), batches * pieces.rows_per_batch)
        return _rss_result(server, name, sampler, idle_mb, pieces, batches, seconds)


def big_flight(servers: Servers, plan: Plan) -> dict[str, Any]:
    from benchmarks import flight_client

    assert plan.big_bytes is not None
    batch = data.make_table(plan.big_batch_rows, seed=5).to_batches()[0]
    pieces = data.StreamPieces(batch)
    batches = pieces.batches_for(plan.big_bytes)
    name = "big_flight"
    with servers.start("rss-flight") as server:
        assert server.proc is not None
        port = flight_port(server)
        if port is None:
            raise NotAvailable("flight: not available")
        idle_mb = tree_rss_mb(server.proc.pid)
        client = flight_client.connect(port)
        with RssSampler(server.proc.pid) as sampler:
            started = time.perf_counter()
            flight_client.put(client, name, flight_client.repeated(batch, batches))
            seconds = time.perf_counter() - started
        client.close()
        return _rss_result(server, name, sampler, idle_mb, pieces, batches, seconds)


def big_json(servers: Servers, plan: Plan) -> dict[str, Any]:
    """A seed-format JSON/base64 body of ``plan.big_json_bytes``, sent chunked from a generator
    that base64-encodes a replayed IPC stream as it goes, so the client never holds it."""
    assert plan.big_json_bytes is not None
    batch = data.make_table(plan.big_batch_rows, seed=5).to_batches()[0]
    name = "big_json"
    body = data.SeedJsonStream.of_size(batch, plan.big_json_bytes, name)
    with servers.start("rss-json") as server:
        assert server.proc is not None
        idle_mb = tree_rss_mb(server.proc.pid)
        with RssSampler(server.proc.pid) as sampler:
            started = time.perf_counter()
            response = httpx.post(
                f"{server.url}/stream/{name}",
                content=body.chunks(),
                headers=JSON_HEADERS,
                timeout=None,
            )
            seconds = time.perf_counter() - started
        _check(response.status_code, response.json(), body.rows)
        result = _rss_result(server, name, sampler, idle_mb, body.pieces, body.batches, seconds)
        result["body_bytes"] = body.size()
        result["mb_per_s"] = body.size() / seconds / 1e6
        return result
