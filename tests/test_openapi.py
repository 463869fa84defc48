"""The OpenAPI document a real server serves is valid, complete and says what the server enforces.

Valid: it passes an OpenAPI 3.1 validator, every ``$ref`` resolving. Complete: every operation
lists the statuses it can answer with. Honest: path patterns and option enums are the ones the
server enforces, so a request built from the document is not refused for its shape (schemathesis
fuzzes the live server against this document in ``tests/test_fuzz.py``).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pyarrow as pa
from openapi_spec_validator import validate

from arrowport.options import DUPLICATE_KEYS_POLICIES, SCHEMA_POLICIES, WRITE_MODES
from tests.conftest import ipc_bytes, post_binary
from tests.server import ArrowportProcess

# What each operation can answer: 403 everywhere (a browser's foreign origin), 401 where a
# token is needed once tokens are configured.
STATUSES = {
    ("post", "/stream/{stream_name}"): {200, 400, 401, 403, 404, 408, 409, 413, 415, 422, 503, 507},
    ("post", "/query"): {200, 400, 401, 403, 408, 413, 415, 422, 503},
    ("get", "/tables"): {200, 401, 403, 503},
    ("get", "/tables/{name}"): {200, 400, 401, 403, 404, 503},
    ("get", "/streams"): {200, 401, 403},
    ("get", "/streams/{stream_name}"): {200, 400, 401, 403, 404},
    ("get", "/streams/{stream_name}/producers/{producer_id}"): {200, 400, 401, 403, 404, 422, 503},
    ("get", "/health"): {200, 403},
    ("get", "/ready"): {200, 403, 503},
}


def document(server: ArrowportProcess) -> dict[str, Any]:
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def test_the_document_is_valid_and_every_reference_resolves(server: ArrowportProcess) -> None:
    doc = document(server)
    validate(doc)
    schemas = doc["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(doc).replace("'", '"')):
        assert ref in schemas, ref


def test_every_operation_lists_every_status_it_answers_with(server: ArrowportProcess) -> None:
    doc = document(server)
    found = {
        (method, path): {int(status) for status in operation["responses"]}
        for path, operations in doc["paths"].items()
        for method, operation in operations.items()
    }
    assert found == STATUSES
    error = {"$ref": "#/components/schemas/ErrorResponse"}
    for (method, path), statuses in STATUSES.items():
        responses = doc["paths"][path][method]["responses"]
        for status in statuses - {200}:
            assert responses[str(status)]["content"]["application/json"]["schema"] == error


def test_names_and_options_carry_the_rules_the_server_enforces(server: ArrowportProcess) -> None:
    doc = document(server)
    ingest = doc["paths"]["/stream/{stream_name}"]["post"]
    parameters = {p["name"]: p["schema"] for p in ingest["parameters"]}
    stream_pattern = re.compile(parameters["stream_name"]["pattern"])
    assert stream_pattern.fullmatch("events-v2")
    assert not stream_pattern.fullmatch("bad name")
    assert re.compile(parameters["table"]["pattern"]).fullmatch("events_raw")
    assert not re.compile(parameters["table"]["pattern"]).fullmatch("events-raw")
    assert parameters["mode"]["enum"] == list(WRITE_MODES)
    assert parameters["schema_policy"]["enum"] == list(SCHEMA_POLICIES)
    assert parameters["duplicate_keys"]["enum"] == list(DUPLICATE_KEYS_POLICIES)
    body = ingest["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/StreamRequest"}
    config = doc["components"]["schemas"]["StreamConfig"]["properties"]
    assert "pattern" in config["target_table"]


def test_a_request_built_from_the_document_is_accepted(server: ArrowportProcess) -> None:
    # The stream name the document allows (dots and dashes) is one the server takes.
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = post_binary(
            http,
            "events-v2.raw",
            ipc_bytes(pa.table({"id": [1, 2]})),
            params={"table": "events_v2", "mode": "append", "schema_policy": "evolve"},
        )
        assert response.status_code == 200, response.text
        assert response.json()["table"] == "events_v2"
