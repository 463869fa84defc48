"""What the protocol adapters (HTTP, Flight) are built on: settings, metrics, the ingest service
and the read service, over one database."""

from __future__ import annotations

from dataclasses import dataclass

from arrowport.config import Settings
from arrowport.ingest.service import IngestService
from arrowport.metrics import Metrics
from arrowport.reads import ReadService
from arrowport.storage.database import Database


@dataclass
class Services:
    settings: Settings
    metrics: Metrics
    ingest: IngestService
    reads: ReadService

    @classmethod
    def open(cls, settings: Settings, db: Database, metrics: Metrics) -> Services:
        return cls(
            settings, metrics, IngestService(settings, db, metrics), ReadService(settings, db)
        )

    def close(self, timeout: float = 30.0) -> None:
        """Let running writes commit, then close the database."""
        self.ingest.close(timeout)
