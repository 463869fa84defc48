"""What the protocol adapters (HTTP, Flight) are built on: settings, metrics, the ingest service
and the read service, over one database."""

from __future__ import annotations

from dataclasses import dataclass

from arrowport.config import Settings
from arrowport.ingest.service import IngestService
from arrowport.metrics import Metrics
from arrowport.reads import ReadService
from arrowport.storage.interface import Storage


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    storage: Storage
    ingest: IngestService
    reads: ReadService

    @classmethod
    def open(cls, settings: Settings, storage: Storage, metrics: Metrics) -> Services:
        ingest = IngestService(settings, storage, metrics)
        return cls(settings, metrics, storage, ingest, ReadService(settings, storage))

    def close(self) -> None:
        """Let running writes commit, then close the database."""
        self.ingest.close()
