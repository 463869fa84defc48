"""What sharing one GIL costs 16 small Flight writers: a minimal Flight-to-DuckDB server, its
group writer run as a thread of the gRPC process (as Arrowport's is) and as a process of its
own, under the load of the ``concurrent-flight`` case.

    python -m benchmarks.writer_split [--clients 16] [--puts 200] [--rounds 3]

Both servers are the same code: ``grpcio``'s asyncio server (on uvloop) turns each put's
``FlightData`` frames into an Arrow IPC stream, checking each message against Arrowport's
default limits with Arrowport's own code, and hands it over a socket pair to the writer, which
takes every put waiting, decodes and validates them, inserts them in one transaction (as an
Arrow C stream) and answers each put after the commit. Neither does anything else Arrowport
does (authentication, admission, delivery state, metrics): the figures compare the two ways of
placing the writer, not either with Arrowport. The rounds alternate the two; each prints its
puts per second and its CPU per put (from ``/proc``, the writer process included).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import os
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import grpc
import pyarrow as pa
import uvloop

from arrowport.config import Settings
from arrowport.flight.frames import frame_messages, parse_frame
from arrowport.ingest.ipc_messages import PayloadBudget
from arrowport.ingest.ipc_stream import checked_stream_bytes
from arrowport.ingest.service import payload_limits
from benchmarks.grpc_floor import client_batches, loaded
from benchmarks.monitor import cpu_seconds

_SERVICE = "arrow.flight.protocol.FlightService"
# A put's number and its IPC stream's length, before the stream; the writer answers with the
# numbers of the puts it committed.
_HEAD = struct.Struct("<QI")
_ANSWER = struct.Struct("<Q")


def _write_groups(conn: socket.socket, db_path: str) -> None:
    """The group writer: commits every put waiting on ``conn`` in one transaction, then
    answers them; returns when the server closes its end."""
    cur = duckdb.connect(db_path).cursor()
    pending = bytearray()
    created = False
    while True:
        conn.setblocking(True)
        chunk = conn.recv(1 << 22)
        if not chunk:
            return
        pending += chunk
        conn.setblocking(False)
        try:
            while more := conn.recv(1 << 22):
                pending += more
        except BlockingIOError:
            pass
        puts: list[int] = []
        tables: list[pa.Table] = []
        while len(pending) >= _HEAD.size:
            number, length = _HEAD.unpack_from(pending)
            end = _HEAD.size + length
            if len(pending) < end:
                break
            table = pa.ipc.open_stream(bytes(pending[_HEAD.size : end])).read_all()
            table.validate(full=True)
            puts.append(number)
            tables.append(table)
            del pending[:end]
        if not puts:
            continue
        rows = pa.concat_tables(tables).combine_chunks()
        if not created:
            cur.register("seed", rows)
            cur.execute("CREATE TABLE IF NOT EXISTS t AS SELECT * FROM seed LIMIT 0")
            cur.unregister("seed")
            created = True
        cur.begin()
        cur.from_arrow(rows.__arrow_c_stream__()).insert_into("t")
        cur.commit()
        conn.setblocking(True)
        conn.sendall(b"".join(_ANSWER.pack(number) for number in puts))


def _ipc_stream(frames: list[bytes]) -> bytes:
    """A put's frames as one Arrow IPC stream, each message checked against Arrowport's default
    limits on the way, as Arrowport checks a small put's."""
    messages = frame_messages(parse_frame(raw) for raw in frames)
    return checked_stream_bytes(messages, PayloadBudget(payload_limits(Settings())))


def _serve(writer_in: str, db_path: str) -> None:
    ours, theirs = socket.socketpair()
    if writer_in == "thread":
        threading.Thread(target=_write_groups, args=(theirs, db_path), daemon=True).start()
    else:
        spawn = multiprocessing.get_context("spawn")
        spawn.Process(target=_write_groups, args=(theirs, db_path), daemon=True).start()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        waiting: dict[int, asyncio.Future[None]] = {}
        numbers = itertools.count()
        ours.setblocking(False)
        reader, writer = await asyncio.open_connection(sock=ours)

        async def answers() -> None:
            while True:
                (number,) = _ANSWER.unpack(await reader.readexactly(_ANSWER.size))
                waiting.pop(number).set_result(None)

        answering = loop.create_task(answers())

        async def do_put(
            requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
        ) -> AsyncIterator[bytes]:
            stream = _ipc_stream([raw async for raw in requests])
            number = next(numbers)
            waiting[number] = loop.create_future()
            writer.write(_HEAD.pack(number, len(stream)) + stream)
            await waiting[number]
            yield b""  # an empty PutResult

        handler = grpc.method_handlers_generic_handler(
            _SERVICE, {"DoPut": grpc.stream_stream_rpc_method_handler(do_put)}
        )
        server = grpc.aio.server(handlers=[handler])
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        await server.start()
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes our stdin
        answering.cancel()

    uvloop.run(serve())


def _server_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (the writer process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


def _round(
    writer_in: str, per_client: list[list[pa.RecordBatch]], workdir: str
) -> tuple[float, float]:
    """Puts per second and server CPU per put of one loaded server."""
    db_path = os.path.join(workdir, f"{writer_in}-{time.monotonic_ns()}.duckdb")
    command = [sys.executable, "-m", "benchmarks.writer_split", "--serve", writer_in, db_path]
    puts = sum(len(own) for own in per_client)
    seconds, cpu = loaded(command, per_client, _server_cpu)
    with duckdb.connect(db_path, read_only=True) as con:
        landed = con.execute("SELECT count(*) FROM t").fetchone()
    expected = sum(batch.num_rows for own in per_client for batch in own[:5] + own)  # warm-up too
    if landed is None or landed[0] != expected:
        raise RuntimeError(f"{writer_in}: {landed} rows landed, {expected} sent")
    return puts / seconds, cpu / puts * 1000


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--puts", type=int, default=200, help="puts per client")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    per_client = client_batches(args.clients, args.puts)
    print(
        f"{args.clients} Flight clients x {args.puts} puts of 1,000 rows, group writer as a "
        f"thread or a process [os.cpu_count() {os.cpu_count()}]"
    )
    totals: dict[str, list[float]] = {"thread": [], "process": []}
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):
            for writer_in, rates in totals.items():
                rate, cpu_ms = _round(writer_in, per_client, workdir)
                rates.append(rate)
                print(
                    f"  writer as a {writer_in:7s} {rate * 1000:12,.0f} rows/s   "
                    f"server CPU {cpu_ms:.2f} ms per put"
                )
    thread, process = (sum(rates) / len(rates) for rates in totals.values())
    print(f"  mean: process / thread {process / thread:.2f} x")


if __name__ == "__main__":
    main()
