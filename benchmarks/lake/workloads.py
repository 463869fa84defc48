"""The two workloads sent to one or more running nodes over HTTP binary ingest: bulk (large
requests, all nodes' at once, in timed rounds) and small (many clients at once, each sending
small requests one after another, spread over the nodes). Requests refused with 503 are retried
with backoff and counted by reason; every accepted request is checked for the rows it carried.
The request bodies are encoded once, before any timing, in :class:`Payloads`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from benchmarks import data
from benchmarks.cases import BINARY_HEADERS
from benchmarks.lake.meter import Meter
from benchmarks.lake.plan import Plan
from benchmarks.lean_http import Connection
from benchmarks.monitor import latency_summary

RETRY_FOR_S = 120.0  # a request still refused (503) after this long fails the run


def _accepted(status: int, body: bytes, rows: int) -> None:
    if status != 200:
        raise RuntimeError(f"ingest answered {status}: {body[:300]!r}")
    landed = json.loads(body).get("rows_processed")
    if landed != rows:
        raise RuntimeError(f"server reported {landed} rows, sent {rows}")


@dataclasses.dataclass(frozen=True)
class Sent:
    """One request: seconds from its first byte sent to the accepting reply, and the messages
    of the 503 answers retried on the way."""

    seconds: float
    refused: list[str]


def _refusal(body: bytes) -> str:
    """A 503's message up to its details (sizes, names), so that like refusals count together."""
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(body).get("message", "")).split(":")[0][:100]
    return body[:100].decode(errors="replace")


async def _send(conn: Connection, path: str, body: bytes, rows: int) -> Sent:
    """POST until accepted; a 503 is retried after 5 ms, doubling to 100 ms (as the other
    concurrent cases do), for up to ``RETRY_FOR_S``."""
    started = time.perf_counter()
    refused: list[str] = []
    pause = 0.005
    reply = await conn.post(path, body, BINARY_HEADERS)
    while reply.status == 503 and time.perf_counter() - started < RETRY_FOR_S:
        refused.append(_refusal(reply.body))
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
        reply = await conn.post(path, body, BINARY_HEADERS)
    _accepted(reply.status, reply.body, rows)
    return Sent(time.perf_counter() - started, refused)


async def _send_all(targets: list[tuple[str, list[bytes]]], path: str, rows: int) -> list[Sent]:
    """Every ``(url, bodies)`` pair is one client on its own connection, sending its bodies one
    after another; all clients at once."""

    async def client(url: str, bodies: list[bytes]) -> list[Sent]:
        async with Connection(url) as conn:
            return [await _send(conn, path, body, rows) for body in bodies]

    done = await asyncio.gather(*(client(url, bodies) for url, bodies in targets))
    return [result for own in done for result in own]


def _warm_up(urls: list[str], path: str, body: bytes, rows: int) -> None:
    """One untimed request per node: the first creates the table."""
    for url in urls:
        asyncio.run(_send_all([(url, [body])], path, rows))


def _workload_result(rows: int, seconds: float, sent: list[Sent]) -> dict[str, Any]:
    refused = Counter(message for one in sent for message in one.refused)
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "requests": len(sent),
        "retries": refused.total(),
        "retried_because": dict(refused),
        "latency": latency_summary([one.seconds for one in sent]),
        "latencies_s": [one.seconds for one in sent],
    }


def bulk_workload(
    urls: list[str], plan: Plan, body: bytes, warm: bytes, meter: Callable[[], Meter]
) -> dict[str, Any]:
    """``bulk_per_node`` requests of ``bulk_rows`` per node, all sent at once; ``bulk_rounds``
    rounds, the median round reported."""
    path = "/stream/bulk"
    _warm_up(urls, path, warm, plan.small_rows)
    targets = [(url, [body]) for url in urls for _ in range(plan.bulk_per_node)]
    rounds = []
    for _ in range(plan.bulk_rounds):
        with meter() as m:
            started = time.perf_counter()
            sent = asyncio.run(_send_all(targets, path, plan.bulk_rows))
            seconds = time.perf_counter() - started
        result = _workload_result(len(targets) * plan.bulk_rows, seconds, sent)
        rounds.append(result | {"usage": m.usage})
    chosen = sorted(rounds, key=lambda r: r["seconds"])[(len(rounds) - 1) // 2]
    expected = len(urls) * plan.small_rows + len(rounds) * chosen["rows"]
    return chosen | {"rounds": rounds, "expected_rows": expected}


def small_workload(
    urls: list[str],
    plan: Plan,
    bodies: list[list[bytes]],
    meter: Callable[[], Meter],
    table: str = "small",
) -> dict[str, Any]:
    """One client per ``bodies`` item, all at once, client ``i`` on node ``i mod N``, each
    sending its small requests one after another."""
    path = f"/stream/{table}"
    _warm_up(urls, path, bodies[0][0], plan.small_rows)
    targets = [(urls[i % len(urls)], own) for i, own in enumerate(bodies)]
    rows = sum(len(own) for own in bodies) * plan.small_rows
    with meter() as m:
        started = time.perf_counter()
        sent = asyncio.run(_send_all(targets, path, plan.small_rows))
        seconds = time.perf_counter() - started
    result = _workload_result(rows, seconds, sent) | {"usage": m.usage}
    return result | {"expected_rows": rows + len(urls) * plan.small_rows}


@dataclasses.dataclass(frozen=True)
class Payloads:
    bulk: bytes  # one bulk request's IPC stream, sent by every bulk request
    warm: bytes  # a small request that creates the bulk table
    small: list[list[bytes]]  # each client's small requests


def make_payloads(plan: Plan, bulk: pa.Table, small: pa.Table) -> Payloads:
    per_client = plan.requests_per_client
    return Payloads(
        bulk=data.ipc_stream(bulk),
        warm=data.ipc_stream(bulk.slice(0, plan.small_rows)),
        small=[
            [
                data.ipc_stream(
                    small.slice((c * per_client + r) * plan.small_rows, plan.small_rows)
                )
                for r in range(per_client)
            ]
            for c in range(plan.clients)
        ],
    )
