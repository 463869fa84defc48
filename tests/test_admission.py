"""Admission: the in-flight byte budget and the shutdown's wait for streaming writes."""

from __future__ import annotations

import threading
import time

import pytest

from arrowport.config import LimitsSettings
from arrowport.errors import Overloaded, ShuttingDown
from arrowport.ingest.admission import Admission


def admission(**limits: int) -> Admission:
    return Admission(LimitsSettings.model_validate(limits))


def test_bytes_past_the_budget_are_refused_while_others_hold_some() -> None:
    gate = admission(max_inflight_bytes=100)
    with gate.reserving() as first:
        first.grow(60)
        first.grow(60)  # one body alone may pass the budget
        assert gate.inflight_bytes == 120
        with gate.reserving() as second, pytest.raises(Overloaded):
            second.grow(1)
        assert gate.inflight_bytes == 120
    assert gate.inflight_bytes == 0
    with gate.holding(100):
        assert gate.inflight_bytes == 100
    assert gate.inflight_bytes == 0


def test_the_wait_for_streaming_writes_ends_at_the_shutdowns_deadline() -> None:
    """``wait_idle(timeout)`` counts from when draining began, not from the call: the time
    the rest of the shutdown took is not given again."""
    gate = admission()
    gate.take_stream(None)
    gate.drain()
    with pytest.raises(ShuttingDown):
        gate.check_accepting()
    time.sleep(1.0)
    asked = time.monotonic()
    assert gate.wait_idle(1.0) is False
    assert time.monotonic() - asked < 0.5  # the deadline had passed: no further wait
    gate.drain()  # draining again does not move the deadline
    assert gate.wait_idle(1.0) is False
    asked = time.monotonic()
    assert gate.wait_idle(1.0, at_least=0.3) is False
    assert time.monotonic() - asked >= 0.3  # but a grace past it is waited for
    threading.Timer(0.2, gate.give_stream, args=(None,)).start()
    assert gate.wait_idle(30.0) is True
