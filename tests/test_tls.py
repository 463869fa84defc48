"""TLS on both listeners, with a throwaway certificate authority (``trustme``)."""

from __future__ import annotations

import datetime
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import trustme

from arrowport.auth import hash_secret, new_token
from tests.conftest import ARROW_STREAM, ipc_bytes, metric
from tests.pki import Pki, https_url, tls_config
from tests.server import ArrowportProcess

SECRET = new_token("tls_client")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    tokens = [{"name": "tls_client", "secret_hash": hash_secret(SECRET), "scopes": ["admin"]}]
    config = tls_config(pki, tokens=tokens)
    with ArrowportProcess(tmp_path_factory.mktemp("tls"), config=config) as server:
        yield server


def test_https_round_trip_verified_by_the_ca(pki: Pki, tls_server: ArrowportProcess) -> None:
    assert tls_server.ready["tls"] is True
    headers = {"Authorization": f"Bearer {SECRET}"}
    with httpx.Client(
        base_url=https_url(tls_server), verify=ssl.create_default_context(cafile=pki.ca_file)
    ) as client:
        assert client.get("/health").json() == {"status": "ok"}
        landed = client.post(
            "/stream/secure",
            content=ipc_bytes(pa.table({"x": [1, 2, 3]})),
            headers=headers | {"Content-Type": ARROW_STREAM},
        )
        assert landed.status_code == 200, landed.text
        answer = client.post(
            "/query", json={"sql": "SELECT sum(x)::BIGINT AS s FROM secure"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        assert pa.ipc.open_stream(answer.content).read_all().column("s")[0].as_py() == 6
        assert client.get("/tables").status_code == 401


def test_https_hostname_localhost_also_verifies(pki: Pki, tls_server: ArrowportProcess) -> None:
    context = ssl.create_default_context(cafile=pki.ca_file)
    response = httpx.get(f"https://localhost:{tls_server.port}/health", verify=context)
    assert response.status_code == 200


def test_https_without_trusting_the_ca_fails(tls_server: ArrowportProcess) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(https_url(tls_server) + "/health")


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server: ArrowportProcess) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{tls_server.port}/health", timeout=10)
    assert tls_server.alive()


def test_flight_over_grpc_tls(pki: Pki, tls_server: ArrowportProcess) -> None:
    client = flight.FlightClient(
        f"grpc+tls://localhost:{tls_server.flight_port}", tls_root_certs=pki.ca_file.read_bytes()
    )
    options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {SECRET}".encode())])
    table = pa.table({"x": pa.array([10, 20], pa.int64())})
    descriptor = flight.FlightDescriptor.for_path("secure_flight")
    writer, _ = client.do_put(descriptor, table.schema, options=options)
    writer.write_table(table)
    writer.close()
    with httpx.Client(
        base_url=https_url(tls_server), verify=ssl.create_default_context(cafile=pki.ca_file)
    ) as http:
        answer = http.post(
            "/query",
            json={"sql": "SELECT sum(x)::BIGINT AS s FROM secure_flight"},
            headers={"Authorization": f"Bearer {SECRET}", "Accept": "application/json"},
        )
    assert answer.json()["rows"] == [{"s": 30}]
    client.close()


# -- misconfiguration ------------------------------------------------------------------------------


def serve(tmp_path: Path, config_yaml: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"
    config.write_text(config_yaml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "arrowport",
            "serve",
            "--port",
            "0",
            "--flight-port",
            "0",
            "--db",
            str(tmp_path / "db.duckdb"),
            "--config",
            str(config),
        ],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_certificate_without_key_is_a_config_error(tmp_path: Path, pki: Pki) -> None:
    result = serve(tmp_path, f"tls:\n  cert_file: {pki.cert_file}\n")
    assert result.returncode == 2
    assert "tls" in result.stderr
    assert "key_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_certificate_stops_start_up_clearly(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "nope.pem"
    result = serve(tmp_path, f"tls:\n  cert_file: {missing}\n  key_file: {pki.key_file}\n")
    assert result.returncode == 2
    assert "tls.cert_file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "db.duckdb").exists()


def test_key_not_matching_the_certificate_stops_start_up(tmp_path: Path, pki: Pki) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    other_key = tmp_path / "other.key"
    other.private_key_pem.write_to_path(str(other_key))
    result = serve(tmp_path, f"tls:\n  cert_file: {pki.cert_file}\n  key_file: {other_key}\n")
    assert result.returncode == 2
    assert "tls.key_file" in result.stderr
    assert "Traceback" not in result.stderr


def test_flight_needs_tls_and_a_trusted_certificate(pki: Pki, tls_server: ArrowportProcess) -> None:
    options = flight.FlightCallOptions(
        timeout=10, headers=[(b"authorization", f"Bearer {SECRET}".encode())]
    )
    with (
        flight.FlightClient(f"grpc://127.0.0.1:{tls_server.flight_port}") as plain,
        pytest.raises(flight.FlightUnavailableError),
    ):
        list(plain.list_flights(options=options))
    with (
        flight.FlightClient(f"grpc+tls://localhost:{tls_server.flight_port}") as untrusting,
        pytest.raises(flight.FlightUnavailableError),
    ):
        list(untrusting.list_flights(options=options))
    assert tls_server.alive()
    # gRPC's C core logs each failed handshake as a text line of its own on stderr, where the
    # server's JSON lines go: it is told to keep to errors. Its line comes a moment after the
    # client has failed.
    time.sleep(1)
    for line in tls_server.lines:
        assert isinstance(json.loads(line), dict), line


def test_flight_handshake_over_tls(pki: Pki, tls_server: ArrowportProcess) -> None:
    with flight.FlightClient(
        f"grpc+tls://localhost:{tls_server.flight_port}", tls_root_certs=pki.ca_file.read_bytes()
    ) as client:
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_flights())
        header = client.authenticate_basic_token(b"tls_client", SECRET.encode())
        assert header == (b"authorization", f"Bearer {SECRET}".encode())
        options = flight.FlightCallOptions(headers=[header])
        assert isinstance(list(client.list_flights(options=options)), list)
    assert SECRET not in "\n".join(tls_server.lines)


def certificate_warnings(server: ArrowportProcess) -> list[str]:
    events = [json.loads(line) for line in server.lines]
    return [
        e["event"]
        for e in events
        if e.get("level") == "warning" and str(e["event"]).startswith("tls.cert_file")
    ]


@pytest.mark.parametrize(
    ("days", "warning"),
    [(-1, "expired at"), (5, "expires at"), (400, None)],
    ids=["expired", "soon", "valid"],
)
def test_the_certificate_s_end_is_told_at_start_and_in_the_metrics(
    tmp_path: Path, days: int, warning: str | None
) -> None:
    """A certificate past its end makes every TLS client fail, and the server would not say
    why: it warns at start-up (as it does two weeks before the end), and /metrics carries the
    end for an alert."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    pki = Pki(
        tmp_path,
        not_before=now - datetime.timedelta(days=30),
        not_after=now + datetime.timedelta(days=days),
    )
    with ArrowportProcess(tmp_path / "server", config=tls_config(pki)) as server:
        warnings = certificate_warnings(server)
        if warning is None:
            assert warnings == []
        else:
            assert len(warnings) == 1, warnings
            assert warning in warnings[0]
        # The server serves even so (clients decide; a renewed certificate needs a restart).
        trusting = ssl.create_default_context(cafile=pki.ca_file) if days > 0 else False
        with httpx.Client(base_url=https_url(server), verify=trusting) as client:
            end = metric(client, "arrowport_tls_certificate_expiry_timestamp_seconds")
    assert end == (now + datetime.timedelta(days=days)).timestamp()


def test_a_plain_server_has_no_certificate_metric(tmp_path: Path) -> None:
    with ArrowportProcess(tmp_path) as server:
        text = httpx.get(server.url + "/metrics").text
    assert "arrowport_tls_certificate" not in text
