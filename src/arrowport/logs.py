"""Structured logging: JSON lines unless stderr is a terminal, a request id on every line.

The standard library's loggers (uvicorn's among them) go through the same renderer, so every
line of a server's log has one format.

Lines reach stderr through a :class:`LineSink`. An info line logged on an event loop waits there
up to :data:`FLUSH_SECONDS` and leaves with the others of that moment in one write: a write and
flush per request's access line was 12 % of the event loop's time under 16 small writers.
Warnings and errors, and lines of other threads, are written at once, after every line queued
before them. (A writer thread of its own did the same but moved a 2 GB Flight put's peak memory
up by ~10 MB: one more thread in glibc's malloc arenas.)
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
from collections import deque
from collections.abc import Iterator
from typing import TextIO

import structlog

from arrowport.config import LoggingSettings

# How long an info line may wait to be written with the ones after it.
FLUSH_SECONDS = 0.01
# Lines queued beyond this are written by the caller: a stalled reader of stderr slows logging
# down instead of growing memory.
MAX_QUEUED_LINES = 10_000
# Each write is at most this many characters (4 KiB in UTF-8, PIPE_BUF), so that the lines of
# several processes sharing one pipe (``--workers``) never interleave mid-line.
WRITE_CHARS = 1024


class LineSink:
    """Log lines on their way to ``stream``, in the order they were logged."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lines: deque[str] = deque()
        # Reentrant: a line logged while this thread writes (a signal handler's) must not hang.
        self._write_lock = threading.RLock()
        self._scheduled: asyncio.AbstractEventLoop | None = None
        atexit.register(self.flush)

    def later(self, line: str) -> None:
        """Queue ``line`` when called on a running event loop (written within
        :data:`FLUSH_SECONDS`); anywhere else, write it now."""
        loop = _running_loop()
        if loop is None or len(self._lines) >= MAX_QUEUED_LINES:
            self.now(line)
            return
        self._lines.append(line)
        if self._scheduled is not loop:
            self._scheduled = loop
            loop.call_later(FLUSH_SECONDS, self._flush_scheduled)

    def now(self, line: str) -> None:
        self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        with self._write_lock:
            lines = []
            while self._lines:
                lines.append(self._lines.popleft())
            try:
                for chunk in _chunks(lines):
                    self.stream.write(chunk)
                    self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr is gone (closed pipe): there is nowhere left to say so

    def _flush_scheduled(self) -> None:
        self._scheduled = None
        self.flush()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _chunks(lines: list[str]) -> Iterator[str]:
    """``lines`` joined into writes of at most :data:`WRITE_CHARS` (a longer line: alone)."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        if chunk and size + len(line) + 1 > WRITE_CHARS:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line + "\n")
        size += len(line) + 1
    if chunk:
        yield "".join(chunk)


class SinkLogger:
    """structlog's logger: rendered lines to a :class:`LineSink`."""

    def __init__(self, sink: LineSink) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        self._sink.later(message)

    def failure(self, message: str) -> None:
        self._sink.now(message)

    debug = info = log = msg
    warn = warning = error = err = exception = critical = fatal = failure


class SinkHandler(logging.Handler):
    """The standard library's records, formatted, into the same sink."""

    def __init__(self, sink: LineSink) -> None:
        super().__init__()
        self._sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING:
            self._sink.now(line)
        else:
            self._sink.later(line)


_sink: LineSink | None = None
# Where the server says that it serves, and on which ports, and that it stopped: lines that
# pass whatever logging.level says (a caller of `--port 0` learns its ports from them).
_lifecycle: structlog.typing.FilteringBoundLogger | None = None


def lifecycle() -> structlog.typing.FilteringBoundLogger:
    """The logger of the server's start and stop lines: info lines, written at any level."""
    if _lifecycle is None:
        return structlog.get_logger("arrowport")  # type: ignore[no-any-return]
    return _lifecycle


def _stderr_sink() -> LineSink:
    global _sink
    if _sink is None or _sink.stream is not sys.stderr:
        _sink = LineSink(sys.stderr)
    return _sink


def configure_logging(settings: LoggingSettings) -> None:
    level = getattr(logging, settings.level.upper())
    as_json = settings.format == "json" or (settings.format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    sink = _stderr_sink()
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors: list[structlog.typing.Processor] = [
        *shared,
        structlog.processors.format_exc_info,
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=lambda *_: SinkLogger(sink),
        cache_logger_on_first_use=True,
    )
    global _lifecycle
    _lifecycle = structlog.wrap_logger(
        SinkLogger(sink),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    handler = SinkHandler(sink)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The access log is ours (one line per request, with its request id).
    logging.getLogger("uvicorn.access").disabled = True
