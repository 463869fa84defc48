"""Every function DuckDB lists, called by a read-only token against one real server.

For each distinct (name, type) in ``duckdb_functions()`` of the installed DuckDB, one plausible
call (:mod:`tests.function_calls`) goes through ``POST /query``, answered as JSON and, unless
refused, as Arrow IPC too. Whatever the guard decides, the server must answer cleanly (200, 400,
403, 408, 413 or 422; a 403 with code ``read_only``) within the query timeout, keep answering
``/health``, and never show its database's path or directory. The guard must follow its
allow-list (``read_functions.json``: expression functions, table functions): a function not on
the list for its position is refused, one on it is not refused by name. The calls known to
crash DuckDB 1.5.5, change its global state or leak paths and settings are sent explicitly too.

Every problem is collected and reported at once, with the server's last log lines for a call
that took it down; the server is then restarted so that the rest of the sweep still runs.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pytest

from arrowport.auth import hash_secret, new_token
from tests.conftest import ARROW_STREAM, ipc_bytes
from tests.function_calls import FunctionCall, function_calls
from tests.server import ArrowportProcess

READER = new_token("reader")
ROOT = new_token("root")
JSON = "application/json"
CLEAN_STATUSES = frozenset({200, 400, 403, 408, 413, 422})
QUERY_TIMEOUT_SECONDS = 5
# An answer, refused or not, comes within the query timeout plus this much.
ANSWER_GRACE_SECONDS = 3
DEEP_ARRAY = "(repeat('[', 100000) || repeat(']', 100000))"
# The same, in pieces each within repeat()'s allowed size.
DEEP_ARRAY_JOINED = "(" + "||".join(["repeat('[', 10000)"] * 10 + ["repeat(']', 10000)"] * 10) + ")"

_CATALOGUE = json.loads(
    resources.files("arrowport.storage").joinpath("read_functions.json").read_text("utf-8")
)
ALLOWED = {
    "expression": frozenset(_CATALOGUE["expression_functions"]),
    "table": frozenset(_CATALOGUE["table_functions"]),
    "pragma": frozenset[str](),  # a PRAGMA statement is never a read-only query
}

# Calls known to crash DuckDB 1.5.5, hold the server, change its global state or show paths
# and settings. {db}, {wal} and {dir} stand for the server's database file, its write-ahead
# log and their directory.
DANGEROUS: dict[str, tuple[str, list[Any] | None]] = {
    "enable_logging_to_file": (
        "SELECT * FROM enable_logging(storage := 'file', storage_path := 'log.csv')",
        None,
    ),
    "duckdb_logs": ("SELECT * FROM duckdb_logs()", None),
    "truncate_duckdb_logs": ("SELECT * FROM truncate_duckdb_logs()", None),
    "checkpoint": ("SELECT * FROM checkpoint()", None),
    "force_checkpoint": ("SELECT * FROM force_checkpoint()", None),
    "read_blob_database": ("SELECT * FROM read_blob('{db}')", None),
    "read_blob_wal": ("SELECT * FROM read_blob('{wal}')", None),
    "pragma_database_list": ("PRAGMA database_list", None),
    "duckdb_databases": ("SELECT * FROM duckdb_databases()", None),
    "duckdb_settings": ("SELECT * FROM duckdb_settings()", None),
    "current_setting_allowed_paths": ("SELECT current_setting('allowed_paths')", None),
    "query": ("SELECT * FROM query('SELECT 1')", None),
    "duckdb_databases_view": ("FROM duckdb_databases", None),
    "pg_settings_view": ("FROM pg_catalog.pg_settings", None),
    # An INTERNAL error in DuckDB 1.5.5, which invalidated the database until a restart.
    "reservoir_quantile_no_quantiles": ("SELECT reservoir_quantile(1.5, []) FROM range(3)", None),
    "lag_int64_min": ("SELECT lag(i, -9223372036854775808) OVER () FROM t", None),
    "lag_parameter_offset": ("SELECT lag(i, ?) OVER () FROM t", [-9223372036854775808]),
    "deep_json_to_variant": (f"SELECT {DEEP_ARRAY}::JSON::VARIANT", None),
    # A VARIANT from a JSON structure whose letters are escapes, reached without a cast.
    "deep_json_to_escaped_variant": (
        f"SELECT cast_to_type({DEEP_ARRAY_JOINED}::JSON, "
        """from_json('[]', '["\\u0076ariant"]')[1]) IS NULL AS v""",
        None,
    ),
    # Widths taken from an argument: gigabytes outside DuckDB's memory_limit.
    "format_argument_width": ("SELECT length(format('{{:>{{}}}}', 'x', 2147483647)) AS n", None),
    "printf_argument_width": ("SELECT length(printf('%*d', 1000000000, 1)) AS n", None),
    "json_structure_deep": (f"SELECT json_structure{DEEP_ARRAY}", None),
    "internal_schema": ("SELECT * FROM _arrowport.idempotency_keys", None),
    # DuckDB evaluates a PRAGMA's arguments, and runs import_database's file reads, while it
    # splits the text into statements: before any check of what the statement is.
    "pragma_argument_json_structure_deep": (
        f"PRAGMA table_info(json_structure{DEEP_ARRAY})",
        None,
    ),
    "pragma_argument_deep_json_to_variant": (
        f"PRAGMA table_info({DEEP_ARRAY}::JSON::VARIANT::VARCHAR)",
        None,
    ),
    "pragma_argument_sleep": (
        f"PRAGMA table_info(sleep_ms({(QUERY_TIMEOUT_SECONDS + ANSWER_GRACE_SECONDS + 1) * 1000})"
        "::VARCHAR)",
        None,
    ),
    "pragma_import_database": ("PRAGMA import_database('{dir}')", None),
}


def tokens() -> list[dict[str, object]]:
    return [
        {"name": "reader", "secret_hash": hash_secret(READER), "scopes": ["read"]},
        {"name": "root", "secret_hash": hash_secret(ROOT), "scopes": ["admin"]},
    ]


@dataclass
class Answer:
    """What one query got: a response, or the exception that stood for one."""

    status: int | None
    body: bytes
    media_type: str
    seconds: float
    failure: str | None = None

    def error(self) -> dict[str, Any]:
        """The JSON error body ({} if there is none)."""
        try:
            found = json.loads(self.body)
        except ValueError:
            return {}
        return found if isinstance(found, dict) else {}

    @property
    def code(self) -> Any:
        return self.error().get("code")

    @property
    def refused(self) -> bool:
        return self.status == 403 and self.code == "read_only"

    def shown(self) -> str:
        if self.failure:
            return self.failure
        if self.status == 200 and self.media_type == ARROW_STREAM:
            return f"<{len(self.body)} bytes of Arrow IPC>"
        return self.body[:300].decode("utf-8", "replace")


class Prober:
    """Sends queries as the read-only token and checks the server after each; a server that
    stops answering is restarted (its last log lines kept for the report)."""

    def __init__(self, server: ArrowportProcess) -> None:
        self.server = server
        self.client = self._client()

    def _client(self) -> httpx.Client:
        timeout = httpx.Timeout(30.0, connect=5.0)
        headers = {"Authorization": f"Bearer {READER}"}
        return httpx.Client(base_url=self.server.url, headers=headers, timeout=timeout)

    @property
    def private(self) -> list[str]:
        """The server's database path and its directory: no answer may contain them."""
        return [str(self.server.db_path), str(self.server.db_path.parent)]

    def ask(self, sql: str, params: list[Any] | None = None, accept: str = JSON) -> Answer:
        request: dict[str, Any] = {"sql": sql}
        if params is not None:
            request["params"] = params
        started = time.monotonic()
        try:
            response = self.client.post("/query", json=request, headers={"Accept": accept})
        except httpx.HTTPError as exc:
            failure = f"no answer: {type(exc).__name__}: {exc}"
            return Answer(None, b"", accept, time.monotonic() - started, failure)
        return Answer(response.status_code, response.content, accept, time.monotonic() - started)

    def healthy(self) -> bool:
        """The server process runs and is ready (on a fresh connection if the last one was
        closed under us): an INTERNAL error can invalidate the database, process alive."""
        for _ in range(3):
            if not self.server.alive():
                return False
            try:
                return self.client.get("/ready", timeout=10.0).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        return False

    def revive(self) -> str:
        """Restart a dead or stuck server; returns what happened, with its last log lines."""
        proc = self.server.proc
        exit_code = proc.poll() if proc is not None else None
        log = "\n    ".join(line[:400] for line in self.server.lines[-12:])
        self.server.kill()
        self.client.close()
        self.server.start()
        self.client = self._client()
        if exit_code is None:
            return f"server stopped answering /ready; its last log lines:\n    {log}"
        return f"server died (exit code {exit_code}); its last log lines:\n    {log}"

    def problems(self, answer: Answer) -> list[str]:
        """What is wrong with ``answer`` and with the server after it (restarting it if so)."""
        found: list[str] = []
        if answer.failure:
            found.append(answer.failure)
        elif answer.status not in CLEAN_STATUSES:
            found.append(f"status {answer.status}")
        elif answer.status == 403 and answer.code != "read_only":
            found.append(f"403 with code {answer.code!r}, not 'read_only'")
        elif answer.status == 200 and not _readable(answer):
            found.append(f"the 200 answer is not a readable {answer.media_type} body")
        if answer.seconds > QUERY_TIMEOUT_SECONDS + ANSWER_GRACE_SECONDS:
            found.append(
                f"answered after {answer.seconds:.1f} s, past the {QUERY_TIMEOUT_SECONDS} s "
                "query timeout"
            )
        text = answer.body.decode("utf-8", "replace")
        leaked = [path for path in self.private if path in text]
        if leaked:
            found.append(f"the answer shows the server's path {leaked[0]}")
        if answer.status not in CLEAN_STATUSES:
            # The server may drop the connection after such an answer: start the next
            # request on a fresh one, so that it is judged on its own.
            self.client.close()
            self.client = self._client()
        if not self.healthy():
            found.append(self.revive())
        return found

    def close(self) -> None:
        self.client.close()


def _readable(answer: Answer) -> bool:
    try:
        if answer.media_type == ARROW_STREAM:
            pa.ipc.open_stream(answer.body).read_all()
            return True
        return isinstance(json.loads(answer.body).get("rows"), list)
    except (pa.ArrowException, ValueError, AttributeError):
        return False


@pytest.fixture(scope="module")
def prober(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prober]:
    config = {
        "auth": {"tokens": tokens()},
        "limits": {"query_timeout_seconds": QUERY_TIMEOUT_SECONDS},
    }
    rows = pa.table(
        {
            "i": pa.array([1, 2, 3], pa.int64()),
            "s": pa.array(["a", "b", None]),
            "d": pa.array([19723, 19724, None], pa.date32()),
            "ts": pa.array([1704067200000000, None, 1704153600000000], pa.timestamp("us")),
        }
    )
    with ArrowportProcess(tmp_path_factory.mktemp("sweep"), config=config) as server:
        response = httpx.post(
            server.url + "/stream/t",
            content=ipc_bytes(rows),
            headers={"Content-Type": ARROW_STREAM, "Authorization": f"Bearer {ROOT}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        found = Prober(server)
        yield found
        found.close()


def sweep_calls() -> list[FunctionCall]:
    """One call per function of a pristine database of the installed DuckDB."""
    with duckdb.connect(":memory:") as con:
        return function_calls(con)


def guard_problems(call: FunctionCall, answer: Answer) -> list[str]:
    """Where the guard's decision on ``call`` departs from the allow-list."""
    allowed = call.name in ALLOWED[call.position]
    if not allowed and not answer.refused:
        return [f"not on the {call.position} allow-list, yet not refused as read_only"]
    named = str(answer.error().get("function", "")).lower()
    # A rule about the arguments (a literal size or offset) is no refusal of the function.
    conditional = "rule" in answer.error()
    if allowed and answer.refused and named == call.name.lower() and not conditional:
        return [f"on the {call.position} allow-list, yet refused by name"]
    return []


def report(problems: list[str]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(f"- {p}" for p in problems)


@pytest.mark.parametrize(("sql", "params"), DANGEROUS.values(), ids=DANGEROUS.keys())
def test_known_dangerous_calls_are_refused(
    prober: Prober, sql: str, params: list[Any] | None
) -> None:
    db = prober.server.db_path
    sql = sql.format(db=db, wal=f"{db}.wal", dir=db.parent)
    answer = prober.ask(sql, params)
    problems = prober.problems(answer)
    if not answer.refused:
        problems.append(f"not refused as read_only: {answer.status} {answer.shown()}")
    assert not problems, report(problems)


def test_every_function_answers_cleanly_and_follows_the_allow_list(prober: Prober) -> None:
    calls = sweep_calls()
    assert len(calls) > 900, "duckdb_functions() lists fewer functions than expected"
    statuses: Counter[int | None] = Counter()
    problems: list[str] = []
    for call in calls:
        for accept in (JSON, ARROW_STREAM):
            answer = prober.ask(call.sql, accept=accept)
            found = prober.problems(answer)
            if accept == JSON:
                statuses[answer.status] += 1
                found += guard_problems(call, answer)
            problems += [
                f"{call.name} ({call.function_type}): {what}\n  SQL: {call.sql}\n"
                f"  answer ({answer.media_type}): {answer.status} {answer.shown()}"
                for what in found
            ]
            if answer.refused:
                break  # refused before it ran: the format cannot matter
    print(f"function sweep: {len(calls)} calls, JSON answers by status {dict(statuses)}")
    assert not problems, report(problems)
