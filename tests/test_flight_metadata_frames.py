"""Frames of a put that carry only ``app_metadata``: dropped, bounded, and not taken as the upload
arriving."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyarrow as pa
import pytest

from arrowport.flight.puts import MAX_APP_METADATA_BYTES
from tests.conftest import query
from tests.server import ArrowportProcess
from tests.test_flight_fuzz import Frame, ipc_stream, open_put, put_frames, send

FLIGHT_ARGS = ["--flight-port", "0"]
TABLE = pa.table({"id": pa.array(range(10), pa.int64())})


def frames_of(name: bytes) -> list[Frame]:
    """A put of TABLE: the schema (with the descriptor), then its one batch."""
    return put_frames(ipc_stream(TABLE.to_batches(), TABLE.schema), name)


def table_exists(server: ArrowportProcess, name: str) -> bool:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        return any(table["name"] == name for table in http.get("/tables").json())


def test_metadata_frames_between_messages_are_dropped(tmp_path: Path) -> None:
    schema, batch = frames_of(b"noted")
    chatter = [Frame(app_metadata=b"note %d" % i) for i in range(50)]
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        outcome = send(open_put(channel), [f.encode() for f in [schema, *chatter, batch]])
        channel.close()
        assert outcome.code is None, outcome.describe()
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert query(http, "SELECT count(*) AS n FROM noted").to_pylist() == [{"n": 10}]


@pytest.mark.parametrize("carrying", ["app_metadata", "descriptor"])
def test_a_stream_of_metadata_frames_stalls_the_upload(tmp_path: Path, carrying: str) -> None:
    """A put that sends only ``app_metadata`` (or a descriptor) after its schema, a frame every
    0.4 s, ends as a silent one does after ``limits.body_timeout_seconds``: each frame used to
    start the stall timeout again, so such a put held its call for as long as its client
    liked."""
    schema, batch = frames_of(b"chatty")
    config = {"limits": {"body_timeout_seconds": 2}}

    def chatter(i: int) -> Frame:
        if carrying == "descriptor":
            return Frame(descriptor=schema.descriptor)
        return Frame(app_metadata=b"still here %d" % i)

    def slow() -> Iterator[bytes]:
        yield schema.encode()
        for i in range(100):  # 40 s of chatter
            time.sleep(0.4)
            yield chatter(i).encode()
        yield batch.encode()

    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS, config=config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as ended:
            tuple(open_put(channel)(slow(), timeout=60))
        error: Any = ended.value
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
        assert (error.details() or "").startswith("request_timeout: "), error.details()
        assert time.monotonic() - started < 20
        channel.close()
        assert not table_exists(server, "chatty")
        assert server.healthy()


def test_app_metadata_past_its_bound_is_refused(tmp_path: Path) -> None:
    """A server that never reads ``app_metadata`` takes at most MAX_APP_METADATA_BYTES of it per
    frame: a put of frames of hundreds of MB each held them all for nothing."""
    schema, batch = frames_of(b"bulky")
    bulky = Frame(app_metadata=b"x" * (MAX_APP_METADATA_BYTES + 1))
    with ArrowportProcess(tmp_path, args=FLIGHT_ARGS) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        do_put = open_put(channel)
        refused = send(do_put, [f.encode() for f in [schema, bulky, batch]])
        noted = Frame(header=batch.header, body=batch.body, app_metadata=b"y" * 1000)
        landed = send(do_put, [f.encode() for f in [schema, noted]])
        channel.close()
        assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.describe()
        assert refused.details.startswith("payload_too_large: a frame carries "), refused.details
        assert landed.code is None, landed.describe()
        with httpx.Client(base_url=server.url, timeout=30) as http:  # the second put alone
            assert query(http, "SELECT count(*) AS n FROM bulky").to_pylist() == [{"n": 10}]
        assert server.healthy()
