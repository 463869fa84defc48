"""Fuzzing a live server: the OpenAPI contract (schemathesis) and mutated Arrow IPC payloads.

Two fuzzers, both against a real ``arrowport serve`` process:

* **Schema fuzzing** — schemathesis generates requests for every operation in ``/openapi.json``
  (valid ones, and invalid ones where the operation takes a body or query parameters) and checks
  that no answer is a 5xx and that every answer conforms to the schema (status code, content
  type, body).
* **IPC mutation fuzzing** — valid Arrow IPC streams (several types, IPC buffer compression, zstd
  body encoding, a body over 1 MiB that takes the streaming path) are mutated with a seeded
  generator: byte flips, truncations, insertions, deletions, and huge message lengths patched in
  after the ``0xFFFFFFFF`` continuation marker. Each mutant is posted as a binary body and inside
  the JSON format. Every answer must be a 200 or a 4xx with an error body (never a 5xx, never a
  hang), the server must stay healthy, and a table's row count may only grow by what a 200
  reported, which must be the row count of a stream that really decodes.

The number of examples is ``ARROWPORT_FUZZ_EXAMPLES`` (default 40: per schema operation and mode,
and mutants per seed stream); the seed is ``ARROWPORT_FUZZ_SEED``. To fuzz longer::

    ARROWPORT_FUZZ_EXAMPLES=2000 ARROWPORT_FUZZ_SEED=7 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import base64
import os
import random
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
import pytest
import schemathesis
import zstandard
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ARROW_STREAM, query
from tests.server import ArrowportProcess

EXAMPLES = int(os.environ.get("ARROWPORT_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("ARROWPORT_FUZZ_SEED", "1"))
TIMEOUT = 60.0  # a client timeout: an answer slower than this counts as a hang

# The raw IPC body is binary; schemathesis sends whatever bytes it generated for it.
schemathesis.serializer.alias(ARROW_STREAM, "application/octet-stream")


# -- schema fuzzing ------------------------------------------------------------------------------


def _has_inputs(operation: schemathesis.APIOperation) -> bool:
    has_body = operation.body is not None and len(operation.body) > 0
    return has_body or any(p.location == "query" for p in operation.iter_parameters())


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzz_operation(
    operation: schemathesis.APIOperation, mode: GenerationMode, base_url: str
) -> tuple[int, list[str]]:
    """Run ``EXAMPLES`` generated cases; returns the calls made and the failures seen."""
    calls = 0
    failures: list[str] = []

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: schemathesis.Case) -> None:
        nonlocal calls
        response = case.call(base_url=base_url, timeout=TIMEOUT)
        calls += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except AssertionError as exc:  # schemathesis reports failed checks as AssertionErrors
            failures.append(f"{operation.label} ({mode.value}): {case.as_curl_command()}\n{exc}")

    exercise()
    return calls, failures


def test_openapi_operations_never_fail_and_match_their_schema(server: ArrowportProcess) -> None:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    failures: list[str] = []
    calls: dict[tuple[str, str], int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        modes = [GenerationMode.POSITIVE]
        if _has_inputs(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            made, failed = _fuzz_operation(operation, mode, server.url)
            calls[(operation.label, mode.value)] = made
            failures += failed
    assert failures == [], "\n\n".join(failures[:10])
    expected = {
        "POST /stream/{stream_name}",
        "POST /query",
        "GET /health",
        "GET /tables/{name}",
        "GET /streams/{stream_name}/producers/{producer_id}",
    }
    assert expected <= {label for label, _ in calls}, calls
    assert calls[("POST /stream/{stream_name}", "negative")] > 0
    assert calls[("POST /stream/{stream_name}", "positive")] > 0
    assert server.healthy()


# -- IPC mutation fuzzing ------------------------------------------------------------------------


def _ipc(table: pa.Table, batch_rows: int | None = None, compression: str | None = None) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=batch_rows)
    return sink.getvalue().to_pybytes()


def _mixed(rows: int) -> pa.Table:
    ids = list(range(rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": pa.array([f"name-{i}" if i % 7 else None for i in ids], pa.string()),
            "score": pa.array([i / 3 for i in ids], pa.float64()),
            "tags": pa.array([[f"t{i % 5}"] * (i % 3) for i in ids], pa.list_(pa.string())),
            "kind": pa.array([("a", "b", "c")[i % 3] for i in ids]).dictionary_encode(),
            "point": pa.array(
                [{"x": i, "y": -i} for i in ids], pa.struct([("x", pa.int32()), ("y", pa.int32())])
            ),
        }
    )


@dataclass(frozen=True)
class Seed:
    """A valid payload to mutate; ``encoding`` is the HTTP Content-Encoding it is sent with."""

    name: str
    body: bytes
    encoding: str | None = None
    json_too: bool = True

    def decoded(self, body: bytes) -> bytes | None:
        """The IPC bytes inside ``body``, or None if they cannot be recovered."""
        if self.encoding != "zstd":
            return body
        try:
            return zstandard.ZstdDecompressor().decompressobj().decompress(body)
        except zstandard.ZstdError:
            return None


def _seeds() -> list[Seed]:
    big = pa.table(
        {
            "id": pa.array(range(120_000), pa.int64()),
            "value": pa.array([i * 0.5 for i in range(120_000)], pa.float64()),
        }
    )
    return [
        Seed("plain", _ipc(_mixed(50), batch_rows=20)),
        Seed("single_batch", _ipc(pa.table({"id": pa.array(range(10), pa.int64())}))),
        Seed("buffers_zstd", _ipc(_mixed(40), batch_rows=16, compression="zstd")),
        Seed("buffers_lz4", _ipc(_mixed(40), batch_rows=16, compression="lz4")),
        Seed(
            "body_zstd",
            zstandard.ZstdCompressor().compress(_ipc(_mixed(30), batch_rows=10)),
            encoding="zstd",
        ),
        Seed("streamed", _ipc(big, batch_rows=30_000), json_too=False),
    ]


def _continuations(body: bytes) -> list[int]:
    """Offsets of the 4-byte message lengths that follow each 0xFFFFFFFF continuation marker."""
    found = []
    start = 0
    while (at := body.find(b"\xff\xff\xff\xff", start)) >= 0:
        found.append(at + 4)
        start = at + 1
    return found


def _hot_offset(rng: random.Random, body: bytes) -> int:
    """Mostly near the start or a message header, where flips change structure, not values."""
    anchors = _continuations(body) or [0]
    if rng.random() < 0.7:
        return min(len(body) - 1, rng.choice(anchors) + rng.randrange(0, 256))
    return rng.randrange(len(body))


def _flip(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 8)):
        data[_hot_offset(rng, body)] ^= 1 << rng.randrange(8)
    return bytes(data)


def _set_byte(rng: random.Random, body: bytes) -> bytes:
    data = bytearray(body)
    data[_hot_offset(rng, body)] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
    return bytes(data)


def _truncate(rng: random.Random, body: bytes) -> bytes:
    return body[: rng.randrange(len(body))]


def _insert(rng: random.Random, body: bytes) -> bytes:
    at = _hot_offset(rng, body)
    return body[:at] + rng.randbytes(rng.randint(1, 64)) + body[at:]


def _delete(rng: random.Random, body: bytes) -> bytes:
    at = _hot_offset(rng, body)
    return body[:at] + body[at + rng.randint(1, 64) :]


def _duplicate(rng: random.Random, body: bytes) -> bytes:
    at = _hot_offset(rng, body)
    piece = body[at : at + rng.randint(1, 256)]
    return body[:at] + piece + body[at:]


def _huge_length(rng: random.Random, body: bytes) -> bytes:
    lengths = _continuations(body)
    if not lengths:
        return _flip(rng, body)
    at = rng.choice(lengths)
    value = rng.choice([0x7FFFFFFF, 0xFFFFFFF0, 0x40000000, 1 << 24, len(body) * 4, 0x80000000])
    return body[:at] + struct.pack("<I", value & 0xFFFFFFFF) + body[at + 4 :]


def _body_length(rng: random.Random, body: bytes) -> bytes:
    """Patch the 8-byte bodyLength in a message's metadata (found by its current value)."""
    data = bytearray(body)
    for at in _continuations(body):
        if at + 4 > len(body):
            continue
        (meta,) = struct.unpack_from("<I", body, at)
        end = min(at + 4 + meta, len(body) - 8)
        for offset in range(at + 4, end, 8):
            (value,) = struct.unpack_from("<q", body, offset)
            if 0 < value < len(body) and rng.random() < 0.5:
                struct.pack_into("<q", data, offset, rng.choice([1 << 40, 1 << 62, -8, value * 64]))
                return bytes(data)
    return _huge_length(rng, body)


MUTATIONS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip,
    _set_byte,
    _truncate,
    _insert,
    _delete,
    _duplicate,
    _huge_length,
    _body_length,
]


def _local_rows(body: bytes) -> int | None:
    """Rows pyarrow itself decodes from ``body`` (fully validated), or None if it cannot."""
    try:
        table = pa.ipc.open_stream(body).read_all()
        table.validate(full=True)
    except Exception:  # any failure means: not a valid stream
        return None
    return table.num_rows


def _mutants(seed: Seed, count: int, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for number in range(count):
        mutate = rng.choice(MUTATIONS)
        body = seed.body
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            body = mutate(rng, body) if body else body
        yield f"{seed.name}#{number}:{mutate.__name__}", body


@dataclass
class Ledger:
    """Rows a table must hold: exactly what the 200 answers reported."""

    expected: dict[str, int]
    accepted: int = 0
    refused: int = 0


def _check_answer(
    http: httpx.Client,
    ledger: Ledger,
    label: str,
    table: str,
    response: httpx.Response,
    decodable_rows: int | None,
) -> None:
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text}"
    assert response.status_code != 408, f"{label}: {response.text}"
    body: dict[str, Any] = response.json()
    if response.status_code == 200:
        ledger.accepted += 1
        rows = body["rows_processed"]
        assert decodable_rows is not None, f"{label}: accepted a stream pyarrow cannot decode"
        assert rows == decodable_rows, f"{label}: {rows} rows, the stream holds {decodable_rows}"
        ledger.expected[table] = ledger.expected.get(table, 0) + rows
    else:
        ledger.refused += 1
        assert 400 <= response.status_code < 500, f"{label}: {response.status_code}"
        assert body["status"] == "error", f"{label}: {body}"
        assert isinstance(body["code"], str), f"{label}: {body}"
        assert isinstance(body["message"], str), f"{label}: {body}"
    sql = f"SELECT count(*) AS n FROM information_schema.tables WHERE table_name = '{table}'"
    if query(http, sql).column("n")[0].as_py():
        landed = query(http, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py()
    else:
        landed = 0
    assert landed == ledger.expected.get(table, 0), f"{label}: table {table} holds {landed} rows"


@pytest.mark.parametrize("seed", _seeds(), ids=lambda seed: seed.name)
def test_mutated_ipc_is_refused_cleanly(fresh_server: ArrowportProcess, seed: Seed) -> None:
    server = fresh_server  # one server per seed stream: a crash shows up in one test only
    rng = random.Random(f"{SEED}:{seed.name}")
    table = f"fuzz_{seed.name}"
    ledger = Ledger(expected={})
    count = EXAMPLES if seed.json_too else max(6, EXAMPLES // 4)
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        # The unmutated payload is accepted, so later mutants append to an existing table.
        for label, body in [(f"{seed.name}:original", seed.body), *_mutants(seed, count, rng)]:
            ipc = seed.decoded(body) if body else None
            decodable = _local_rows(ipc) if ipc else None
            headers = {"Content-Type": ARROW_STREAM}
            if seed.encoding:
                headers["Content-Encoding"] = seed.encoding
            response = http.post(f"/stream/{table}", content=body, headers=headers)
            _check_answer(http, ledger, label + " (binary)", table, response, decodable)
            if label.endswith(":original"):
                assert response.status_code == 200, response.text
            if seed.json_too:
                document = {
                    "config": {"target_table": table},
                    "batch": {"data": base64.b64encode(body).decode()},
                }
                response = http.post(f"/stream/{table}", json=document)
                _check_answer(http, ledger, label + " (json)", table, response, decodable)
        assert http.get("/health").status_code == 200
    print(f"\nfuzz {seed.name}: {ledger.accepted} accepted, {ledger.refused} refused")
    assert ledger.refused > 0


def test_stream_cut_at_a_batch_boundary_is_refused(server: ArrowportProcess) -> None:
    """A prefix that ends exactly after a batch decodes, but lacks the end-of-stream marker."""
    body = _ipc(pa.table({"id": pa.array(range(60), pa.int64())}), batch_rows=20)
    markers = [at - 4 for at in _continuations(body)]
    assert len(markers) == 5  # schema, three batches, end-of-stream
    assert body[markers[-1] :] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as http:
        for cut in markers[1:]:
            response = http.post(
                "/stream/fuzz_cut", content=body[:cut], headers={"Content-Type": ARROW_STREAM}
            )
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "truncated_stream"
        sql = "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'fuzz_cut'"
        assert query(http, sql).column("n")[0].as_py() == 0
