"""Regressions: payloads and put sequences that once broke the server, each checked over HTTP and
over Flight as the raw frames a client may send (a pyarrow ``FlightClient`` validates or
re-encodes what it sends, and so never delivers them as they are).

The three payloads below are complete Arrow IPC streams found by a mutation campaign at commit
94ad1fa, stored here byte for byte (zlib, then base64):

* ``bad_field_name``: a field name that is not UTF-8 (``col\\xc4a``); HTTP answered 500
  ``internal_error`` (and reset the next request on the connection), Flight INTERNAL.
* ``list_offsets_far``: the outer ``list<string>`` offsets start at 0x20000000; Flight killed
  the server (pyarrow's ``nbytes`` on that batch segfaults, and it ran before validation).
* ``invalid_struct_child``: batch 2's string child, inside a struct inside a map, claims 65,566
  values in a 124-byte buffer; Flight landed all 60 rows (a realigning copy made a valid copy of
  the invalid input before validation).

And, with no payload file: an ``app_metadata``-only frame between a dictionary batch and its
record batch killed the server; valid dictionary puts from pyarrow's client printed "An input
buffer was poorly aligned".
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import zlib
from collections.abc import Callable, Iterator

import grpc
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from arrowport.ingest.ipc_messages import DICTIONARY_BATCH, RECORD_BATCH
from tests.conftest import ARROW_STREAM, query
from tests.server import ArrowportProcess
from tests.test_flight_fuzz import Frame, Outcome, open_put, put_frames, send

_BAD_FIELD_NAME = (
    "eNp1TzkKw0AMnPWuD4wKFyZs6YekyFeM20C+kDIPy7+UkZDJEsiATkbDSFX1CWCBYYZgQI+JHZEKZ3CamEtkrhmr"
    "36zcDRidtYRG6qxuwTX0jONxf++uJYzRtYx8Cw5t6Ct0DYJLOBFXRy6oLBUnZvbirszrNX7I+KLDf9SmTz93567V"
    "yI1Pqx+ogBJF"
)
_INVALID_STRUCT_CHILD = (
    "eNrtVc1OFEEQ7t2d/VEXWHQlK6z4hyhGdH53d1CDMTExMTGaeOCKZg8E9CBY0cTEPfgIPoBHDh54BA8+xN7g6MED"
    "N046Vs98HZuKsEJMTIw9+eab6qqp7q6pmkqSJPmSU6qm9DiqqqqkiqrCTzxyDsuKpQrfHdyVyjM+4/n99yRhw9E6"
    "Pzcwx+5Sf5qfMT6xzYdE26khbXPW8rPA0O+WGd3nay+Wuqtqm+2/Zn7zNcuvHkUGLa687DJvpTYqdztdr57ur5zu"
    "uIbzqGIN/s37BcZy97V6zPt5mO4pN9S09qT164wVnEHvcXVNqXds28vsq3ud9SnjI9usZ3YFPd+01ta8tNblkJR4"
    "ryW+VLpCP7MvyrNqn09S2UnnsjOWxBmzGDXFe4vpd6syymlc9LQ+Iy+VVPJZTPSoqjF88WrqVRWcdA+VIgw4Exqs"
    "cZATN5Erk+rnOG49VwTL+VfgntAb+Y2yDmHN93LCPifs88Ih5D7EvtAb2by/UNit30s29n3ItyE3nN32Rt625o5Y"
    "cTPuJ8W2B8kTB7QfJO9svk2+7WyOmJDnrVzVKVBCbVawf50Dx9K8ycYwYwQ1MIpcOIGaO8kYM/FgnGKM4ww6X09b"
    "n8rBWiWsdRRrDMP3cfhr4P0JnOUcY4pxiXGFMctwGQGjBcQ6bxnzjDuMu4x7WJtc8sinkCJqUZs6FJPHUx55Pnkh"
    "eRF5LfLa5HXIi8l3yWdzn/yQ/Ij8Fvlt8jvkxxS4FHgU+BSEFEQUtChoU9ChIKbQpdCjkFcJKYwobFHYprBDYUyR"
    "ne4FwI5FGXE/YsWkasXGxH/Uin/div9J6zs0rO+wO4+25pGtgk16O4Kr4JrgOnhMcFPwWfA5wRfAU4KnwTPgK4Kv"
    "gmcFHzyuQ4jniJV3Jqf3i6XJ6UnxC3IG5HTd8jdu+dD/6vPI7WnGZeT3VcY15LjPCJHjHcYc8lyPZZcv7/B38ZtQ"
    "OfXr8a/M/25f3HIO1xedP9wXH5m+JA62IPpiX+iNbPrihuiLG6IvuqIP7iUb+w3IJg+3hb2R/35fzA3qi/Nm/gzq"
    "UaEmL6AuL6I2L6E+Z1CjCnU6i1q9jnr1ULMB6lahdtuo3xg1fMOKRcn6T1XxX5K90O6D+/VCuw/KXnif8cDKq8P2"
    "M5cijyKfIu6oEUUtitoUdSiKf1F3f6/fXUd/cAV7Gfck+9AHgkPoBauW4Db0kjvQx4LnoL8B+abgW9AL/t/vDnX/"
    "l/vafv1O8w9WxRWi"
)
_LIST_OFFSETS_FAR = (
    "eNp1ULsOwjAMvOZRqihDhggxMGTktwAxIMHGx/BJ/QT+JlyMq1aROCk5n+OzrdRa6xtAQkNAxAiPiRExOGpQTbyd"
    "3kwrf+ilipnxYfNWlB88M2sSMr0jdtIt6azBNz6qD8r31+35i51o2utMzloTsdcNo3SDdTL7hAWBOsq2QXdocwxW"
    "ePxHVE5dPnVclO2mxnRz+vfFyppi1xbyV0Zrz5er5Kr8LfAFCjgb8w=="
)


def _payload(encoded: str) -> bytes:
    return zlib.decompress(base64.b64decode(encoded))


@dataclasses.dataclass(frozen=True)
class Repro:
    name: str
    payload: bytes
    code: str  # the error code both protocols must answer with


REPROS = [
    Repro("bad_field_name", _payload(_BAD_FIELD_NAME), "invalid_name"),
    Repro("list_offsets_far", _payload(_LIST_OFFSETS_FAR), "invalid_ipc"),
    Repro("invalid_struct_child", _payload(_INVALID_STRUCT_CHILD), "invalid_ipc"),
]
LOG_ALARMS = ("internal_error", "unexpected error", "Traceback")


def alarms(lines: list[str]) -> list[str]:
    return [line for line in lines if any(alarm in line for alarm in LOG_ALARMS)]


def landed_rows(http: httpx.Client, table: str) -> int:
    """Rows in ``table``; 0 when it does not exist."""
    sql = f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'"
    if not query(http, sql).column("n")[0].as_py():
        return 0
    rows: int = query(http, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py()
    return rows


@pytest.fixture(scope="module", params=["buffered", "streamed"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ArrowportProcess]:
    """A server that buffers small bodies and puts (and group-commits them), or one that streams
    every body and put to DuckDB batch by batch, a put's reader waiting for DuckDB."""
    workdir = tmp_path_factory.mktemp(f"repro-{request.param}")
    config = None
    if request.param == "streamed":
        config = {"limits": {"small_body_bytes": 0}, "flight": {"upload_buffer_bytes": 0}}
    with ArrowportProcess(workdir, config=config) as process:
        yield process


@pytest.fixture
def http(server: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture
def do_put(server: ArrowportProcess) -> Iterator[Callable[..., Iterator[bytes]]]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
    yield open_put(channel)
    channel.close()


# -- the payloads -------------------------------------------------------------------------------


def test_the_payloads_are_what_they_were() -> None:
    """Each stored payload still shows its fault to pyarrow itself (or its field name's bytes)."""
    by_name = {repro.name: repro for repro in REPROS}
    bad_name = pa.ipc.open_stream(by_name["bad_field_name"].payload)
    with pytest.raises(UnicodeDecodeError):
        _ = bad_name.schema.names  # what the server once tripped over
    assert b"col\xc4a" in by_name["bad_field_name"].payload
    for name, message in [
        ("list_offsets_far", "offset for slot 1 out of bounds: 536870914"),
        ("invalid_struct_child", "type string and length 65566"),
    ]:
        batches = list(pa.ipc.open_stream(by_name[name].payload))
        with pytest.raises(pa.ArrowInvalid, match=message):
            batches[-1].validate(full=True)


@pytest.mark.parametrize("repro", REPROS, ids=lambda repro: repro.name)
def test_repro_is_refused_over_http(
    server: ArrowportProcess, http: httpx.Client, repro: Repro
) -> None:
    table = f"repro_http_{repro.name}"
    mark = len(server.lines)
    response = http.post(
        f"/stream/{table}", content=repro.payload, headers={"Content-Type": ARROW_STREAM}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == repro.code, body
    # The connection is still good for the next request.
    assert http.get("/health").status_code == 200
    assert server.alive()
    assert landed_rows(http, table) == 0
    assert alarms(server.lines[mark:]) == []


@pytest.mark.parametrize("repro", REPROS, ids=lambda repro: repro.name)
def test_repro_is_refused_over_flight(
    server: ArrowportProcess,
    http: httpx.Client,
    do_put: Callable[..., Iterator[bytes]],
    repro: Repro,
) -> None:
    table = f"repro_flight_{repro.name}"
    mark = len(server.lines)
    outcome = send(do_put, [frame.encode() for frame in put_frames(repro.payload, table.encode())])
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome.describe()
    assert outcome.details.startswith(f"{repro.code}: "), outcome.describe()
    assert "Traceback" not in outcome.details
    assert server.alive()
    assert server.healthy()
    assert landed_rows(http, table) == 0  # not even the valid rows before the fault
    assert alarms(server.lines[mark:]) == []


def test_repro_pieces_that_are_valid_land(
    server: ArrowportProcess, http: httpx.Client, do_put: Callable[..., Iterator[bytes]]
) -> None:
    """The valid first batch of ``invalid_struct_child`` alone lands: the refusal above is for
    the bad batch, not for the types around it."""
    repro = next(r for r in REPROS if r.name == "invalid_struct_child")
    reader = pa.ipc.open_stream(repro.payload)
    first = reader.read_next_batch()
    first.validate(full=True)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, reader.schema) as writer:
        writer.write_batch(first)
    frames = put_frames(sink.getvalue().to_pybytes(), b"repro_valid_part")
    outcome = send(do_put, [frame.encode() for frame in frames])
    assert outcome.code is None, outcome.describe()
    assert outcome.reply()["rows_processed"] == first.num_rows == 30
    assert landed_rows(http, "repro_valid_part") == 30


# -- dictionaries over Flight ---------------------------------------------------------------------

DICTIONARY_SCHEMA = pa.schema(
    [("id", pa.int64()), ("kind", pa.dictionary(pa.int32(), pa.string()))]
)


def dictionary_table(batches: int, rows: int) -> pa.Table:
    """``batches`` batches whose dictionaries all differ (a new DictionaryBatch before each)."""
    made = []
    for number in range(batches):
        words = [f"word-{number}-{i}" for i in range(number + 2)]
        ids = list(range(number * rows, (number + 1) * rows))
        kind = pa.DictionaryArray.from_arrays(
            pa.array([i % len(words) for i in ids], pa.int32()), pa.array(words)
        )
        made.append(pa.record_batch([pa.array(ids, pa.int64()), kind], DICTIONARY_SCHEMA))
    return pa.Table.from_batches(made, DICTIONARY_SCHEMA)


def ipc_stream(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches():
            writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def expected_rows(table: pa.Table) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = table.to_pylist()
    return rows


# 3 x 60,000 rows are more than a small body: that put is streamed on either server.
@pytest.mark.parametrize("rows", [20, 60_000], ids=["small", "large"])
def test_app_metadata_frame_between_dictionary_and_batch_is_ignored(
    server: ArrowportProcess,
    http: httpx.Client,
    do_put: Callable[..., Iterator[bytes]],
    rows: int,
) -> None:
    table = f"repro_app_metadata_{rows}"
    data = dictionary_table(3, rows)
    frames = put_frames(ipc_stream(data), table.encode())
    with_metadata: list[Frame] = []
    for frame, following in zip(frames, [*frames[1:], None], strict=True):
        with_metadata.append(frame)
        if frame.kind == DICTIONARY_BATCH:
            assert following is not None
            assert following.kind == RECORD_BATCH
            with_metadata.append(Frame(app_metadata=json.dumps({"note": "between"}).encode()))
    assert len(with_metadata) == len(frames) + 3
    mark = len(server.lines)
    outcome: Outcome = send(do_put, [frame.encode() for frame in with_metadata])
    assert outcome.code is None, outcome.describe()
    reply = outcome.reply()
    assert reply["status"] == "success"
    assert reply["rows_processed"] == 3 * rows
    assert server.alive()
    assert server.healthy()
    landed = query(http, f'SELECT id, kind FROM "{table}" ORDER BY id')
    assert landed.to_pylist() == expected_rows(data)
    assert alarms(server.lines[mark:]) == []


@pytest.mark.parametrize("rows", [500, 60_000])
def test_dictionary_put_from_pyarrow_client_is_not_poorly_aligned(
    server: ArrowportProcess, http: httpx.Client, rows: int
) -> None:
    table = f"repro_aligned_{rows}"
    data = dictionary_table(4, rows)
    mark = len(server.lines)
    client = flight.connect(server.flight_url)
    try:
        for _ in range(3):
            writer, reader = client.do_put(flight.FlightDescriptor.for_path(table), data.schema)
            for batch in data.to_batches():
                writer.write_batch(batch)
            writer.done_writing()
            reply = reader.read()
            writer.close()
            assert reply is not None
            assert json.loads(reply.to_pybytes())["rows_processed"] == data.num_rows
    finally:
        client.close()
    assert server.healthy()  # and the server's stderr has been read up to here
    time.sleep(0.3)
    printed = [line for line in server.lines[mark:] if "poorly aligned" in line]
    assert printed == []
    assert landed_rows(http, table) == 3 * data.num_rows
    assert alarms(server.lines[mark:]) == []
