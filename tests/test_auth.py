"""Access control over HTTP: tokens, scopes, stream limits, safe defaults and the token command."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest
import yaml

from arrowport.auth import TOKEN_PREFIX, hash_secret, new_token
from tests.conftest import ARROW_STREAM, grpc_error, ipc_bytes
from tests.server import ArrowportProcess

SECRETS = {
    name: new_token(name) for name in ("root", "reader", "loader", "anyloader", "scraper", "dotted")
}
TOKENS: list[dict[str, Any]] = [
    {"name": "root", "secret_hash": hash_secret(SECRETS["root"]), "scopes": ["admin"]},
    {"name": "reader", "secret_hash": hash_secret(SECRETS["reader"]), "scopes": ["read"]},
    {
        "name": "loader",
        "secret_hash": hash_secret(SECRETS["loader"]),
        "scopes": ["ingest"],
        "streams": ["events"],
    },
    {"name": "anyloader", "secret_hash": hash_secret(SECRETS["anyloader"]), "scopes": ["ingest"]},
    {"name": "scraper", "secret_hash": hash_secret(SECRETS["scraper"]), "scopes": []},
    {
        "name": "dotted",
        "secret_hash": hash_secret(SECRETS["dotted"]),
        "scopes": ["ingest"],
        "streams": ["app.v1"],
    },
]
SERVE = [sys.executable, "-m", "arrowport", "serve", "--port", "0", "--flight-port", "0"]
CREATE = [sys.executable, "-m", "arrowport", "token", "create"]
CONFIG: dict[str, Any] = {
    "auth": {"tokens": TOKENS},
    "streams": {"events": {"table": "event_rows"}},
}


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


def rows(n: int = 3) -> pa.Table:
    return pa.table({"id": pa.array(range(n), pa.int64())})


def post_ipc(
    client: httpx.Client, stream: str, headers: dict[str, str], **params: str
) -> httpx.Response:
    return client.post(
        f"/stream/{stream}",
        content=ipc_bytes(rows()),
        params=params,
        headers={"Content-Type": ARROW_STREAM} | headers,
    )


def post_json(
    client: httpx.Client, stream: str, headers: dict[str, str], target_table: str
) -> httpx.Response:
    table = rows()
    body = {
        "config": {"target_table": target_table},
        "batch": {
            "arrow_schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
            "data": base64.b64encode(ipc_bytes(table)).decode(),
        },
    }
    return client.post(f"/stream/{stream}", json=body, headers=headers)


def tables(client: httpx.Client) -> set[str]:
    response = client.get("/tables", headers=bearer("root"))
    assert response.status_code == 200, response.text
    return {t["name"] for t in response.json()}


def _log_once(server: ArrowportProcess, ready: Callable[[str], bool]) -> str:
    """The server's log once ``ready`` holds for it (info lines are written within moments, not
    before the response), or after a few seconds."""
    deadline = time.monotonic() + 5
    while True:
        log = "\n".join(server.lines)
        if ready(log) or time.monotonic() > deadline:
            return log
        time.sleep(0.01)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["code"] == code
    assert body["message"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArrowportProcess]:
    with ArrowportProcess(tmp_path_factory.mktemp("secured"), config=CONFIG) as process:
        yield process


@pytest.fixture
def http(secured: ArrowportProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, timeout=60) as client:
        yield client


PROTECTED = [
    ("POST", "/stream/events"),
    ("GET", "/tables"),
    ("GET", "/tables/event_rows"),
    ("POST", "/query"),
    ("GET", "/streams"),
    ("GET", "/streams/events/producers/p1"),
    ("GET", "/metrics"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/openapi.json"),
]


# -- 401 -----------------------------------------------------------------------------------------


def test_health_and_ready_stay_open(http: httpx.Client) -> None:
    assert http.get("/health").json() == {"status": "ok"}
    assert http.get("/ready").status_code == 200


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_is_401_with_a_bearer_challenge(
    http: httpx.Client, method: str, path: str
) -> None:
    response = http.request(method, path, json={"sql": "SELECT 1"})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_binary_ingest_without_a_token_is_401_with_a_bearer_challenge(
    http: httpx.Client,
) -> None:
    # Binary bodies are answered before FastAPI's routing (DirectIngest): same answer.
    response = post_ipc(http, "events", {})
    assert_error(response, 401, "unauthenticated")
    assert response.json()["stream"] == "events"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer " + SECRETS["root"][:-1],
        "Bearer " + SECRETS["root"] + "x",
        "Bearer " + hash_secret(SECRETS["root"]),
        "Bearer",
        SECRETS["root"],
        "Token " + SECRETS["root"],
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(f"reader:{SECRETS['root']}".encode()).decode(),
    ],
    ids=[
        "truncated",
        "extended",
        "hash-as-token",
        "scheme-only",
        "no-scheme",
        "other-scheme",
        "malformed-basic",
        "basic-wrong-name",
    ],
)
def test_invalid_credentials_are_401(http: httpx.Client, authorization: str) -> None:
    response = http.get("/tables", headers={"Authorization": authorization})
    assert_error(response, 401, "unauthenticated")
    assert SECRETS["root"] not in response.text


def test_refused_ingest_lands_nothing(http: httpx.Client) -> None:
    response = post_ipc(http, "nobody_stream", {"Authorization": "Bearer nope"})
    assert_error(response, 401, "unauthenticated")
    assert response.json()["stream"] == "nobody_stream"
    assert "nobody_stream" not in tables(http)


# -- 403 -----------------------------------------------------------------------------------------


def test_read_token_cannot_ingest(http: httpx.Client) -> None:
    response = post_ipc(http, "reader_stream", bearer("reader"))
    assert_error(response, 403, "forbidden")
    assert "reader_stream" not in tables(http)


@pytest.mark.parametrize("name", ["loader", "anyloader", "scraper"])
def test_non_read_tokens_cannot_read(http: httpx.Client, name: str) -> None:
    for method, path in [("GET", "/tables"), ("POST", "/query"), ("GET", "/streams")]:
        response = http.request(method, path, json={"sql": "SELECT 1"}, headers=bearer(name))
        assert_error(response, 403, "forbidden")


def test_stream_limited_token_other_stream_is_403(http: httpx.Client) -> None:
    response = post_ipc(http, "not_events", bearer("loader"))
    assert_error(response, 403, "forbidden")
    assert "not_events" in response.json()["message"]
    assert "not_events" not in tables(http)


def test_stream_limited_token_cannot_redirect_the_table(http: httpx.Client) -> None:
    by_query = post_ipc(http, "events", bearer("loader"), table="hijacked_q")
    assert_error(by_query, 403, "forbidden")
    by_header = post_ipc(http, "events", bearer("loader") | {"X-Arrowport-Table": "hijacked_h"})
    assert_error(by_header, 403, "forbidden")
    by_json = post_json(http, "events", bearer("loader"), target_table="hijacked_j")
    assert_error(by_json, 403, "forbidden")
    assert not {"hijacked_q", "hijacked_h", "hijacked_j"} & tables(http)


def test_a_dotted_stream_without_a_table_of_its_own_is_not_a_schema_for_its_token(
    http: httpx.Client,
) -> None:
    # The stream's name picks no schema, so the token has no table it may write.
    assert_error(post_ipc(http, "app.v1", bearer("dotted")), 400, "invalid_name")
    assert_error(post_ipc(http, "app.v1", bearer("dotted"), table="app.v1"), 403, "forbidden")
    assert_error(post_ipc(http, "app.v1", bearer("dotted"), table="v1"), 403, "forbidden")
    assert not {"v1", "app.v1"} & tables(http)


def test_scopeless_token_reads_metrics_only(http: httpx.Client) -> None:
    assert http.get("/metrics", headers=bearer("scraper")).status_code == 200
    assert http.get("/openapi.json", headers=bearer("scraper")).status_code == 200
    assert_error(post_ipc(http, "events", bearer("scraper")), 403, "forbidden")


# -- allowed -------------------------------------------------------------------------------------


def test_stream_limited_token_ingests_its_stream(http: httpx.Client) -> None:
    response = post_ipc(http, "events", bearer("loader"))
    assert response.status_code == 200, response.text
    also_json = post_json(http, "events", bearer("loader"), target_table="event_rows")
    assert also_json.status_code == 200, also_json.text
    count = http.post(
        "/query",
        json={"sql": "SELECT count(*) AS n FROM event_rows"},
        headers=bearer("reader") | {"Accept": "application/json"},
    )
    assert count.status_code == 200, count.text
    assert count.json()["rows"][0]["n"] >= 6


def test_unlimited_ingest_token_picks_any_stream_and_table(http: httpx.Client) -> None:
    response = post_ipc(http, "free_stream", bearer("anyloader"), table="free_table")
    assert response.status_code == 200, response.text
    assert "free_table" in tables(http)


def test_read_token_reads(http: httpx.Client) -> None:
    post_ipc(http, "readable", bearer("root"))
    assert http.get("/tables/readable", headers=bearer("reader")).json()["row_count"] == 3
    assert http.get("/streams", headers=bearer("reader")).json()[0]["name"] == "events"
    response = http.post(
        "/query",
        content="SELECT sum(id) AS s FROM readable",
        headers=bearer("reader") | {"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    assert pa.ipc.open_stream(response.content).read_all().column("s")[0].as_py() == 3


def test_admin_does_everything(http: httpx.Client) -> None:
    assert post_ipc(http, "admin_stream", bearer("root"), table="admin_table").status_code == 200
    assert "admin_table" in tables(http)
    for method, path in PROTECTED[1:]:
        response = http.request(method, path, json={"sql": "SELECT 1"}, headers=bearer("root"))
        assert response.status_code == 200, (path, response.text)


def test_producer_offsets_for_own_stream_or_readers(http: httpx.Client) -> None:
    own = http.get("/streams/events/producers/p1", headers=bearer("loader"))
    assert own.status_code == 200, own.text
    other = http.get("/streams/elsewhere/producers/p1", headers=bearer("loader"))
    assert_error(other, 403, "forbidden")
    assert http.get("/streams/elsewhere/producers/p1", headers=bearer("reader")).status_code == 200


def test_basic_credentials_work_over_http(http: httpx.Client) -> None:
    response = http.get("/tables", auth=httpx.BasicAuth("reader", SECRETS["reader"]))
    assert response.status_code == 200, response.text


def test_secrets_never_reach_the_log(secured: ArrowportProcess, http: httpx.Client) -> None:
    http.get("/tables", headers=bearer("reader"))
    http.get("/tables", headers={"Authorization": "Bearer " + SECRETS["root"] + "typo"})
    post_ipc(http, "events", bearer("loader"))
    log = _log_once(secured, lambda log: '"token": "reader"' in log or '"token":"reader"' in log)
    assert '"token": "reader"' in log or '"token":"reader"' in log  # who, for the audit trail
    for name, secret in SECRETS.items():
        assert secret not in log
        # The random part alone (it may itself contain "_", so strip the known prefix).
        assert secret.removeprefix(f"{TOKEN_PREFIX}{name}_") not in log


# -- settings ------------------------------------------------------------------------------------


def test_public_metrics_and_docs_settings(tmp_path: Path) -> None:
    config = {"auth": {"tokens": TOKENS[:1], "public_metrics": True, "public_docs": True}}
    with ArrowportProcess(tmp_path, config=config) as server:
        assert httpx.get(server.url + "/metrics").status_code == 200
        assert httpx.get(server.url + "/docs").status_code == 200
        assert httpx.get(server.url + "/openapi.json").status_code == 200
        assert_error(httpx.get(server.url + "/tables"), 401, "unauthenticated")


def test_no_tokens_on_loopback_is_open(fresh_server: ArrowportProcess) -> None:
    with httpx.Client(base_url=fresh_server.url) as client:
        assert post_ipc(client, "open_stream", {}).status_code == 200
        assert client.get("/tables").status_code == 200
        assert client.get("/docs").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_tokens_from_the_environment_as_json(tmp_path: Path) -> None:
    env = {"ARROWPORT_AUTH_TOKENS": json.dumps(TOKENS[1:2])}
    with ArrowportProcess(tmp_path, env=env) as server:
        assert_error(httpx.get(server.url + "/tables"), 401, "unauthenticated")
        assert httpx.get(server.url + "/tables", headers=bearer("reader")).status_code == 200


def test_no_cors_headers_by_default(http: httpx.Client) -> None:
    response = http.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = http.options(
        "/query",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
        },
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_only_for_listed_origins(tmp_path: Path) -> None:
    env = {"ARROWPORT_API_CORS_ORIGINS": "https://app.example, https://other.example"}
    with ArrowportProcess(tmp_path, env=env) as server:
        preflight = {"Access-Control-Request-Method": "POST"}
        good = httpx.options(
            server.url + "/query", headers={"Origin": "https://app.example"} | preflight
        )
        assert good.headers["access-control-allow-origin"] == "https://app.example"
        bad = httpx.options(
            server.url + "/query", headers={"Origin": "https://evil.example"} | preflight
        )
        assert bad.headers.get("access-control-allow-origin") != "https://evil.example"
        assert "access-control-allow-origin" not in bad.headers
        assert_error(bad, 403, "forbidden_origin")
        method = httpx.options(
            server.url + "/query",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "DELETE"},
        )
        assert_error(method, 400, "bad_request")
        assert "Disallowed CORS method" in method.json()["message"]
        private = httpx.options(
            server.url + "/query",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Private-Network": "true",
            }
            | preflight,
        )
        assert_error(private, 400, "bad_request")
        assert "Disallowed CORS private-network" in private.json()["message"]
        # A binary ingest (answered before FastAPI's routing) gets the same CORS answer.
        with httpx.Client(base_url=server.url) as client:
            landed = post_ipc(client, "cors_events", {"Origin": "https://app.example"})
            assert landed.status_code == 200, landed.text
            assert landed.headers["access-control-allow-origin"] == "https://app.example"


@pytest.mark.parametrize(
    "configured",
    ["http://App.example.com:3000/", "HTTP://APP.EXAMPLE.COM:3000", "http://app.example.com:3000"],
)
def test_cors_origins_are_compared_as_browsers_send_them(tmp_path: Path, configured: str) -> None:
    """A configured origin with capitals or a trailing slash grants what the origin guard admits."""
    config = CONFIG | {"api": {"cors_origins": [configured, "https://secure.example:443/"]}}
    origin = "http://app.example.com:3000"
    with ArrowportProcess(tmp_path, config=config) as server:
        preflight = httpx.options(
            server.url + "/query",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == origin
        with httpx.Client(base_url=server.url) as client:
            read = client.get("/tables", headers={"Origin": origin} | bearer("reader"))
            assert read.status_code == 200, read.text
            assert read.headers["access-control-allow-origin"] == origin
            landed = post_ipc(client, "events", {"Origin": origin} | bearer("loader"))
            assert landed.status_code == 200, landed.text
            assert landed.headers["access-control-allow-origin"] == origin
            # The scheme's default port is left out of Origin by browsers.
            secure = client.get(
                "/tables", headers={"Origin": "https://secure.example"} | bearer("reader")
            )
            assert secure.status_code == 200, secure.text
            assert secure.headers["access-control-allow-origin"] == "https://secure.example"
            foreign = client.get(
                "/tables", headers={"Origin": "http://app.example.com:3001"} | bearer("reader")
            )
            assert_error(foreign, 403, "forbidden_origin")
            assert "access-control-allow-origin" not in foreign.headers


# -- start-up ------------------------------------------------------------------------------------


def run_serve(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
    return subprocess.run(
        [*SERVE, "--db", str(tmp_path / "db.duckdb"), *args],
        cwd=tmp_path,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--host", "0.0.0.0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--allow-unauthenticated" in lines[0]
    assert "auth.tokens" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "db.duckdb").exists()


def test_refuses_a_public_flight_address_without_tokens(tmp_path: Path) -> None:
    result = run_serve(tmp_path, env={"ARROWPORT_FLIGHT_HOST": "0.0.0.0"})
    assert result.returncode == 2
    assert "0.0.0.0" in result.stderr
    assert "--allow-unauthenticated" in result.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--allow-unauthenticated"], {}),
        ([], {"ARROWPORT_AUTH_ALLOW_UNAUTHENTICATED": "true"}),
    ],
    ids=["flag", "config-key"],
)
def test_public_address_without_tokens_when_allowed(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    server = ArrowportProcess(tmp_path, args=["--host", "0.0.0.0", *args], env=env)
    with server:
        assert httpx.get(server.url + "/tables").status_code == 200
        warnings = [line for line in server.lines if "AUTHENTICATION IS OFF" in line]
        assert warnings, server.lines
        assert json.loads(warnings[0])["level"] == "warning"


def test_public_address_with_tokens_starts_and_requires_them(tmp_path: Path) -> None:
    config = {"auth": {"tokens": TOKENS}}
    with ArrowportProcess(tmp_path, config=config, args=["--host", "0.0.0.0"]) as server:
        assert_error(httpx.get(server.url + "/tables"), 401, "unauthenticated")
        assert httpx.get(server.url + "/tables", headers=bearer("reader")).status_code == 200
        assert not [line for line in server.lines if "AUTHENTICATION IS OFF" in line]


def test_a_secret_in_place_of_its_hash_is_refused_without_echo(tmp_path: Path) -> None:
    secret = new_token("oops")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"auth": {"tokens": [{"name": "oops", "secret_hash": secret}]}})
    )
    result = run_serve(tmp_path, "--config", str(config))
    assert result.returncode == 2
    assert "auth.tokens.0.secret_hash" in result.stderr
    assert secret not in result.stderr
    assert "Traceback" not in result.stderr


# -- arrowport token create ----------------------------------------------------------------------


def test_token_create_prints_a_secret_that_works_when_pasted(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CREATE, "pipeline", "--scope", "ingest", "--scope", "read", "--stream", "clicks"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    secret, line = result.stdout.strip().splitlines()
    assert secret.startswith("ap_pipeline_")
    assert len(secret) > 40
    assert secret not in line
    assert "Bearer" in result.stderr  # how to use it
    config_text = "auth:\n  tokens:\n  " + line + "\n"
    (tmp_path / "config.yaml").write_text(config_text)
    parsed = yaml.safe_load(config_text)["auth"]["tokens"][0]
    assert parsed["scopes"] == ["ingest", "read"]
    assert parsed["streams"] == ["clicks"]
    server = ArrowportProcess(tmp_path, args=["--config", str(tmp_path / "config.yaml")])
    with server, httpx.Client(base_url=server.url) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        assert post_ipc(client, "clicks", auth).status_code == 200
        assert_error(post_ipc(client, "views", auth), 403, "forbidden")
        assert client.get("/tables/clicks", headers=auth).json()["row_count"] == 3
        assert_error(client.get("/tables"), 401, "unauthenticated")


def test_token_create_without_a_scope_makes_the_documented_scraper_token(tmp_path: Path) -> None:
    """The README's `prometheus` token (`scopes: []`, /metrics and /docs only): the command
    refused to make it (--scope was required), leaving the config line to be written by hand."""
    result = subprocess.run(
        [*CREATE, "prometheus"], capture_output=True, text=True, timeout=60, check=True
    )
    secret, line = result.stdout.strip().splitlines()
    assert "/metrics" in result.stderr
    (tmp_path / "config.yaml").write_text("auth:\n  tokens:\n  " + line + "\n")
    server = ArrowportProcess(tmp_path, args=["--config", str(tmp_path / "config.yaml")])
    with server, httpx.Client(base_url=server.url) as client:
        auth = {"Authorization": f"Bearer {secret}"}
        assert client.get("/metrics", headers=auth).status_code == 200
        assert client.get("/docs", headers=auth).status_code == 200
        assert_error(client.get("/tables", headers=auth), 403, "forbidden")
        assert_error(post_ipc(client, "clicks", auth), 403, "forbidden")


def test_token_create_secrets_differ_and_bad_names_fail() -> None:
    def create(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CREATE, name, "--scope", "read"],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first, second = create("same"), create("same")
    assert first.stdout.splitlines()[0] != second.stdout.splitlines()[0]
    bad = create("no spaces")
    assert bad.returncode == 2
    assert "name" in bad.stderr
    assert bad.stdout == ""


# -- Arrow Flight: the same tokens, the same scopes ------------------------------------------------


def flight_options(name: str | None) -> flight.FlightCallOptions:
    headers = [] if name is None else [(b"authorization", f"Bearer {SECRETS[name]}".encode())]
    return flight.FlightCallOptions(headers=headers)


def flight_put(server: ArrowportProcess, stream: str, options: flight.FlightCallOptions) -> None:
    with flight.FlightClient(server.flight_url) as client:
        writer, _ = client.do_put(
            flight.FlightDescriptor.for_path(stream), rows().schema, options=options
        )
        writer.write_table(rows())
        writer.close()


def test_flight_without_a_token_is_unauthenticated(
    secured: ArrowportProcess, http: httpx.Client
) -> None:
    with pytest.raises(flight.FlightUnauthenticatedError):
        flight_put(secured, "flight_anon", flight_options(None))
    with (
        flight.FlightClient(secured.flight_url) as client,
        pytest.raises(flight.FlightUnauthenticatedError),
    ):
        list(client.list_flights(options=flight_options(None)))
    assert "flight_anon" not in tables(http)


def test_flight_puts_refused_before_reading_leave_no_warnings(tmp_path: Path) -> None:
    """A put refused before its first message is read (no token, a wrong one) never starts
    gRPC's request stream: the server's log has no "coroutine ... was never awaited" for it."""
    wrong = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer wrong")])
    with ArrowportProcess(tmp_path, config=CONFIG) as server:
        for options in [wrong] * 100 + [flight_options(None)] * 20:
            with pytest.raises(flight.FlightUnauthenticatedError):
                flight_put(server, "refused", options)
        server.stop()
    time.sleep(0.2)  # the stderr reader catches up with the last lines
    assert not [line for line in server.lines if "never awaited" in line]


def test_flight_scopes_match_http(secured: ArrowportProcess, http: httpx.Client) -> None:
    with pytest.raises(flight.FlightUnauthorizedError):
        flight_put(secured, "flight_reader", flight_options("reader"))
    with pytest.raises(flight.FlightUnauthorizedError):
        flight_put(secured, "not_events", flight_options("loader"))
    flight_put(secured, "events", flight_options("loader"))
    with flight.FlightClient(secured.flight_url) as client:
        with pytest.raises(flight.FlightUnauthorizedError):
            list(client.list_flights(options=flight_options("loader")))
        assert list(client.list_flights(options=flight_options("reader"))) is not None
    assert not {"flight_reader", "not_events"} & tables(http)


def test_flight_handshake_with_basic_credentials(
    secured: ArrowportProcess, http: httpx.Client
) -> None:
    with flight.FlightClient(secured.flight_url) as client:
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token(b"anyloader", b"wrong")
        header = client.authenticate_basic_token(b"anyloader", SECRETS["anyloader"].encode())
        assert header[0].lower() == b"authorization"
        assert header[1].startswith(b"Bearer ")
        options = flight.FlightCallOptions(headers=[header])
        writer, _ = client.do_put(
            flight.FlightDescriptor.for_path("flight_handshake"), rows().schema, options=options
        )
        writer.write_table(rows())
        writer.close()
    assert "flight_handshake" in tables(http)


def flight_error_text(call: Callable[[], object]) -> str:
    """The server's message in the error ``call()`` raises (get_schema's arrives as a plain
    OSError)."""
    with pytest.raises((flight.FlightError, OSError)) as raised:
        call()
    assert "Traceback" not in str(raised.value)
    return grpc_error(raised.value)[1]


def read_calls(
    client: flight.FlightClient, options: flight.FlightCallOptions
) -> list[Callable[[], object]]:
    table = flight.FlightDescriptor.for_path("event_rows")
    return [
        lambda: list(client.list_flights(options=options)),
        lambda: client.get_schema(table, options=options),
        lambda: client.get_flight_info(table, options=options),
        lambda: client.do_get(flight.Ticket(b"event_rows"), options=options).read_all(),
    ]


def test_flight_refusals_start_with_the_code_and_carry_no_traceback(
    secured: ArrowportProcess,
) -> None:
    unknown = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer ap_x_not_a_token")])
    with flight.FlightClient(secured.flight_url) as client:
        for options in (flight_options(None), unknown):
            for call in [*read_calls(client, options), partial(client.list_actions, options)]:
                assert flight_error_text(call).startswith("unauthenticated: ")
        for call in read_calls(client, flight_options("loader")):
            text = flight_error_text(call)
            assert text.startswith("forbidden: "), text
            assert "'read' scope" in text
        with pytest.raises(flight.FlightUnauthorizedError):
            client.get_flight_info(
                flight.FlightDescriptor.for_path("event_rows"), options=flight_options("loader")
            )


def test_flight_reads_with_the_read_scope(secured: ArrowportProcess) -> None:
    flight_put(secured, "events", flight_options("loader"))
    reader = flight_options("reader")
    table = flight.FlightDescriptor.for_path("event_rows")
    with flight.FlightClient(secured.flight_url) as client:
        assert "event_rows" in {
            info.descriptor.path[0].decode() for info in client.list_flights(options=reader)
        }
        assert client.get_schema(table, options=reader).schema.names == ["id"]
        assert client.get_flight_info(table, options=reader).total_records >= 3
        read = client.do_get(flight.Ticket(b"event_rows"), options=reader).read_all()
        assert read.num_rows >= 3


def flight_put_to(
    client: flight.FlightClient,
    descriptor: flight.FlightDescriptor,
    options: flight.FlightCallOptions,
) -> None:
    writer, _ = client.do_put(descriptor, rows().schema, options=options)
    writer.write_table(rows())
    writer.close()


def test_flight_stream_limited_token_writes_only_its_table(
    secured: ArrowportProcess, http: httpx.Client
) -> None:
    before = tables(http)
    elsewhere = json.dumps({"stream_name": "events", "target_table": "loader_elsewhere"})
    with flight.FlightClient(secured.flight_url) as client:
        descriptor = flight.FlightDescriptor.for_command(elsewhere.encode())
        with pytest.raises(flight.FlightUnauthorizedError, match="event_rows"):
            flight_put_to(client, descriptor, flight_options("loader"))
    assert "loader_elsewhere" not in tables(http)
    # An unlimited ingest token may choose the table.
    anywhere = json.dumps({"stream_name": "events", "target_table": "anyloader_table"})
    with flight.FlightClient(secured.flight_url) as client:
        descriptor = flight.FlightDescriptor.for_command(anywhere.encode())
        flight_put_to(client, descriptor, flight_options("anyloader"))
    assert tables(http) - before == {"anyloader_table"}


def test_flight_producer_offset_action_follows_the_http_route(secured: ArrowportProcess) -> None:
    def offset(stream: str, name: str) -> dict[str, Any]:
        body = json.dumps({"stream": stream, "producer_id": "p"}).encode()
        with flight.FlightClient(secured.flight_url) as client:
            results = list(
                client.do_action(
                    flight.Action("producer_offset", body), options=flight_options(name)
                )
            )
        return json.loads(results[0].body.to_pybytes())  # type: ignore[no-any-return]

    assert offset("events", "loader")["stream"] == "events"  # its own stream
    assert offset("other", "reader")["last_sequence"] is None  # readers see every stream
    for stream, name in (("other", "loader"), ("events", "scraper")):
        with pytest.raises(flight.FlightUnauthorizedError) as refused:
            offset(stream, name)
        status, message = grpc_error(refused.value)
        assert status == "PERMISSION_DENIED"
        assert message.startswith("forbidden: "), message


def test_flight_handshake_refuses_a_secret_under_another_name(secured: ArrowportProcess) -> None:
    with flight.FlightClient(secured.flight_url) as client:
        with pytest.raises(flight.FlightUnauthenticatedError) as refused:
            client.authenticate_basic_token(b"reader", SECRETS["root"].encode())
        assert grpc_error(refused.value)[1].startswith("unauthenticated: ")
        # Basic credentials also work on any call, like HTTP Basic.
        basic = base64.b64encode(f"reader:{SECRETS['reader']}".encode())
        options = flight.FlightCallOptions(headers=[(b"authorization", b"Basic " + basic)])
        assert list(client.list_flights(options=options)) is not None


def test_flight_reads_no_request_of_an_unauthenticated_call(tmp_path: Path) -> None:
    """The token is checked before gRPC reads a call's request message: large requests with a
    wrong token, on every call of one request, are refused UNAUTHENTICATED without the server
    holding them (each was read whole first: eight 200 MB tickets took 1.8 GB)."""
    huge = b"x" * 96 * 1024**2
    options = flight.FlightCallOptions(headers=[(b"authorization", b"Bearer ap_nobody_x")])
    calls: list[Callable[[flight.FlightClient], object]] = [
        lambda client: client.do_get(flight.Ticket(huge), options=options).read_all(),
        lambda client: client.get_flight_info(
            flight.FlightDescriptor.for_command(huge), options=options
        ),
        lambda client: client.get_schema(
            flight.FlightDescriptor.for_command(huge), options=options
        ),
        lambda client: list(client.do_action(flight.Action("producer_offset", huge), options)),
        lambda client: list(client.list_flights(huge, options=options)),
    ]
    with ArrowportProcess(tmp_path, config=CONFIG) as server:
        before = server.peak_rss()

        def refused(call: Callable[[flight.FlightClient], object]) -> str:
            with flight.FlightClient(server.flight_url) as client:
                return flight_error_text(lambda: call(client))

        with ThreadPoolExecutor(len(calls)) as pool:
            messages = list(pool.map(refused, calls))
        for message in messages:
            assert message.startswith("unauthenticated: "), message
        assert server.peak_rss() - before < 64 * 1024**2
        assert server.healthy()


def test_one_token_holds_at_most_its_share_of_flight_calls(tmp_path: Path) -> None:
    """``flight.max_concurrent_calls_per_client``: a token with that many calls running (here
    requests it never sends) is refused another, RESOURCE_EXHAUSTED ``overloaded``, while
    other tokens are served; its calls count again once they end."""
    config = {
        **CONFIG,
        "flight": {"max_concurrent_calls": 8, "max_concurrent_calls_per_client": 2},
        "limits": {"body_timeout_seconds": 30},
    }
    with ArrowportProcess(tmp_path, config=config) as server:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.flight_port}")
        release = threading.Event()

        def unsent() -> Iterator[bytes]:
            release.wait(30)
            yield from ()

        get = channel.stream_stream(
            "/arrow.flight.protocol.FlightService/DoGet",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        reader = [("authorization", f"Bearer {SECRETS['reader']}")]
        held = [get(unsent(), metadata=reader, timeout=60) for _ in range(2)]
        try:
            time.sleep(0.5)
            with flight.FlightClient(server.flight_url) as client:
                mine = flight_options("reader")
                with pytest.raises(pa.ArrowException) as refused:  # RESOURCE_EXHAUSTED
                    list(client.list_flights(options=mine))
                message = grpc_error(refused.value)[1]
                assert message.startswith("overloaded: this token has 2 Flight calls running"), (
                    message
                )
                assert "flight.max_concurrent_calls_per_client" in message
                assert list(client.list_flights(options=flight_options("root"))) is not None
        finally:
            release.set()
            for call in held:
                with contextlib.suppress(grpc.RpcError):
                    tuple(call)
            channel.close()
        with flight.FlightClient(server.flight_url) as client:
            assert list(client.list_flights(options=flight_options("reader"))) is not None


def test_flight_unauthenticated_calls_are_counted(
    secured: ArrowportProcess, http: httpx.Client
) -> None:
    def refused() -> float:
        text = http.get("/metrics", headers=bearer("root")).text
        for line in text.splitlines():
            if line.startswith("arrowport_errors_total{") and all(
                label in line for label in ('code="unauthenticated"', 'protocol="flight"')
            ):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = refused()
    with (
        flight.FlightClient(secured.flight_url) as client,
        pytest.raises(flight.FlightUnauthenticatedError),
    ):
        list(client.list_flights(options=flight_options(None)))
    assert refused() == before + 1


def test_flight_secrets_never_reach_the_log(secured: ArrowportProcess) -> None:
    wrong = "ap_reader_" + "x" * 43
    with flight.FlightClient(secured.flight_url) as client:
        client.authenticate_basic_token(b"anyloader", SECRETS["anyloader"].encode())
        with pytest.raises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token(b"reader", wrong.encode())
        bad = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {wrong}".encode())])
        with pytest.raises(flight.FlightUnauthenticatedError):
            list(client.list_flights(options=bad))
        with pytest.raises(flight.FlightUnauthorizedError):
            list(client.list_flights(options=flight_options("loader")))
    flight_put(secured, "flight_logged", flight_options("root"))
    log = _log_once(secured, lambda log: '"method": "list_flights"' in log)
    assert '"method": "list_flights"' in log  # the refusals were logged ...
    for secret in [*SECRETS.values(), wrong]:
        assert secret not in log  # ... without any credential
        assert base64.b64encode(secret.encode()).decode()[:20] not in log
