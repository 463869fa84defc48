"""The read endpoints as calls and parsed answers, shared by both clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import httpx
import pyarrow as pa

from arrowport.client._errors import RequestError
from arrowport.client._http import ARROW_STREAM, Call, json_body, path_part
from arrowport.client._models import ProducerOffset, StreamInfo, TableInfo

QueryFormat = Literal["arrow", "csv", "json"]
_ACCEPT: dict[str, str] = {"arrow": ARROW_STREAM, "csv": "text/csv", "json": "application/json"}


def query(sql: str, params: Sequence[Any] | None, format: QueryFormat) -> Call:
    if format not in _ACCEPT:
        raise ValueError(f"format must be one of {', '.join(_ACCEPT)}, not {format!r}")
    body: dict[str, Any] = {"sql": sql}
    if params is not None:
        body["params"] = list(params)
    return Call("POST", "/query", json=body, headers={"Accept": _ACCEPT[format]})


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
    return Call("GET", f"/tables/{path_part(name)}")


def parse_table(response: httpx.Response) -> TableInfo:
    return TableInfo.from_json(json_body(response))


def streams() -> Call:
    return Call("GET", "/streams")


def parse_streams(response: httpx.Response) -> list[StreamInfo]:
    return [StreamInfo.from_json(item) for item in json_body(response)]


def producer(stream: str, producer_id: str) -> Call:
    return Call("GET", f"/streams/{path_part(stream)}/producers/{path_part(producer_id)}")


def parse_producer(response: httpx.Response) -> ProducerOffset:
    return ProducerOffset.from_json(json_body(response))


def health() -> Call:
    return Call("GET", "/health")


def parse_health(response: httpx.Response) -> dict[str, Any]:
    body = json_body(response)
    return dict(body) if isinstance(body, dict) else {"status": body}
