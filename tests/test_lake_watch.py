"""The watch behind a lake's ``/ready``: one question in flight at a time, an answer kept until
the next, a hung question reported once it is overdue, and only silence, refused connections
and server errors counted against the object store (an HTTP answer below 500 is an answer).
The services themselves (a frozen store or catalog) are exercised in test_lake_store_outage.py
and test_lake_cluster.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import cast

import duckdb
import pytest

from arrowport.storage.lake_watch import Watch, ask_store


def test_a_question_is_asked_once_at_a_time_and_reported_once_overdue() -> None:
    asked = threading.Event()
    release = threading.Event()
    calls = []

    def ask() -> str | None:
        calls.append(1)
        asked.set()
        release.wait(30)
        return None

    watch = Watch("the service", ask, patience=0.2)
    first = threading.Thread(target=watch.check)
    first.start()
    assert asked.wait(30)
    watch.check()  # another caller: returns at once, asks nothing
    assert len(calls) == 1
    assert watch.problem() is None  # not yet overdue
    time.sleep(0.3)
    problem = watch.problem()
    assert problem is not None
    assert problem.startswith("the service has not answered for")
    release.set()
    first.join(30)
    assert watch.problem() is None


def test_an_answer_is_kept_until_the_next_and_a_failed_question_keeps_it() -> None:
    answers: list[Callable[[], str | None]] = [lambda: "down", lambda: None]

    def ask() -> str | None:
        return answers.pop(0)()

    watch = Watch("the service", ask, patience=10)
    watch.check()
    assert watch.problem() == "down"
    assert watch.problem() == "down"

    def broken() -> str | None:
        raise RuntimeError("the question itself failed")

    failing = Watch("the service", broken, patience=10)
    failing._problem = "down"  # as a previous answer left it
    with pytest.raises(RuntimeError):
        failing.check()
    assert failing.problem() == "down"
    watch.check()
    assert watch.problem() is None


class _Refusing:
    """A connection whose query fails as the store did."""

    def __init__(self, error: duckdb.Error) -> None:
        self.error = error

    def execute(self, *args: object) -> _Refusing:
        raise self.error

    def close(self) -> None:
        pass


def ask(error: duckdb.Error) -> str | None:
    refusing = cast(duckdb.DuckDBPyConnection, _Refusing(error))
    return ask_store(lambda: refusing, "the store", "s3://b/p", str)


def _http_error(status: int) -> duckdb.HTTPException:
    error = duckdb.HTTPException(f"HTTP Error: HTTP HEAD error (HTTP {status})")
    error.status_code = status
    return error


@pytest.mark.parametrize("status", [301, 400, 403, 404])
def test_a_store_answering_with_an_http_error_below_500_is_answering(status: int) -> None:
    assert ask(_http_error(status)) is None


@pytest.mark.parametrize(
    "error",
    [
        _http_error(503),
        duckdb.IOException("IO Error: Timeout was reached error for HTTP HEAD to 'x'"),
        duckdb.IOException("IO Error: Could not connect to server"),
    ],
)
def test_silence_refusal_and_server_errors_count_against_the_store(error: duckdb.Error) -> None:
    problem = ask(error)
    assert problem is not None
    assert problem.startswith("the store cannot be reached (")
