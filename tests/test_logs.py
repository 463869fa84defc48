"""The log sink: lines leave in the order they were logged; warnings and errors at once."""

from __future__ import annotations

import io
import logging
import time

from arrowport.logs import MAX_QUEUED_LINES, WRITE_CHARS, LineSink, SinkHandler, SinkLogger


def _written(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def _eventually(stream: io.StringIO, lines: list[str], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while _written(stream) != lines and time.monotonic() < deadline:
        time.sleep(0.005)
    assert _written(stream) == lines


def test_info_lines_are_written_soon_in_order() -> None:
    stream = io.StringIO()
    logger = SinkLogger(LineSink(stream))
    for i in range(100):
        logger.info(f"line {i}")
    _eventually(stream, [f"line {i}" for i in range(100)])


def test_a_warning_is_written_at_once_after_every_earlier_line() -> None:
    stream = io.StringIO()
    logger = SinkLogger(LineSink(stream))
    logger.info("first")
    logger.debug("second")
    logger.warning("third")
    # No waiting: the warning's write took the queued lines with it.
    assert _written(stream) == ["first", "second", "third"]
    logger.error("fourth")
    logger.exception("fifth")
    assert _written(stream)[-2:] == ["fourth", "fifth"]


def test_flush_writes_what_is_queued() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    sink.later("queued")
    sink.flush()
    assert _written(stream) == ["queued"]


def test_standard_library_records_share_the_order() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    handler = SinkHandler(sink)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("arrowport.test_logs")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        SinkLogger(sink).info("structured")
        logger.info("plain")
        logger.error("failed")
        assert _written(stream) == ["structured", "INFO plain", "ERROR failed"]
    finally:
        logger.removeHandler(handler)


def test_a_closed_stream_does_not_raise() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    stream.close()
    sink.now("nowhere to go")  # ValueError inside is swallowed: logging must not fail a request


class _Writes(io.StringIO):
    """A stream that remembers each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def test_writes_stay_within_a_pipe_atomic_size() -> None:
    stream = _Writes()
    sink = LineSink(stream)
    lines = [f"line {i:04d} " + "x" * 90 for i in range(200)] + ["long " + "y" * 5000]
    for line in lines:
        sink.later(line)
    sink.flush()
    assert _written(stream) == lines
    # Whole lines only, and at most WRITE_CHARS per write unless one line is longer by itself.
    assert all(write.endswith("\n") for write in stream.writes)
    assert all(len(w) <= WRITE_CHARS or w.count("\n") == 1 for w in stream.writes)
    assert len(stream.writes) > 1


def test_a_full_queue_is_written_by_the_caller() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    with sink._write_lock:  # the sink's own thread cannot write meanwhile; this one may
        for i in range(MAX_QUEUED_LINES + 1):
            sink.later(str(i))
        # The line past the bound wrote everything queued itself.
        assert _written(stream) == [str(i) for i in range(MAX_QUEUED_LINES + 1)]
