"""The server starts, answers the seed's example and reads the rows back."""

from __future__ import annotations

import httpx
import pyarrow as pa

from tests.conftest import ARROW_STREAM, ipc_bytes, query


def test_binary_roundtrip(client: httpx.Client) -> None:
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    response = client.post(
        "/stream/smoke", content=ipc_bytes(table), headers={"Content-Type": ARROW_STREAM}
    )
    assert response.status_code == 200, response.text
    assert response.json()["rows_processed"] == 3
    assert query(client, "SELECT * FROM smoke ORDER BY a").to_pylist() == table.to_pylist()
