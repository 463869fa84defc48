"""A Flight answer whose client stops taking it: the call ends, and the query's turn comes back.

gRPC holds a message back while its client's receive window is full, so a client that reads one
message and then nothing more would hold its query's turn (and its open result) for as long as
it stays connected. The tests use raw gRPC calls: a pyarrow client reads ahead on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from arrowport.flight.protocol import flight_pb2
from tests.server import ArrowportProcess

FLIGHT_ARGS = ["--flight-port", "0"]
# Gigabytes of answer: far more than any receive window holds.
HUGE_ANSWER = "SELECT i, repeat('x', 1000) AS s FROM range(5000000) t(i)"


def stalled_do_get(server: ArrowportProcess, sql: str) -> Iterator[bytes]:
    """A DoGet of ``sql`` whose first message has been read, and nothing after it."""
    channel = grpc.insecure_channel(
        f"127.0.0.1:{server.flight_port}", options=[("grpc.max_receive_message_length", -1)]
    )
    do_get = channel.unary_stream(
        "/arrow.flight.protocol.FlightService/DoGet",
        request_serializer=lambda raw: raw,
        response_deserializer=lambda raw: raw,
    )
    ticket = flight_pb2.Ticket(ticket=json.dumps({"sql": sql}).encode())
    answers: Iterator[bytes] = do_get(ticket.SerializeToString())
    next(answers)
    return answers


def drained(answers: Iterator[bytes]) -> grpc.RpcError:
    """How a stalled call ended, once its client reads again."""
    try:
        for _ in answers:
            pass
    except grpc.RpcError as exc:
        return exc
    raise AssertionError("the stalled answer was sent whole")


def timed_query(server: ArrowportProcess) -> tuple[int, float]:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=60) as http:
        answer = http.post("/query", json={"sql": "SELECT 42 AS n"})
    return answer.status_code, time.monotonic() - started


@pytest.mark.parametrize(
    ("limits", "code"),
    [
        ({"query_timeout_seconds": 2}, "query_timeout"),
        ({"query_timeout_seconds": None, "body_timeout_seconds": 2}, "request_timeout"),
    ],
    ids=["query_timeout", "stall_without_a_query_timeout"],
)
def test_a_client_that_stops_reading_gives_the_query_turn_back(
    tmp_path: Path, limits: dict[str, Any], code: str
) -> None:
    """With one query turn, a DoGet whose client stops reading after the first message held the
    turn for as long as it stayed connected, past the query's time limit: every other query,
    HTTP's included, waited. The answer now waits for its client only until the query's time is
    up (or, without a time limit, ``limits.body_timeout_seconds``)."""
    config = {"limits": {"max_concurrent_queries": 1, "max_queued_queries": 4, **limits}}
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        answers = stalled_do_get(server, HUGE_ANSWER)
        status, seconds = timed_query(server)
        assert status == 200
        assert seconds < 30
        ended = drained(answers)
        assert ended.code() == grpc.StatusCode.DEADLINE_EXCEEDED, ended.details()
        assert (ended.details() or "").startswith(f"{code}: "), ended.details()
        assert server.healthy()


def test_a_client_that_reads_slowly_but_steadily_gets_its_whole_answer(tmp_path: Path) -> None:
    """Only a client that takes nothing for the whole wait is cut off: one that pauses between
    messages for less than ``limits.body_timeout_seconds`` gets every row."""
    config = {"limits": {"query_timeout_seconds": None, "body_timeout_seconds": 2}}
    rows = 400_000  # four messages of 122,880 rows and more
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        answers = stalled_do_get(server, f"SELECT i, repeat('x', 100) AS s FROM range({rows}) t(i)")
        received = 1
        for _ in answers:
            received += 1
            time.sleep(0.5)
        assert received >= 5  # the schema and every batch, each taken after a pause
        assert server.healthy()
