"""Write modes (append, replace, create, upsert), schema policies (strict, evolve) and dry runs."""

from __future__ import annotations

import json
import threading
from typing import Any

import duckdb
import httpx
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from tests.conftest import ARROW_STREAM, ipc_bytes, post_binary, post_json, query, table_rows
from tests.server import ArrowportProcess

ON_LAKE = True  # every test on the module's server runs on the DuckDB file and on a DuckLake


def post(client: httpx.Client, batch: pa.Table, **params: Any) -> httpx.Response:
    options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
    return post_binary(client, "modes", ipc_bytes(batch), options)


def columns(client: httpx.Client, table: str) -> dict[str, str]:
    info = client.get(f"/tables/{table}").json()
    return {c["name"]: c["type"] for c in info["columns"]}


def test_replace_swaps_contents(client: httpx.Client) -> None:
    assert post(client, pa.table({"k": [1, 2, 3]}), table="rep").status_code == 200
    response = post(client, pa.table({"k": [7], "extra": ["x"]}), table="rep", mode="replace")
    assert response.status_code == 200, response.text
    assert table_rows(client, "rep") == [{"k": 7, "extra": "x"}]


def test_replace_says_a_table_was_created_only_when_there_was_none(client: httpx.Client) -> None:
    new = post(client, pa.table({"k": [1, 2]}), table="rep_created", mode="replace")
    assert new.status_code == 200, new.text
    assert new.json()["table_created"] is True
    existing = post(client, pa.table({"k": [3]}), table="rep_created", mode="replace")
    assert existing.status_code == 200, existing.text
    assert existing.json()["table_created"] is False
    assert table_rows(client, "rep_created") == [{"k": 3}]
    dry = post(client, pa.table({"k": [4]}), table="rep_created", mode="replace", dry_run=True)
    assert dry.json()["table_created"] is False
    assert table_rows(client, "rep_created") == [{"k": 3}]


def test_create_refuses_existing_table(client: httpx.Client) -> None:
    assert post(client, pa.table({"k": [1]}), table="cre", mode="create").status_code == 200
    again = post(client, pa.table({"k": [2]}), table="cre", mode="create")
    assert again.status_code == 409
    assert again.json()["code"] == "table_exists"
    assert table_rows(client, "cre") == [{"k": 1}]


def test_upsert_replaces_matching_keys(client: httpx.Client) -> None:
    first = pa.table({"k": [1, 2], "v": ["a", "b"], "n": [10, 20]})
    assert post(client, first, table="ups", mode="upsert", key_columns="k").status_code == 200
    second = pa.table({"v": ["B", "C"], "k": [2, 3], "n": [21, 30]})
    response = post(client, second, table="ups", mode="upsert", key_columns="k")
    assert response.status_code == 200, response.text
    assert response.json()["rows_processed"] == 2
    assert table_rows(client, "ups") == [
        {"k": 1, "v": "a", "n": 10},
        {"k": 2, "v": "B", "n": 21},
        {"k": 3, "v": "C", "n": 30},
    ]


def test_upsert_duplicate_keys_refused_unless_last_wins(client: httpx.Client) -> None:
    seed = pa.table({"k": [1], "v": ["a"]})
    assert post(client, seed, table="dup", mode="upsert", key_columns="k").status_code == 200
    repeated = pa.table({"k": [5, 5, 6], "v": ["first", "last", "x"]})
    refused = post(client, repeated, table="dup", mode="upsert", key_columns="k")
    assert refused.status_code == 409
    assert refused.json()["code"] == "duplicate_keys"
    assert table_rows(client, "dup") == [{"k": 1, "v": "a"}]
    accepted = post(
        client, repeated, table="dup", mode="upsert", key_columns="k", duplicate_keys="last_wins"
    )
    assert accepted.status_code == 200, accepted.text
    # The rows it wrote (a small body is group-committed, a large one streamed: the same).
    assert accepted.json()["rows_processed"] == 2
    assert table_rows(client, "dup") == [
        {"k": 1, "v": "a"},
        {"k": 5, "v": "last"},
        {"k": 6, "v": "x"},
    ]


def test_upsert_counts_every_row_when_only_keys_are_sent(client: httpx.Client) -> None:
    """Rows whose key exists count as written even when there is no other column to update:
    a key-only table, and a batch of only the keys of a table with values."""
    keys = pa.table({"k": pa.array([1, 2], pa.int64())})
    assert post(client, keys, table="ko1", mode="upsert", key_columns="k").status_code == 200
    again = post(client, keys, table="ko1", mode="upsert", key_columns="k")
    assert again.status_code == 200, again.text
    assert again.json()["rows_processed"] == 2
    more = pa.table({"k": pa.array([1, 2, 3, 9, 10], pa.int64())})
    response = post(client, more, table="ko1", mode="upsert", key_columns="k")
    assert response.json()["rows_processed"] == 5
    repeated = pa.table({"k": pa.array([3, 3, 11], pa.int64())})
    last = post(
        client, repeated, table="ko1", mode="upsert", key_columns="k", duplicate_keys="last_wins"
    )
    assert last.json()["rows_processed"] == 2  # one per key, as with a value column
    assert table_rows(client, "ko1") == [{"k": k} for k in (1, 2, 3, 9, 10, 11)]
    valued = pa.table({"k": [1, 2], "v": ["a", "b"]})
    assert post(client, valued, table="ko2", mode="upsert", key_columns="k").status_code == 200
    only_keys = post(client, pa.table({"k": [2, 3]}), table="ko2", mode="upsert", key_columns="k")
    assert only_keys.json()["rows_processed"] == 2
    assert table_rows(client, "ko2") == [
        {"k": 1, "v": "a"},
        {"k": 2, "v": "b"},
        {"k": 3, "v": None},
    ]


def test_upsert_needs_keys_and_non_null_keys(client: httpx.Client) -> None:
    no_keys = post(client, pa.table({"k": [1]}), table="upk", mode="upsert")
    assert no_keys.status_code == 422
    assert post(client, pa.table({"k": [1]}), table="upk").status_code == 200
    null_key = post(
        client,
        pa.table({"k": pa.array([None], pa.int64())}),
        table="upk",
        mode="upsert",
        key_columns="k",
    )
    assert null_key.status_code == 422
    assert null_key.json()["code"] == "invalid_value"
    missing_key = post(client, pa.table({"v": [1]}), table="upk", mode="upsert", key_columns="k")
    assert missing_key.status_code == 409
    assert table_rows(client, "upk") == [{"k": 1}]


def test_strict_policy_names_conflicts(client: httpx.Client) -> None:
    assert post(client, pa.table({"k": [1]}), table="strict_t").status_code == 200
    response = post(client, pa.table({"k": [2], "new_col": ["x"]}), table="strict_t")
    assert response.status_code == 409
    assert "new_col" in response.json()["message"]
    assert table_rows(client, "strict_t") == [{"k": 1}]


def test_evolve_adds_columns_and_widens_types(client: httpx.Client) -> None:
    first = pa.table({"k": pa.array([1], pa.int8()), "f": pa.array([1.5], pa.float32())})
    assert post(client, first, table="evo", schema_policy="evolve").status_code == 200
    second = pa.table(
        {
            "k": pa.array([300], pa.int32()),
            "f": pa.array([2.25], pa.float64()),
            "added": ["new"],
        }
    )
    response = post(client, second, table="evo", schema_policy="evolve")
    assert response.status_code == 200, response.text
    assert columns(client, "evo") == {"k": "INTEGER", "f": "DOUBLE", "added": "VARCHAR"}
    assert table_rows(client, "evo") == [
        {"k": 1, "f": 1.5, "added": None},
        {"k": 300, "f": 2.25, "added": "new"},
    ]


def test_evolve_refuses_unsafe_changes(client: httpx.Client) -> None:
    ts = pa.array([1_000_000], pa.timestamp("us"))
    assert post(client, pa.table({"k": [1], "ts": ts}), table="evo_bad").status_code == 200
    with_tz = pa.table({"k": [2], "ts": pa.array([1_000_000], pa.timestamp("us", tz="UTC"))})
    response = post(client, with_tz, table="evo_bad", schema_policy="evolve")
    assert response.status_code == 409
    narrowing = pa.table({"k": ["text"]})
    assert post(client, narrowing, table="evo_bad", schema_policy="evolve").status_code == 409
    assert columns(client, "evo_bad") == {"k": "BIGINT", "ts": "TIMESTAMP"}
    assert query(client, "SELECT count(*) AS n FROM evo_bad").to_pylist() == [{"n": 1}]


def test_missing_nullable_columns_are_filled_with_null(client: httpx.Client) -> None:
    assert post(client, pa.table({"k": [1], "v": ["a"]}), table="fill").status_code == 200
    assert post(client, pa.table({"k": [2]}), table="fill").status_code == 200
    assert table_rows(client, "fill") == [{"k": 1, "v": "a"}, {"k": 2, "v": None}]


def test_dry_run_reports_and_writes_nothing(client: httpx.Client) -> None:
    batch = pa.table({"k": [1, 2], "v": ["a", "b"]})
    create = post(client, batch, table="dry", dry_run=True)
    assert create.status_code == 200, create.text
    body = create.json()
    assert body["dry_run"] is True
    assert body["rows_processed"] == 2
    assert any(action.startswith("CREATE TABLE") for action in body["actions"])
    assert client.get("/tables/dry").status_code == 404

    assert post(client, batch, table="dry").status_code == 200
    wider = pa.table({"k": [3], "v": ["c"], "w": [1.0]})
    evolve = post(client, wider, table="dry", schema_policy="evolve", dry_run=True)
    assert evolve.status_code == 200, evolve.text
    assert any("ADD COLUMN" in action for action in evolve.json()["actions"])
    assert columns(client, "dry") == {"k": "BIGINT", "v": "VARCHAR"}
    conflict = post(client, wider, table="dry", dry_run=True)
    assert conflict.status_code == 409
    assert query(client, "SELECT count(*) AS n FROM dry").to_pylist() == [{"n": 2}]


def test_stream_config_sets_mode_keys_and_policy(tmp_path: Any) -> None:
    config = {
        "streams": {
            "users": {
                "table": "users",
                "mode": "upsert",
                "key_columns": ["id"],
                "schema_policy": "evolve",
            }
        }
    }
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        for batch in (
            pa.table({"id": [1, 2], "name": ["a", "b"]}),
            pa.table({"id": [2], "name": ["B"], "email": ["b@x"]}),
        ):
            response = client.post(
                "/stream/users", content=ipc_bytes(batch), headers={"Content-Type": ARROW_STREAM}
            )
            assert response.status_code == 200, response.text
        assert table_rows(client, "users", order="id") == [
            {"id": 1, "name": "a", "email": None},
            {"id": 2, "name": "B", "email": "b@x"},
        ]


def test_upsert_options_go_with_the_mode_the_stream_configuration_resolves(
    tmp_path: Any,
) -> None:
    """A stream configured to upsert takes key_columns and duplicate_keys from a request; a
    request that asks another mode may not send them (the configured keys do not count). Keys
    configured beside another mode are those of a request that asks for upsert."""
    config = {
        "streams": {
            "keyed": {"mode": "upsert", "key_columns": ["id"]},
            "mostly_appended": {"mode": "append", "key_columns": ["id"]},
        }
    }
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        keyed = pa.table({"id": [1, 2], "v": ["a", "b"]})
        for params in ({}, {"key_columns": "id", "duplicate_keys": "last_wins"}):
            response = post_binary(client, "keyed", ipc_bytes(keyed), params)
            assert response.status_code == 200, response.text
        refused = post_binary(
            client, "keyed", ipc_bytes(keyed), {"mode": "append", "key_columns": "id"}
        )
        assert refused.status_code == 422, refused.text
        assert (refused.json()["code"], refused.json()["field"]) == (
            "invalid_options",
            "key_columns",
        )
        appended = post_binary(client, "keyed", ipc_bytes(keyed), {"mode": "append"})
        assert appended.status_code == 200, appended.text
        assert table_rows(client, "keyed", order="id, v") == [
            {"id": 1, "v": "a"},
            {"id": 1, "v": "a"},
            {"id": 2, "v": "b"},
            {"id": 2, "v": "b"},
        ]
        for params in ({}, {"mode": "upsert"}):
            answer = post_binary(client, "mostly_appended", ipc_bytes(keyed), params)
            assert answer.status_code == 200, answer.text
        changed = pa.table({"id": [2, 3], "v": ["B", "c"]})
        upserted = post_binary(client, "mostly_appended", ipc_bytes(changed), {"mode": "upsert"})
        assert upserted.status_code == 200, upserted.text
        assert table_rows(client, "mostly_appended", order="id, v") == [
            {"id": 1, "v": "a"},
            {"id": 2, "v": "B"},
            {"id": 3, "v": "c"},
        ]


def flight_put(
    fc: flight.FlightClient, descriptor: flight.FlightDescriptor, batch: pa.Table
) -> None:
    writer, _ = fc.do_put(descriptor, batch.schema)
    writer.write_table(batch)
    writer.close()


def test_locked_stream_refuses_options_that_differ(tmp_path: Any) -> None:
    config = {"streams": {"events": {"table": "events", "mode": "append", "locked": True}}}
    batch = pa.table({"k": [1, 2]})
    with (
        ArrowportProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert post_binary(client, "events", ipc_bytes(batch)).status_code == 200
        # The configured values themselves (table names in any case) are fine.
        same = post_binary(
            client, "events", ipc_bytes(batch), {"table": "EVENTS", "mode": "append"}
        )
        assert same.status_code == 200, same.text
        seed = post_json(client, "events", ipc_bytes(batch), {"target_table": "events"})
        assert seed.status_code == 200, seed.text
        for params in ({"mode": "replace"}, {"table": "other"}, {"schema_policy": "evolve"}):
            refused = post_binary(client, "events", ipc_bytes(batch), params)
            assert refused.status_code == 403, refused.text
            body = refused.json()
            assert body["code"] == "stream_locked"
            assert next(iter(params)) in body["message"]
        refused = post_json(client, "events", ipc_bytes(batch), {"target_table": "other"})
        assert refused.status_code == 403
        assert refused.json()["code"] == "stream_locked"

        command = json.dumps({"stream_name": "events", "mode": "replace"}).encode()
        fc = flight.connect(server.flight_url)
        with pytest.raises(flight.FlightUnauthorizedError, match="stream_locked"):
            flight_put(fc, flight.FlightDescriptor.for_command(command), batch)
        fc.close()

        assert query(client, "SELECT count(*) AS n FROM events").to_pylist() == [{"n": 6}]
        tables = {t["name"] for t in client.get("/tables").json()}
        assert "other" not in tables
        assert client.get("/health").status_code == 200


@pytest.mark.timeout(120)
def test_replace_is_atomic_for_readers(client: httpx.Client) -> None:
    size = 20_000
    assert post(client, pa.table({"k": list(range(size))}), table="atomic").status_code == 200
    seen: list[int] = []
    stop = threading.Event()

    def read_loop() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as reader:
            while not stop.is_set():
                seen.append(query(reader, "SELECT count(*) AS n FROM atomic").to_pylist()[0]["n"])

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for round_ in range(15):
            batch = pa.table({"k": list(range(round_, round_ + size))})
            assert post(client, batch, table="atomic", mode="replace").status_code == 200
    finally:
        stop.set()
        thread.join()
    assert seen, "the reader never got an answer"
    assert set(seen) == {size}


def test_a_table_of_another_schema_in_every_mode(
    client: httpx.Client, server: ArrowportProcess
) -> None:
    created = post(client, pa.table({"k": [1, 2], "v": ["a", "b"]}), table="mo_sales.orders")
    assert created.status_code == 200, created.text
    upsert = post(
        client,
        pa.table({"k": [2, 3], "v": ["B", "c"], "n": [20, 30]}),
        table="mo_sales.orders",
        mode="upsert",
        key_columns="k",
        schema_policy="evolve",
    )
    assert upsert.status_code == 200, upsert.text
    rows = query(client, "SELECT k, v, n FROM mo_sales.orders ORDER BY k").to_pylist()
    assert rows == [
        {"k": 1, "v": "a", "n": None},
        {"k": 2, "v": "B", "n": 20},
        {"k": 3, "v": "c", "n": 30},
    ]
    described = client.get("/tables/mo_sales.orders").json()
    assert described["name"] == "mo_sales.orders"
    assert described["row_count"] == 3
    assert "mo_sales.orders" in {t["name"] for t in client.get("/tables").json()}
    with flight.connect(server.flight_url) as fc:
        assert fc.do_get(flight.Ticket(b"mo_sales.orders")).read_all().num_rows == 3
    replaced = post(client, pa.table({"k": [9]}), table="mo_sales.orders", mode="replace")
    assert replaced.status_code == 200, replaced.text
    assert query(client, "SELECT k FROM mo_sales.orders").to_pylist() == [{"k": 9}]
    # A namesake in main is another table; "main." names main's.
    assert post(client, pa.table({"k": [5]}), table="main.orders").status_code == 200
    assert query(client, "SELECT k FROM orders").to_pylist() == [{"k": 5}]
    assert client.get("/tables/orders").json()["row_count"] == 1


@pytest.mark.parametrize(
    "table",
    [
        "_arrowport.x",
        "information_schema.x",
        "system.x",
        "lake.x",
        "__ducklake_metadata_lake.x",
        "a.b.c",
        "1s.x",
    ],
)
def test_reserved_or_malformed_schemas_are_refused(client: httpx.Client, table: str) -> None:
    response = post(client, pa.table({"k": [1]}), table=table)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_name"
    schema = table.rpartition(".")[0]
    if schema in ("_arrowport", "information_schema", "system", "lake"):
        assert f"the schema {schema!r} is reserved" in response.json()["message"]


def test_a_schema_named_like_the_database_and_a_dotted_stream_are_refused(
    client: httpx.Client,
) -> None:
    (database,) = query(client, "SELECT current_database() AS d").column("d").to_pylist()
    clash = post(client, pa.table({"k": [1]}), table=f"{database}.x")
    assert clash.status_code == 400, clash.text
    assert clash.json()["code"] == "invalid_name"
    if database != "lake":  # a lake's catalog name is reserved outright
        assert "has the name of a database" in clash.json()["message"]
    dotted = post_binary(client, "app.v1", ipc_bytes(pa.table({"k": [1]})))
    assert dotted.status_code == 400, dotted.text
    assert dotted.json()["code"] == "invalid_name"
    assert "app" not in {t["name"].split(".")[0] for t in client.get("/tables").json()}


@pytest.mark.parametrize("stream", ["app.v1", "my-stream", "2024_events", "s" * 64])
def test_a_stream_whose_name_is_no_table_name_must_name_its_table(
    client: httpx.Client, stream: str
) -> None:
    """As a dotted stream does: told to name the table, described with none, landing where
    the request says."""
    refused = post_binary(client, stream, ipc_bytes(pa.table({"k": [1]})))
    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "invalid_name"
    assert "is not a table name: name the table" in refused.json()["message"]
    described = client.get(f"/streams/{stream}")
    assert described.status_code == 200, described.text
    assert described.json()["table"] is None
    named = post_binary(client, stream, ipc_bytes(pa.table({"k": [2]})), {"table": "named_t"})
    assert named.status_code == 200, named.text
    assert named.json()["table"] == "named_t"
    assert {"k": 2} in table_rows(client, "named_t")


def test_tables_sql_created_under_any_names_are_listed_and_read(tmp_path: Any) -> None:
    db_path = tmp_path / "made.duckdb"
    with duckdb.connect(str(db_path)) as made:
        made.execute('CREATE TABLE main."a.b" AS SELECT 1 AS k')
        made.execute("CREATE SCHEMA a; CREATE TABLE a.b AS SELECT * FROM range(2) t(k)")
        made.execute('CREATE SCHEMA "my schema"; CREATE TABLE "my schema".t AS SELECT 4 AS k')
    with (
        ArrowportProcess(tmp_path / "server", db_path=db_path) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        listed = sorted((t["name"], t["row_count"]) for t in client.get("/tables").json())
        assert listed == [("a.b", 1), ("a.b", 2), ("my schema.t", 1)]
        # A qualified name means its schema's table; main's oddly named one is read by SQL.
        assert client.get("/tables/a.b").json()["row_count"] == 2
        assert query(client, 'SELECT k FROM "a.b"').to_pylist() == [{"k": 1}]
        assert query(client, 'SELECT k FROM "my schema".t').to_pylist() == [{"k": 4}]
        missing = client.get("/tables/a.c")
        assert missing.status_code == 404, missing.text
