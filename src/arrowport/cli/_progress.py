"""How far an ``arrowport ingest`` is: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from rich.filesize import decimal

from arrowport.cli._files import InputFile
from arrowport.client import IngestSummary

#: Plain progress lines are at most this often (and at the end of each file).
PLAIN_INTERVAL = 2.0


@dataclass
class Tally:
    """The whole command's counts: files done plus the file being sent."""

    total_rows: int | None
    files: int
    started: float = field(default_factory=time.monotonic)
    landed: int = 0  # rows sent and committed by this run, files done
    skipped: int = 0  # rows an earlier run had committed, files done
    bytes: int = 0
    current: IngestSummary | None = None

    def rows_landed(self) -> int:
        return self.landed + (self.current.rows if self.current else 0)

    def rows_skipped(self) -> int:
        return self.skipped + (self.current.skipped_rows if self.current else 0)

    def bytes_sent(self) -> int:
        return self.bytes + (self.current.bytes if self.current else 0)

    def done(self) -> int:
        return self.rows_landed() + self.rows_skipped()

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        """Rows per second landed by this run (what an earlier run landed is not counted)."""
        seconds = self.seconds()
        return self.rows_landed() / seconds if seconds > 0 else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
        if self.total_rows is None or rate <= 0:
            return None
        return max(self.total_rows - self.done(), 0) / rate

    def finish_file(self, summary: IngestSummary) -> None:
        self.landed += summary.rows
        self.skipped += summary.skipped_rows
        self.bytes += summary.bytes
        self.current = None


def clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


class Display:
    """Shows a :class:`Tally` as it moves; ``with Display.choose(tally):``."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally

    @staticmethod
    def choose(tally: Tally) -> Display:
        return RichDisplay(tally) if sys.stderr.isatty() else PlainDisplay(tally)

    def __enter__(self) -> Display:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def file_started(self, item: InputFile, index: int) -> None:
        pass

    def advanced(self, item: InputFile, summary: IngestSummary) -> None:
        self.tally.current = summary

    def file_done(self, item: InputFile, summary: IngestSummary) -> None:
        self.tally.finish_file(summary)

    def close(self) -> None:
        pass


class PlainDisplay(Display):
    """Log lines on stderr: each file's start (once its first request is through, so that a
    server that cannot be reached gets one line, its error) and end, and its progress every
    few seconds."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        self._last = 0.0
        self._announce: str | None = None

    def _line(self, text: str) -> None:
        self._flush()
        print(f"arrowport: {text}", file=sys.stderr, flush=True)

    def _flush(self) -> None:
        if self._announce is not None:
            announce, self._announce = self._announce, None
            print(f"arrowport: {announce}", file=sys.stderr, flush=True)

    def file_started(self, item: InputFile, index: int) -> None:
        rows = f", {item.rows:,} rows" if item.rows is not None else ""
        self._announce = (
            f"ingest {item.path} ({index + 1} of {self.tally.files}, {item.format}, "
            f"{decimal(item.size)}{rows})"
        )
        self._last = time.monotonic()

    def advanced(self, item: InputFile, summary: IngestSummary) -> None:
        super().advanced(item, summary)
        self._flush()
        now = time.monotonic()
        if now - self._last >= PLAIN_INTERVAL:
            self._last = now
            self._line(f"{item.name}: {self._counts()}")

    def file_done(self, item: InputFile, summary: IngestSummary) -> None:
        already = (
            f", {summary.skipped_rows:,} already landed before" if summary.skipped_rows else ""
        )
        self._line(
            f"{item.name}: done, {summary.rows:,} rows landed{already}, "
            f"{decimal(summary.bytes)} in {summary.seconds:.1f} s"
        )
        super().file_done(item, summary)

    def _counts(self) -> str:
        tally = self.tally
        total = f" of {tally.total_rows:,}" if tally.total_rows is not None else ""
        eta = tally.eta()
        parts = [
            f"{tally.done():,}{total} rows",
            decimal(tally.bytes_sent()),
            f"{tally.rate():,.0f} rows/s",
        ]
        if eta is not None:
            parts.append(f"ETA {clock(eta)}")
        return ", ".join(parts)


class RichDisplay(Display):
    """A progress bar on stderr: rows (of the total where the files' metadata tells it),
    bytes, rows per second and the time left."""

    def __init__(self, tally: Tally) -> None:
        super().__init__(tally)
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[rows]}"),
            TextColumn("{task.fields[size]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            redirect_stdout=False,
            redirect_stderr=True,
        )
        self._closed = False
        self._task = self._progress.add_task(
            "ingest", total=tally.total_rows, **self._fields(), start=True
        )
        self._progress.start()

    def _fields(self) -> dict[str, Any]:
        tally = self.tally
        total = f"/{tally.total_rows:,}" if tally.total_rows is not None else ""
        eta = tally.eta()
        return {
            "rows": f"{tally.done():,}{total} rows",
            "size": decimal(tally.bytes_sent()),
            "rate": f"{tally.rate():,.0f} rows/s",
            "eta": f"ETA {clock(eta)}" if eta is not None else "",
        }

    def _refresh(self, description: str | None = None) -> None:
        changes: dict[str, Any] = self._fields()
        if description is not None:
            changes["description"] = description
        self._progress.update(self._task, completed=self.tally.done(), **changes)

    def file_started(self, item: InputFile, index: int) -> None:
        label = (
            item.name if self.tally.files == 1 else f"{item.name} ({index + 1}/{self.tally.files})"
        )
        self._refresh(label)

    def advanced(self, item: InputFile, summary: IngestSummary) -> None:
        super().advanced(item, summary)
        self._refresh()

    def file_done(self, item: InputFile, summary: IngestSummary) -> None:
        super().file_done(item, summary)
        self._refresh()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._refresh()
            self._progress.stop()
