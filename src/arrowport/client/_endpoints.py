"""The read endpoints as calls and parsed answers, shared by both clients."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import httpx
import pyarrow as pa

from arrowport.client._errors import RequestError
from arrowport.client._http import ARROW_STREAM, Call, json_body, path_part
from arrowport.client._models import ProducerOffset, StreamInfo, TableInfo
from arrowport.errors import ArrowportError
from arrowport.options import IngestRequest, check_table_name

QueryFormat = Literal["arrow", "csv", "json"]
_ACCEPT: dict[str, str] = {"arrow": ARROW_STREAM, "csv": "text/csv", "json": "application/json"}


def query(sql: str, params: Sequence[Any] | None, format: QueryFormat) -> Call:
    if format not in _ACCEPT:
        raise ValueError(f"format must be one of {', '.join(_ACCEPT)}, not {format!r}")
    body: dict[str, Any] = {"sql": sql}
    if params is not None:
        body["params"] = _parameters(params)
    try:
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError(
            "query parameters must be JSON values, and JSON has no NaN or infinity: pass such a "
            "number as text ('NaN', 'inf') and cast it in the SQL (?::DOUBLE)"
        ) from None
    except TypeError as exc:  # a date, a Decimal, bytes...: json names the type
        raise ValueError(
            "query parameters must be JSON values (None, booleans, numbers, text, lists and "
            f"dicts of them): {exc}; pass such a value as text (str(value)) and cast it in the "
            "SQL (?::DATE, ?::DECIMAL(18, 3))"
        ) from None
    try:
        content = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            "the SQL and its parameters must be valid Unicode text, without lone surrogates "
            f"such as {exc.object[exc.start]!r} (what bytes that are not UTF-8 decode to)"
        ) from None
    headers = {"Accept": _ACCEPT[format], "Content-Type": "application/json"}
    return Call("POST", "/query", content=content, headers=headers, retry_timeouts=False)


def _parameters(params: Sequence[Any]) -> list[Any]:
    """The values for the placeholders, in order. A mapping or text is refused: listed, it
    would bind its keys or its characters, one to each placeholder."""
    if isinstance(params, str | bytes | bytearray | Mapping):
        raise TypeError(
            "params must be a list of values, one for each ? or $n placeholder in order, not a "
            f"{type(params).__name__}"
        )
    return list(params)


def arrow_table(response: httpx.Response) -> pa.Table:
    try:
        return pa.ipc.open_stream(response.content).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(
            "http_error", response.status_code, f"the answer is not an Arrow IPC stream: {exc}"
        ) from None


def tables() -> Call:
    return Call("GET", "/tables")


def parse_tables(response: httpx.Response) -> list[TableInfo]:
    return [TableInfo.from_json(item) for item in json_body(response)]


def table(name: str) -> Call:
    if not name:  # no table has an empty name, and the server could not be asked for one
        _refuse(lambda: check_table_name(name))
    return Call("GET", f"/tables/{path_part(name)}")


def parse_table(response: httpx.Response) -> TableInfo:
    return TableInfo.from_json(json_body(response))


def streams() -> Call:
    return Call("GET", "/streams")


def parse_streams(response: httpx.Response) -> list[StreamInfo]:
    return [StreamInfo.from_json(item) for item in json_body(response)]


def stream(name: str) -> Call:
    if not name:  # the server could not be asked for it
        _refuse(lambda: IngestRequest(name))
    return Call("GET", f"/streams/{path_part(name)}")


def parse_stream(response: httpx.Response) -> StreamInfo:
    return StreamInfo.from_json(json_body(response))


def unserved(error: RequestError) -> bool:
    """Whether ``error`` is a server's answer to a path it does not serve at all (an older
    version's), not its refusal of what was asked."""
    return error.status == 404 and error.code == "not_found"


def producer(stream: str, producer_id: str) -> Call:
    if not stream or not producer_id:  # the server could not be asked for them
        _refuse(lambda: IngestRequest(stream, producer_id=producer_id, sequence=0))
    return Call("GET", f"/streams/{path_part(stream)}/producers/{path_part(producer_id)}")


def parse_producer(response: httpx.Response) -> ProducerOffset:
    return ProducerOffset.from_json(json_body(response))


def health() -> Call:
    return Call("GET", "/health")


def parse_health(response: httpx.Response) -> dict[str, Any]:
    body = json_body(response)
    return dict(body) if isinstance(body, dict) else {"status": body}


def _refuse(check: Callable[[], object]) -> None:
    """Run one of the server's own checks of a name before sending: what it refuses raises
    :class:`RequestError` with the code and message the server would answer."""
    try:
        check()
    except ArrowportError as exc:
        raise RequestError(exc.code, exc.status, exc.message, exc.details) from None
