"""``POST /stream/{name}`` query parameters and ``X-Arrowport-*`` headers: refused, not guessed at.

An unknown, repeated or empty option, or a number that is not plain decimal digits, is 422
``invalid_options`` and lands nothing, like a repeated key in a JSON body.
"""

from __future__ import annotations

import httpx
import pyarrow as pa
import pytest

from tests.conftest import ARROW_STREAM, ipc_bytes, query


def sample(rows: int = 3) -> pa.Table:
    return pa.table({"id": pa.array(range(rows), pa.int64())})


def post(
    client: httpx.Client,
    stream: str,
    query_string: str = "",
    headers: list[tuple[str, str]] | None = None,
) -> httpx.Response:
    """POST a small Arrow body with the query string and header list exactly as given."""
    return client.post(
        f"/stream/{stream}{'?' + query_string if query_string else ''}",
        content=ipc_bytes(sample()),
        headers=[("Content-Type", ARROW_STREAM), *(headers or [])],
    )


def table_count(client: httpx.Client, table: str) -> int | None:
    response = client.get(f"/tables/{table}")
    if response.status_code == 404:
        return None
    return int(query(client, f'SELECT count(*) AS n FROM "{table}"').column("n")[0].as_py())


def assert_refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_options", body
    message = str(body["message"])
    for word in words:
        assert word in message, message
    return message


def test_a_repeated_mode_is_refused_and_the_table_is_kept(client: httpx.Client) -> None:
    assert post(client, "rep_mode", "table=rep_mode_t").status_code == 200
    response = post(client, "rep_mode", "table=rep_mode_t&mode=append&mode=replace")
    assert_refused(response, "mode", "more than once")
    assert table_count(client, "rep_mode_t") == 3


def test_a_repeated_table_is_refused(client: httpx.Client) -> None:
    response = post(client, "rep_table", "table=rep_table_a&table=rep_table_b")
    assert_refused(response, "table", "more than once")
    assert table_count(client, "rep_table_a") is None
    assert table_count(client, "rep_table_b") is None


@pytest.mark.parametrize(
    "header", ["X-Arrowport-Mode", "X-Arrowport-Table", "Idempotency-Key", "X-Arrowport-Sequence"]
)
def test_a_repeated_header_is_refused(client: httpx.Client, header: str) -> None:
    values = {"X-Arrowport-Mode": ("create", "replace"), "X-Arrowport-Table": ("rh_a", "rh_b")}
    first, second = values.get(header, ("1", "2"))
    response = post(client, "rep_header", "", [(header, first), (header, second)])
    assert_refused(response, header.lower(), "more than once")
    assert table_count(client, "rep_header") is None


def test_an_unknown_parameter_is_named_and_the_known_ones_listed(client: httpx.Client) -> None:
    message = assert_refused(post(client, "typo_param", "tabel=typo_x"), "'tabel'", "table")
    for known in ("mode", "chunk_size", "key_columns", "dry_run", "producer_id", "sequence"):
        assert known in message
    assert table_count(client, "typo_param") is None
    assert table_count(client, "typo_x") is None


def test_the_idempotency_key_is_no_query_parameter(client: httpx.Client) -> None:
    response = post(client, "key_param", "idempotency_key=k1")
    assert_refused(response, "'idempotency_key'", "Idempotency-Key")


def test_an_unknown_arrowport_header_is_refused(client: httpx.Client) -> None:
    response = post(client, "typo_header", "", [("X-Arrowport-Tabel", "typo_h")])
    assert_refused(response, "x-arrowport-tabel", "x-arrowport-table")
    assert table_count(client, "typo_header") is None


@pytest.mark.parametrize(
    ("query_string", "headers"),
    [
        ("table=", []),
        ("mode=", []),
        ("key_columns=", []),
        ("dry_run=", []),
        ("", [("X-Arrowport-Table", "")]),
        ("", [("X-Arrowport-Mode", "")]),
        ("", [("Idempotency-Key", "")]),
    ],
)
def test_an_empty_value_is_refused(
    client: httpx.Client, query_string: str, headers: list[tuple[str, str]]
) -> None:
    assert_refused(post(client, "empty_value", query_string, headers), "empty")
    assert table_count(client, "empty_value") is None


@pytest.mark.parametrize(
    "query_string",
    [
        "producer_id=p&sequence=%2B5",
        "producer_id=p&sequence=%205",
        "producer_id=p&sequence=5%20",
        "producer_id=p&sequence=0x5",
        "producer_id=p&sequence=%EF%BC%95",  # a full-width digit
        "chunk_size=1_000",
        "chunk_size=1e3",
        "chunk_size=" + "9" * 5000,
    ],
)
def test_numbers_are_plain_decimal_digits(client: httpx.Client, query_string: str) -> None:
    response = post(client, "number_text", query_string)
    name = query_string.split("&")[-1].split("=")[0]
    assert_refused(response, name)
    assert len(response.text) < 1000
    assert table_count(client, "number_text") is None


def test_a_number_header_is_plain_decimal_digits(client: httpx.Client) -> None:
    response = post(client, "number_header", "", [("X-Arrowport-Chunk-Size", "+5")])
    assert_refused(response, "chunk_size")


def test_plain_options_still_land(client: httpx.Client) -> None:
    response = post(
        client,
        "plain_opts",
        "table=plain_t&mode=create&chunk_size=1000&dry_run=false&producer_id=p&sequence=0",
    )
    assert response.status_code == 200, response.text
    response = post(
        client,
        "plain_opts",
        "",
        [
            ("X-Arrowport-Table", "plain_t"),
            ("X-Arrowport-Mode", "append"),
            ("X-Arrowport-Chunk-Size", "7"),
            ("X-Arrowport-Producer-Id", "p"),
            ("X-Arrowport-Sequence", "1"),
            ("Idempotency-Key", "plain-1"),
        ],
    )
    assert response.status_code == 200, response.text
    assert table_count(client, "plain_t") == 6


def test_a_parameter_wins_over_its_header(client: httpx.Client) -> None:
    response = post(client, "both", "table=both_q", [("X-Arrowport-Table", "both_h")])
    assert response.status_code == 200, response.text
    assert table_count(client, "both_q") == 3
    assert table_count(client, "both_h") is None


def test_a_negative_number_gets_its_range_message(client: httpx.Client) -> None:
    assert_refused(post(client, "neg", "chunk_size=-5"), "positive")


@pytest.mark.parametrize("escaped", ["%FF", "%C0", "%ED%A0%80"])
def test_a_query_string_that_is_not_utf8_is_refused(client: httpx.Client, escaped: str) -> None:
    """Decoded leniently, %FF, %FE and %C0 were all U+FFFD: three producers counted as one,
    and the second's and third's rows dropped as duplicates."""
    response = post(client, "not_utf8", f"producer_id=p{escaped}&sequence=0")
    assert_refused(response, "UTF-8")
    assert table_count(client, "not_utf8") is None


def test_a_utf8_query_string_lands(client: httpx.Client) -> None:
    for producer in ("p%C3%A9", "p%C3%A8"):  # pé, pè: two producers
        response = post(client, "utf8_producers", f"producer_id={producer}&sequence=0")
        assert response.status_code == 200, response.text
        assert not response.json()["duplicate"]
    assert table_count(client, "utf8_producers") == 6
