"""Per-stream metrics keep a bounded number of labels, whatever streams clients name."""

from __future__ import annotations

from prometheus_client import generate_latest

from arrowport.metrics import MAX_STREAM_LABELS, OTHER_STREAMS, Metrics


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
