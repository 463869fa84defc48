"""What Python's gRPC server costs a Flight put before any ingest: a ``DoPut`` handler that only
drains the frames and answers, served by ``grpcio``'s thread-pool server, by its asyncio server
and (for comparison) by pyarrow's C++ Flight server, each loaded by 16 pyarrow Flight clients
putting 1,000-row batches one at a time (the load of the ``concurrent-flight`` case).

    python -m benchmarks.grpc_floor [--clients 16] [--puts 200]

Each server runs in a process of its own; the figures are its puts per second and its CPU per put
(from ``/proc``), the most any Flight server built on it could reach on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pyarrow as pa
import pyarrow.flight as flight

from benchmarks import data
from benchmarks.monitor import cpu_seconds

_SERVICE = "arrow.flight.protocol.FlightService"


# An empty PutResult: pyarrow reads it as a put answered without metadata.
_ANSWER = b""


def _thread_pool_server() -> None:
    def do_put(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            pass
        yield _ANSWER

    handler = grpc.method_handlers_generic_handler(
        _SERVICE, {"DoPut": grpc.stream_stream_rpc_method_handler(do_put)}
    )
    server = grpc.server(ThreadPoolExecutor(64), handlers=[handler])
    print(server.add_insecure_port("127.0.0.1:0"), flush=True)
    server.start()
    sys.stdin.read()  # until the benchmark closes our stdin


def _asyncio_server() -> None:
    async def do_put(
        requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        async for _ in requests:
            pass
        yield _ANSWER

    async def serve() -> None:
        handler = grpc.method_handlers_generic_handler(
            _SERVICE, {"DoPut": grpc.stream_stream_rpc_method_handler(do_put)}
        )
        server = grpc.aio.server(handlers=[handler])
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        await server.start()
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


class _DrainingFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    def do_put(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.FlightMetadataWriter,
    ) -> None:
        for _ in reader:
            pass


def _pyarrow_server() -> None:
    """pyarrow's own Flight server (C++ gRPC; Python only in the handler), for comparison: it
    decodes every message itself, before any handler could check it."""
    server = _DrainingFlightServer("grpc://127.0.0.1:0")
    print(server.port, flush=True)
    sys.stdin.read()
    server.shutdown()


_SERVERS = {
    "thread-pool": _thread_pool_server,
    "asyncio": _asyncio_server,
    "pyarrow": _pyarrow_server,
}


def client_batches(clients: int, puts: int) -> list[list[pa.RecordBatch]]:
    """Each client's 1,000-row batches, one per put, all rows distinct."""
    table = data.make_table(clients * puts * 1000)
    return [
        [
            table.slice((c * puts + p) * 1000, 1000).combine_chunks().to_batches()[0]
            for p in range(puts)
        ]
        for c in range(clients)
    ]


def load(port: int, batches: list[list[pa.RecordBatch]]) -> None:
    def client(own: list[pa.RecordBatch]) -> None:
        with flight.connect(f"grpc://127.0.0.1:{port}") as connection:
            for batch in own:
                writer, reader = connection.do_put(
                    flight.FlightDescriptor.for_path("floor"), batch.schema
                )
                writer.write_batch(batch)
                writer.done_writing()
                reader.read()
                writer.close()

    with ThreadPoolExecutor(len(batches)) as pool:
        list(pool.map(client, batches))


def loaded(
    command: list[str],
    per_client: list[list[pa.RecordBatch]],
    server_cpu: Callable[[int], float] = cpu_seconds,
) -> tuple[float, float]:
    """Start ``command``, a server that prints its port and serves until its stdin closes; put
    each client's first five batches (a warm-up), then time every client's puts. Returns the
    seconds and the server's CPU seconds (``server_cpu`` of its process ID) of the timed part."""
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        assert proc.stdin is not None
        port = int(proc.stdout.readline())
        load(port, [own[:5] for own in per_client])
        cpu, started = server_cpu(proc.pid), time.perf_counter()
        load(port, per_client)
        seconds = time.perf_counter() - started
        cpu = server_cpu(proc.pid) - cpu
        proc.stdin.close()
    return seconds, cpu


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _SERVERS[sys.argv[2]]()
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--puts", type=int, default=200, help="puts per client")
    args = parser.parse_args()
    per_client = client_batches(args.clients, args.puts)
    puts = args.clients * args.puts
    print(
        f"empty DoPut handler, {args.clients} clients x {args.puts} puts of 1,000 rows "
        f"[os.cpu_count() {os.cpu_count()}]"
    )
    for name in _SERVERS:
        command = [sys.executable, "-m", "benchmarks.grpc_floor", "--serve", name]
        seconds, cpu = loaded(command, per_client)
        print(
            f"  {name:12s} {puts / seconds:8,.0f} puts/s   server CPU {cpu / puts * 1000:.2f} ms per put"
        )


if __name__ == "__main__":
    main()
