"""The seed's JSON body read as it arrives, fed in chunks of every size (the transport's seam)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pytest

from arrowport.errors import ArrowportError, InvalidBase64, InvalidJSON, PayloadTooLarge
from arrowport.ingest.seed_json import SeedJsonReader
from tests.conftest import ipc_bytes

PAYLOAD = ipc_bytes(pa.table({"id": list(range(50)), "s": [f"v{i}" for i in range(50)]}))
ENCODED = base64.b64encode(PAYLOAD).decode()


async def pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def body_of(data: str, config_first: bool = True, tail: str = "") -> bytes:
    config = '"config": {"target_table": "t"}'
    batch = f'"batch": {{"data": "{data}"{tail}}}'
    parts = [config, batch] if config_first else [batch, config]
    return ("{" + ", ".join(parts) + "}").encode()


def read(
    body: bytes, size: int, limit: int = 10**9, held: list[int] | None = None
) -> tuple[Any, bytes | None, list[Any]]:
    """What the reader makes of ``body`` sent in ``size``-byte chunks: the document it opened
    with, the decoded payload (None: read whole instead), and the documents checked; ``held``
    gets each count of bytes the reader said it kept."""
    checked: list[Any] = []
    holds = held if held is not None else []

    async def run() -> tuple[Any, bytes | None]:
        reader = SeedJsonReader(pieces(body, size), limit, holds.append)
        document = await reader.open()
        if document is None:
            return json.loads(await reader.whole()), None
        data = b"".join([chunk async for chunk in reader.decoded(checked.append)])
        return document, data

    document, data = asyncio.run(run())
    return document, data, checked


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1000, 10**6])
def test_the_payload_is_decoded_whatever_the_chunks(size: int) -> None:
    document, data, checked = read(body_of(ENCODED), size)
    assert data == PAYLOAD
    assert document == {"config": {"target_table": "t"}, "batch": {"data": ""}}
    assert checked == [document]


@pytest.mark.parametrize("size", [1000, 65536, 10**6])
def test_what_is_kept_is_counted_and_what_streams_is_not(size: int) -> None:
    """A streamed body keeps what surrounds ``batch.data`` and the payload's first MiB (to
    check a late ``arrow_schema`` against); one read whole keeps all of it."""
    large = base64.b64encode(b"\x00" * 3_000_000).decode()
    streamed: list[int] = []
    _, data, _ = read(body_of(large, tail=', "note": "after"'), size, held=streamed)
    assert data is not None
    assert 0 < sum(streamed) <= 1024**2 + 200 + size
    whole: list[int] = []
    body = body_of(large, config_first=False)
    _, data, _ = read(body, size, held=whole)
    assert data is None
    assert sum(whole) == len(body)


@pytest.mark.parametrize("size", [1, 3, 64])
def test_escaped_slashes_are_undone_even_across_chunks(size: int) -> None:
    assert "/" in ENCODED
    _, data, _ = read(body_of(ENCODED.replace("/", "\\/")), size)
    assert data == PAYLOAD


def test_what_follows_the_payload_is_parsed_and_checked() -> None:
    _, data, checked = read(body_of(ENCODED, tail=', "arrow_schema": "abc"'), 7)
    assert data == PAYLOAD
    assert checked == [
        {"config": {"target_table": "t"}, "batch": {"data": "", "arrow_schema": "abc"}}
    ]


def test_a_body_with_config_after_the_payload_is_read_whole() -> None:
    document, data, _ = read(body_of(ENCODED, config_first=False), 64)
    assert data is None
    assert document["batch"]["data"] == ENCODED


def test_a_body_without_the_seed_shape_is_read_whole() -> None:
    body = json.dumps({"config": {"data": ENCODED}, "batch": {"data": "AAAA"}}).encode()
    document, data, _ = read(body, 64)
    assert data is None
    assert document["config"]["data"] == ENCODED


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (ENCODED[:100] + "!" + ENCODED[101:], InvalidBase64, "Non-base64"),
        (base64.b64encode(b"ab").decode() + ENCODED, InvalidBase64, "not valid base64"),
        (ENCODED[:-1], InvalidBase64, "multiple of 4"),
        (ENCODED[:40] + "\\n" + ENCODED[40:], InvalidBase64, "escape"),
    ],
)
def test_bad_base64_is_refused_as_it_is_met(
    data: str, error: type[ArrowportError], words: str
) -> None:
    with pytest.raises(error, match=words):
        read(body_of(data), 5)


def test_padding_between_two_pieces_is_refused() -> None:
    # Each 4-character group is valid alone; "YWI=" ends one piece, more text follows it.
    with pytest.raises(InvalidBase64, match="padding before its end"):
        read(body_of("QUJD" * 4 + "YWI=" + ENCODED), 1)


def test_a_body_cut_inside_the_payload_or_after_it_is_invalid_json() -> None:
    whole = body_of(ENCODED)
    with pytest.raises(InvalidJSON, match=r"ends inside batch\.data"):
        read(whole[:-100], 64)
    with pytest.raises(InvalidJSON):
        read(whole[:-1], 64)


def test_the_body_limit_holds_while_streaming() -> None:
    with pytest.raises(PayloadTooLarge):
        read(body_of(ENCODED), 64, limit=len(ENCODED) // 2)
