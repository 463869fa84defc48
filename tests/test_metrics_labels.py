"""Metric labels: per-stream metrics keep a bounded number, whatever streams clients name;
requests are timed under the route they were served by."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from arrowport.metrics import MAX_STREAM_LABELS, OTHER_STREAMS, Metrics
from tests.server import ArrowportProcess


def test_streams_past_the_label_bound_are_counted_together() -> None:
    metrics = Metrics()
    extra = 25
    for number in range(MAX_STREAM_LABELS + extra):
        metrics.record_ingest(f"s{number}", rows=2, batches=1, size=10)
    metrics.record_ingest("s0", rows=3, batches=1, size=10)  # a labelled stream keeps its own
    lines = [
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("arrowport_ingested_rows_total{")
    ]
    assert len(lines) == MAX_STREAM_LABELS + 1
    assert f'arrowport_ingested_rows_total{{stream="{OTHER_STREAMS}"}} {2.0 * extra}' in lines
    assert 'arrowport_ingested_rows_total{stream="s0"} 5.0' in lines
    assert not any(f'stream="s{MAX_STREAM_LABELS}"' in line for line in lines)


def test_the_docs_are_timed_under_their_own_routes(tmp_path: Path) -> None:
    """FastAPI's own docs routes named no route: their 200s were timed as ``unmatched``, the
    label of paths the server does not serve."""
    with ArrowportProcess(tmp_path) as server, httpx.Client(base_url=server.url) as http:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert http.get(path).status_code == 200
        assert http.get("/nowhere").status_code == 404
        text = http.get("/metrics").text
    timed = {
        (sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "arrowport_request_duration_seconds_count"
    }
    assert {("/docs", "200"), ("/redoc", "200"), ("/openapi.json", "200")} <= timed
    assert [status for route, status in timed if route == "unmatched"] == ["404"]
