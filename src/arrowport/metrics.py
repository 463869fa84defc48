"""Prometheus registry and the metric objects (one registry per server, so tests can run many)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Streams counted under their own label, in the order they first commit: any client with the
# ingest scope may name new streams, and each label is kept for the process's life (memory, and
# every scrape's size). Later streams are counted together under OTHER_STREAMS, a label no
# stream can have.
MAX_STREAM_LABELS = 1000
OTHER_STREAMS = "(other)"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._stream_labels: set[str] = set()
        self.rows = Counter(
            "arrowport_ingested_rows",
            "Rows committed, per stream.",
            ["stream"],
            registry=self.registry,
        )
        self.bytes = Counter(
            "arrowport_ingested_bytes",
            "Request body bytes of committed ingests, per stream.",
            ["stream"],
            registry=self.registry,
        )
        self.batches = Counter(
            "arrowport_ingested_batches",
            "Arrow record batches committed, per stream.",
            ["stream"],
            registry=self.registry,
        )
        self.errors = Counter(
            "arrowport_errors",
            "Requests answered with an error, by error code.",
            ["code", "protocol"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "arrowport_request_duration_seconds",
            "Request latency, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.in_flight = Gauge(
            "arrowport_requests_in_flight", "Requests being processed.", registry=self.registry
        )
        self.database_size = Gauge(
            "arrowport_database_size_bytes",
            "Size of the DuckDB database file and its WAL.",
            registry=self.registry,
        )
        self.put_wait_seconds = Counter(
            "arrowport_flight_put_wait_seconds",
            "Seconds Flight puts stopped reading their clients because DuckDB was behind them "
            "(flight.upload_buffer_bytes were waiting).",
            registry=self.registry,
        )
        self.queued_writes = Gauge(
            "arrowport_queued_writes",
            "Small writes waiting for the group writer.",
            registry=self.registry,
        )
        self.inflight_bytes = Gauge(
            "arrowport_inflight_bytes",
            "Request bytes held in memory, counted against limits.max_inflight_bytes.",
            registry=self.registry,
        )
        self.streaming_writes = Gauge(
            "arrowport_streaming_writes",
            "Large (streaming) writes running, of at most limits.max_streaming_writes.",
            registry=self.registry,
        )
        self.queries_running = Gauge(
            "arrowport_queries_running",
            "Queries holding a turn (running, or their answers being read), of at most "
            "limits.max_concurrent_queries.",
            registry=self.registry,
        )
        self.queries_waiting = Gauge(
            "arrowport_queries_waiting",
            "Queries waiting for a turn, of at most limits.max_queued_queries.",
            registry=self.registry,
        )
        self.spooled_answer_bytes = Gauge(
            "arrowport_spooled_answer_bytes",
            "Bytes of Flight SQL answers spooled (memory and temporary files) for their DoGet, "
            "of at most flight.max_spooled_answer_bytes.",
            registry=self.registry,
        )

    def certificate_expires(self, timestamp: float) -> None:
        """The server certificate's end (a gauge only where the server serves TLS)."""
        Gauge(
            "arrowport_tls_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate (tls.cert_file) expires, in Unix time.",
            registry=self.registry,
        ).set(timestamp)

    def record_ingest(self, stream: str, rows: int, batches: int, size: int) -> None:
        if stream not in self._stream_labels:
            if len(self._stream_labels) >= MAX_STREAM_LABELS:
                stream = OTHER_STREAMS
            else:
                self._stream_labels.add(stream)
        self.rows.labels(stream).inc(rows)
        self.batches.labels(stream).inc(batches)
        self.bytes.labels(stream).inc(size)

    def watch(self, readings: Readings) -> None:
        """Read the gauges from ``readings`` when scraped, not on every write."""
        self.database_size.set_function(readings.database_size)
        self.queued_writes.set_function(readings.queued_writes)
        self.inflight_bytes.set_function(readings.inflight_bytes)
        self.streaming_writes.set_function(readings.streaming_writes)
        self.queries_running.set_function(readings.queries_running)
        self.queries_waiting.set_function(readings.queries_waiting)
        if readings.storage_stats is not None:
            self.registry.register(_StorageStats(readings.storage_stats))


@dataclass(frozen=True)
class Readings:
    """Where the gauges read the server's state; ``storage_stats`` adds the storage target's
    own figures (a lake's files, snapshots and maintenance runs)."""

    database_size: Callable[[], float]
    queued_writes: Callable[[], float]
    inflight_bytes: Callable[[], float]
    streaming_writes: Callable[[], float]
    queries_running: Callable[[], float]
    queries_waiting: Callable[[], float]
    storage_stats: Callable[[], dict[str, float]] | None = None


class _StorageStats(Collector):
    """``arrowport_<name>`` for each figure the storage reports (``*_total``: a counter)."""

    def __init__(self, stats: Callable[[], dict[str, float]]) -> None:
        self._stats = stats

    def collect(self) -> list[Metric]:
        metrics: list[Metric] = []
        for name, value in sorted(self._stats().items()):
            help_text = "Reported by the storage target: " + name.replace("_", " ")
            if name.endswith("_total"):
                metrics.append(
                    CounterMetricFamily(
                        f"arrowport_{name.removesuffix('_total')}", help_text, value
                    )
                )
            else:
                metrics.append(GaugeMetricFamily(f"arrowport_{name}", help_text, value))
        return metrics
