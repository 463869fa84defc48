"""The Python client of Arrowport: land Arrow data exactly once, and read it back.

Example::

    import pyarrow as pa
    from arrowport.client import Client

    with Client("http://127.0.0.1:8000", token="ap_loader_...") as client:
        summary = client.ingest("events", pa.table({"id": [1, 2, 3]}), table="events")
        print(summary.rows)                                   # 3
        print(client.query("SELECT count(*) AS n FROM events").to_pylist())

:class:`Client` blocks; :class:`AsyncClient` has the same methods for ``asyncio``. Failures
raise :class:`ArrowportClientError` (:class:`TransientError` once retries are used up,
:class:`RequestError` when the server refused the request as it is).

Importing this package loads the client alone (httpx, pyarrow), never the server.
"""

from arrowport.client._async import AsyncClient
from arrowport.client._endpoints import QueryFormat
from arrowport.client._errors import (
    ArrowportClientError,
    ConnectionFailed,
    RequestError,
    TransientError,
)
from arrowport.client._ingest import DEFAULT_REQUEST_BYTES, DEFAULT_REQUEST_ROWS, IngestSummary
from arrowport.client._models import ColumnInfo, ProducerOffset, StreamInfo, TableInfo
from arrowport.client._retry import RetryPolicy
from arrowport.client._sync import DEFAULT_URL, Client

__all__ = [
    "DEFAULT_REQUEST_BYTES",
    "DEFAULT_REQUEST_ROWS",
    "DEFAULT_URL",
    "ArrowportClientError",
    "AsyncClient",
    "Client",
    "ColumnInfo",
    "ConnectionFailed",
    "IngestSummary",
    "ProducerOffset",
    "QueryFormat",
    "RequestError",
    "RetryPolicy",
    "StreamInfo",
    "TableInfo",
    "TransientError",
]
