"""The log sink: lines leave in the order they were logged; on an event loop, info lines wait
a moment to leave together; warnings, errors and other threads' lines leave at once."""

from __future__ import annotations

import asyncio
import io
import logging

from arrowport.logs import (
    FLUSH_SECONDS,
    MAX_QUEUED_LINES,
    WRITE_CHARS,
    LineSink,
    SinkHandler,
    SinkLogger,
)


def _written(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_off_a_loop_every_line_is_written_at_once() -> None:
    stream = io.StringIO()
    logger = SinkLogger(LineSink(stream))
    logger.info("first")
    assert _written(stream) == ["first"]
    logger.debug("second")
    assert _written(stream) == ["first", "second"]


def test_on_a_loop_info_lines_leave_together_soon_in_order() -> None:
    stream = io.StringIO()
    logger = SinkLogger(LineSink(stream))

    async def main() -> None:
        for i in range(100):
            logger.info(f"line {i}")
        assert _written(stream) == []  # queued: the loop has not come round yet
        await asyncio.sleep(FLUSH_SECONDS * 5)
        assert _written(stream) == [f"line {i}" for i in range(100)]

    asyncio.run(main())


def test_a_warning_is_written_at_once_after_every_earlier_line() -> None:
    stream = io.StringIO()
    logger = SinkLogger(LineSink(stream))

    async def main() -> None:
        logger.info("first")
        logger.debug("second")
        logger.warning("third")
        # No waiting: the warning's write took the queued lines with it.
        assert _written(stream) == ["first", "second", "third"]
        logger.info("fourth")
        logger.exception("fifth")
        assert _written(stream)[-2:] == ["fourth", "fifth"]

    asyncio.run(main())


def test_flush_writes_what_is_queued() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)

    async def main() -> None:
        sink.later("queued")
        assert _written(stream) == []
        sink.flush()
        assert _written(stream) == ["queued"]

    asyncio.run(main())


def test_standard_library_records_share_the_order() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)
    handler = SinkHandler(sink)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("arrowport.test_logs")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    async def main() -> None:
        SinkLogger(sink).info("structured")
        logger.info("plain")
        logger.error("failed")
        assert _written(stream) == ["structured", "INFO plain", "ERROR failed"]

    try:
        asyncio.run(main())
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

    async def main() -> None:
        for line in lines:
            sink.later(line)
        sink.flush()

    asyncio.run(main())
    assert _written(stream) == lines
    # Whole lines only, and at most WRITE_CHARS per write unless one line is longer by itself.
    assert all(write.endswith("\n") for write in stream.writes)
    assert all(len(w) <= WRITE_CHARS or w.count("\n") == 1 for w in stream.writes)
    assert len(stream.writes) > 1


def test_a_full_queue_is_written_by_the_caller() -> None:
    stream = io.StringIO()
    sink = LineSink(stream)

    async def main() -> None:
        for i in range(MAX_QUEUED_LINES + 1):
            sink.later(str(i))
        # The line past the bound wrote everything queued, and itself, without waiting.
        assert _written(stream) == [str(i) for i in range(MAX_QUEUED_LINES + 1)]

    asyncio.run(main())
