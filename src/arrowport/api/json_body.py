"""The seed's JSON/base64 body of ``POST /stream/{stream_name}``.

A large body is read as it arrives (:mod:`arrowport.ingest.seed_json`): its options first, then
its ``batch.data`` decoded on the way into DuckDB, so that it is never held in memory. A small
body, or one that cannot be read that way (``config`` after ``batch.data``), is read whole and
parsed; a large payload inside it is then still decoded as DuckDB reads it
(:class:`~arrowport.ingest.bodies.Base64Body`), never into a second copy.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pybase64
from fastapi import Request
from pydantic import ValidationError

from arrowport.api.errors import invalid_options
from arrowport.api.models import StreamConfig, StreamRequest
from arrowport.auth import Principal
from arrowport.errors import (
    InvalidBase64,
    InvalidIPC,
    InvalidOptions,
    PayloadTooLarge,
    SchemaMismatch,
)
from arrowport.ingest.admission import Reservation
from arrowport.ingest.bodies import Base64Body, Body, BytesBody
from arrowport.ingest.payload import sniff_codec
from arrowport.ingest.pipe import read_body, receive
from arrowport.ingest.seed_json import DATA_KEY, SeedJsonReader, loads, off_the_loop, parse_json
from arrowport.ingest.service import IngestService
from arrowport.options import IngestReply, IngestRequest, canonical_table

# Only bodies this large are worth the shortcut of :func:`_load_document`.
_SPLICE_BYTES = 1024**2


async def ingest_json(
    ingest: IngestService,
    asked: IngestRequest,
    request: Request,
    principal: Principal,
    client: str | None,
    declared: int | None,
) -> IngestReply:
    """Land a JSON body whose ``Content-Length`` is ``declared`` (None: sent chunked)."""
    limits = ingest.settings.limits
    limit = limits.max_json_body_bytes
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", limit=limit)
    # What is held in memory counts from its first byte: what comes before batch.data, and a
    # body that has to be read whole, however it is sent.
    with ingest.admission.reserving() as held:
        if declared is None or declared > limits.small_body_bytes:
            reader = SeedJsonReader(receive(request.stream(), ingest.pace()), limit, held.grow)
            document = await reader.open()
            if document is not None:
                return await _ingest_streamed(
                    ingest, asked, principal, client, reader, document, held
                )
            read_whole = reader.whole
        else:
            held.grow(declared)

            async def read_whole() -> bytearray:
                return await read_body(request.stream(), ingest.pace(), limit, declared)

        body = await read_whole()
        parsed, data = await off_the_loop(_decode, body)
        # A large payload is read from the body itself (a view of it), which lives until the
        # write ends.
        del body
        schema = _declared_schema(parsed.batch.arrow_schema)
        options = ingest.streams.resolve(_with_config(asked, parsed.config), principal)
        return await ingest.ingest_bytes(options, data, client, expected_schema=schema)


async def _ingest_streamed(
    ingest: IngestService,
    asked: IngestRequest,
    principal: Principal,
    client: str | None,
    reader: SeedJsonReader,
    document: dict[str, Any],
    held: Reservation,
) -> IngestReply:
    parsed = _validated(document)
    schema = _declared_schema(parsed.batch.arrow_schema)
    options = ingest.streams.resolve(_with_config(asked, parsed.config), principal)

    def check(whole: Any) -> None:
        """The whole document must be the one the write started from (a key repeated after
        ``batch.data`` must not change it); an ``arrow_schema`` after ``batch.data`` is
        checked against the stream."""
        late = _declared_schema(_validated(whole).batch.arrow_schema) if schema is None else None
        same = _without_schema(whole) == _without_schema(document) if late else whole == document
        if not same:
            raise InvalidOptions(
                "the JSON body repeats a key after batch.data with another value; send config "
                "and batch.arrow_schema once, before batch.data"
            )
        if late is not None:
            sent = reader.stream_schema()
            if sent is None:
                raise InvalidOptions(
                    "batch.arrow_schema comes after batch.data, whose own schema cannot be read "
                    "back to check it (compressed, or over 1 MiB); send it before batch.data"
                )
            if not sent.equals(late):
                raise SchemaMismatch(
                    "batch.arrow_schema does not match the schema inside batch.data: "
                    f"declared {late.names}, sent {sent.names}"
                )

    return await ingest.ingest_pipe(
        options,
        reader.decoded(check),
        reader.codec,
        client,
        expected_schema=schema,
        paced=True,
        held=held,
    )


def _without_schema(document: dict[str, Any]) -> dict[str, Any]:
    batch = {k: v for k, v in document["batch"].items() if k != "arrow_schema"}
    return {**document, "batch": batch}


def _with_config(asked: IngestRequest, config: StreamConfig) -> IngestRequest:
    """The options of the query parameters and headers with those of the JSON body's config;
    delivery options stay there. An option given both ways must be given the same: which one
    was meant cannot be guessed (422 invalid_options)."""
    from_body: dict[str, Any] = {
        "table": config.target_table,
        "mode": config.mode,
        "chunk_size": config.chunk_size,
        "key_columns": tuple(config.key_columns) if config.key_columns else None,
        "schema_policy": config.schema_policy,
        "duplicate_keys": config.duplicate_keys,
        "dry_run": config.dry_run or None,
    }
    chosen: dict[str, Any] = {}
    for name, value in from_body.items():
        if value is None:
            continue
        given = getattr(asked, name)
        if given not in (None, False) and _meaning(name, given) != _meaning(name, value):
            body_name = "target_table" if name == "table" else name
            raise InvalidOptions(
                f"{name} is {given!r} in the request's parameters or headers but "
                f"config.{body_name} is {value!r} in the JSON body: give it once, or the same",
                field=name,
            )
        chosen[name] = value
    return replace(asked, **chosen)


def _meaning(name: str, value: Any) -> Any:
    """What an option names, for comparing two spellings of it: DuckDB's names are
    case-insensitive, ``main.t`` is ``t``, and upsert keys are a set."""
    if name == "table":
        return canonical_table(value).lower()
    if name == "key_columns":
        return sorted(column.lower() for column in value)
    return value


def _validated(document: Any) -> StreamRequest:
    try:
        return StreamRequest.model_validate(document)
    except ValidationError as exc:
        raise invalid_options(exc) from None


def _load_document(body: bytes | bytearray) -> tuple[Any, memoryview | None]:
    """Parse the JSON body; for a large one, without copying its base64 payload.

    Parsing a 54 MB JSON string costs ~140 ms, most of it copying the base64 text. Base64 has no
    quote or backslash, so when ``"data": "`` appears once and its value is plain base64 up to
    the next quote, the value is cut out (left as a view of the body), the rest is parsed as
    usual, and the result is checked to be the batch's data. Anything unusual falls back to a
    full parse, so the outcome is always that of a full parse.
    """
    if len(body) >= _SPLICE_BYTES:
        match = DATA_KEY.search(body)
        end = body.find(b'"', match.end()) if match is not None else -1
        # The key must appear once (base64 has no quote, so only the text after the payload
        # needs a look) and the payload must hold no backslash, which would be a JSON escape
        # (e.g. "\\/") for the full parser.
        if (
            match is not None
            and end > 0
            and DATA_KEY.search(body, end) is None
            and body.find(b"\\", match.end(), end) < 0
        ):
            try:
                document = loads(body[: match.end()] + body[end:])
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                document = None
            batch = document.get("batch") if isinstance(document, dict) else None
            if isinstance(batch, dict) and batch.get("data") == "":
                return document, memoryview(body)[match.end() : end]
    return parse_json(body), None


def _decode(body: bytes | bytearray) -> tuple[StreamRequest, Body]:
    document, payload = _load_document(body)
    parsed = _validated(document)
    if payload is not None:
        # Decoded as it is read: a large payload is never held twice.
        return parsed, Base64Body(payload)
    try:
        # pybase64 (SIMD) decodes ~10x faster than the standard library: 54 MB in ~30 ms.
        decoded = pybase64.b64decode(parsed.batch.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"batch.data is not valid base64: {exc}") from None
    return parsed, BytesBody(decoded, sniff_codec(decoded[:4]))


def _declared_schema(text: str | None) -> pa.Schema | None:
    """``batch.arrow_schema``, decoded."""
    if not text:
        return None
    try:
        raw = pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"batch.arrow_schema is not valid base64: {exc}") from None
    try:
        return pa.ipc.read_schema(pa.py_buffer(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise InvalidIPC(f"batch.arrow_schema is not a serialized Arrow schema: {exc}") from None
