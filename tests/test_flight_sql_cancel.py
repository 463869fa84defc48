"""A Flight SQL query whose call ends before it does (the client cancelled it, or its deadline
passed) is stopped on the server, in a transaction or not: it gives back its turn among
``limits.max_concurrent_queries`` at once, not when its time runs out."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import adbc_driver_flightsql.dbapi as dbapi
import httpx
import pyarrow.flight as flight
import pytest

from arrowport.flight.protocol import flight_sql_pb2 as sql
from arrowport.flight.sql.envelope import pack
from tests.conftest import metric
from tests.server import ArrowportProcess
from tests.test_flight import errors_counted
from tests.test_read import wait_until

# Minutes of work on any machine; the server's own limit ends it long after the test has looked.
ENDLESS = "SELECT sum(a.range * b.range) AS s FROM range(400000) a, range(400000) b"
CONFIG = {"limits": {"max_concurrent_queries": 2, "query_timeout_seconds": 120}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("sql_cancel"), config=CONFIG) as process:
        yield process


def running(http: httpx.Client) -> float:
    return metric(http, "arrowport_queries_running")


@pytest.mark.parametrize("autocommit", [True, False], ids=["alone", "in_a_transaction"])
def test_a_query_the_client_cancels_is_stopped(server: ArrowportProcess, autocommit: bool) -> None:
    failures: list[BaseException] = []
    with (
        httpx.Client(base_url=server.url) as http,
        dbapi.connect(server.flight_url, autocommit=autocommit) as connection,
        connection.cursor() as cursor,
    ):
        # Prepared here, so the turn the prepare takes is over before the query runs: a
        # cancel that found only the prepare in flight would leave the query itself running.
        cursor.adbc_prepare(ENDLESS)

        def execute() -> None:
            try:
                cursor.execute(ENDLESS)
            except BaseException as exc:  # the cancellation
                failures.append(exc)

        worker = threading.Thread(target=execute)
        worker.start()
        wait_until(lambda: running(http) == 1, "the query to run")
        cursor.adbc_cancel()
        worker.join(30)
        assert not worker.is_alive()
        assert failures, "the query was not cancelled"
        wait_until(lambda: running(http) == 0, "the query to stop")
        # A cancellation, not a failed query: counted as no error.
        assert errors_counted(http, "query_error") == 0
        # Its turn is free: queries run at once.
        with dbapi.connect(server.flight_url, autocommit=True) as other, other.cursor() as again:
            again.execute("SELECT 42 AS x")
            assert again.fetchall() == [(42,)]
        if not autocommit:
            connection.rollback()  # the cancelled query may have aborted the transaction


def test_a_query_past_its_callers_deadline_is_stopped(server: ArrowportProcess) -> None:
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql.CommandStatementQuery(query=ENDLESS.encode()))
    )
    outcome: list[BaseException] = []
    with (
        httpx.Client(base_url=server.url) as http,
        flight.connect(server.flight_url) as client,
    ):

        def ask() -> None:
            try:
                client.get_flight_info(descriptor, flight.FlightCallOptions(timeout=3.0))
            except BaseException as exc:
                outcome.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        wait_until(lambda: running(http) == 1, "the query to run")
        asking.join(30)
        assert not asking.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], flight.FlightTimedOutError)
        wait_until(lambda: running(http) == 0, "the query to stop")
        assert errors_counted(http, "query_error") == 0
        assert metric(http, "arrowport_queries_waiting") == 0


def test_a_flight_sql_query_running_at_shutdown_does_not_hold_the_process(
    tmp_path: Path,
) -> None:
    """SIGTERM while a Flight SQL query runs: the drain ends the call, the query is stopped,
    and the process exits within the drain's bound, not when the query's time is up."""
    config = {"limits": {"shutdown_timeout_seconds": 5, "query_timeout_seconds": 300}}
    descriptor = flight.FlightDescriptor.for_command(
        pack(sql.CommandStatementQuery(query=ENDLESS.encode()))
    )
    server = ArrowportProcess(tmp_path, config=config).start()
    try:
        with httpx.Client(base_url=server.url) as http, flight.connect(server.flight_url) as c:
            asking = threading.Thread(target=lambda: _refused(c, descriptor), daemon=True)
            asking.start()
            wait_until(lambda: running(http) == 1, "the query to run")
            assert server.stop(timeout=60) == 0
    finally:
        server.kill()


def _refused(client: flight.FlightClient, descriptor: flight.FlightDescriptor) -> None:
    with contextlib.suppress(flight.FlightError):  # the drain ends the call
        client.get_flight_info(descriptor)
