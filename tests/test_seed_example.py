"""The seed README's "Send data using Python" example, byte for byte (only the port differs)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import query
from tests.server import ArrowportProcess

# Copied verbatim from the seed README ("Send data using Python").
SEED_EXAMPLE = """\
import pyarrow as pa
import requests
import base64

# Create sample data
data = pa.table({'a': [1, 2, 3], 'b': ['foo', 'bar', 'baz']})

# Convert to IPC format
sink = pa.BufferOutputStream()
writer = pa.ipc.new_stream(sink, data.schema)
writer.write_table(data)
writer.close()

# Send to Arrowport
response = requests.post(
    "http://localhost:8000/stream/my_stream",
    json={
        "config": {
            "target_table": "my_table",
            "compression": {"algorithm": "zstd", "level": 3}
        },
        "batch": {
            "arrow_schema": base64.b64encode(data.schema.serialize()).decode(),
            "data": base64.b64encode(sink.getvalue().to_pybytes()).decode()
        }
    }
)
"""


def test_seed_python_example(server: ArrowportProcess) -> None:
    source = SEED_EXAMPLE.replace("http://localhost:8000/", f"http://localhost:{server.port}/")
    assert source.count(str(server.port)) >= 1
    namespace: dict[str, Any] = {}
    exec(compile(source, "seed-example", "exec"), namespace)
    response = namespace["response"]

    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body)[:4] == ["status", "stream", "rows_processed", "message"]
    assert body["status"] == "success"
    assert body["stream"] == "my_stream"
    assert body["rows_processed"] == 3
    assert isinstance(body["message"], str)
    assert body["message"]

    with httpx.Client(base_url=server.url) as client:
        rows = query(client, "SELECT a, b FROM my_table ORDER BY a").to_pylist()
        assert rows == [{"a": 1, "b": "foo"}, {"a": 2, "b": "bar"}, {"a": 3, "b": "baz"}]
        described = client.get("/tables/my_table").json()
        assert [(c["name"], c["type"]) for c in described["columns"]] == [
            ("a", "BIGINT"),
            ("b", "VARCHAR"),
        ]
        assert client.get("/tables/my_stream").status_code == 404


def test_seed_example_twice_appends(server: ArrowportProcess) -> None:
    """Running the example again appends the same three rows (the seed's default mode)."""
    import base64

    import pyarrow as pa
    import requests

    data = pa.table({"a": [1, 2, 3], "b": ["foo", "bar", "baz"]})
    sink = pa.BufferOutputStream()
    writer = pa.ipc.new_stream(sink, data.schema)
    writer.write_table(data)
    writer.close()
    payload = {
        "config": {"target_table": "seed_twice", "compression": {"algorithm": "zstd", "level": 3}},
        "batch": {
            "arrow_schema": base64.b64encode(data.schema.serialize()).decode(),
            "data": base64.b64encode(sink.getvalue().to_pybytes()).decode(),
        },
    }
    for _ in range(2):
        response = requests.post(f"{server.url}/stream/my_stream", json=payload, timeout=30)
        assert response.status_code == 200, response.text
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/tables/seed_twice").json()["row_count"] == 6
