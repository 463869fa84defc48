"""Parsing a query with DuckDB's own parser, and nothing else: the tree the read guard checks
(:mod:`arrowport.storage.sql_guard`).

The parser is a sealed in-memory DuckDB, one cursor per thread, so that a slow parse holds up no
other query's; what a parse may cost is bounded before it starts (see
:data:`MAX_BOOLEAN_OPERATORS`).
"""

from __future__ import annotations

import json
import re
import string
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from arrowport.errors import QueryError, ReadOnly

# Parses only (json_serialize_sql), sealed all the same.
_PARSER = duckdb.connect(
    ":memory:",
    config={
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "lock_configuration": True,
    },
)
_PARSERS = threading.local()  # each thread's cursor
# DuckDB's parse of a chain of AND or OR takes time growing with the square of its length (50,000
# terms: ~4 s, in which nothing interrupts it); long lists of alternatives belong in IN (...).
MAX_BOOLEAN_OPERATORS = 5_000
# DuckDB's planning of many SELECTs (a chain of UNION ALL, of subqueries) takes time growing
# faster than their number, none of which its interrupt stops: 20,000 SELECT 1 UNION ALL... ran
# 108 s past a 10 s query timeout.
MAX_SELECTS = 1_000
_SET_OPERATORS = ("union", "except", "intersect")
# Every view DuckDB itself defines (duckdb_databases, pg_settings...): naming one is an attempt
# to read the catalog, not a typo for a table.
DUCKDB_VIEWS = frozenset(
    row[0] for row in _PARSER.execute("SELECT lower(view_name) FROM duckdb_views()").fetchall()
)
_WORD = re.compile(r"[A-Za-z]+")
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def fold(name: str) -> str:
    """``name`` in lower case as DuckDB compares names: A-Z only. ``str.lower`` folds more (the
    Kelvin sign to ``k``), so two names it makes equal can be different names to DuckDB."""
    return name.translate(_ASCII_LOWER)


def nodes(tree: Any) -> Iterator[dict[str, Any]]:
    """Every object in a parse tree (iteratively: the tree may be deep)."""
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def parse(sql: str) -> dict[str, Any]:
    """DuckDB's parse tree of ``sql``: exactly one SELECT, or 400 / 403.

    Only the parser runs: ``duckdb.extract_statements`` would expand a ``PRAGMA`` and evaluate
    its arguments (``PRAGMA table_info(sleep_ms(9000)::VARCHAR)``) before anything is checked.
    """
    keywords = _keywords(sql)
    operators = keywords.count("and") + keywords.count("or")
    if operators > MAX_BOOLEAN_OPERATORS:
        raise QueryError(
            f"the query has {operators} AND / OR operators, more than the "
            f"{MAX_BOOLEAN_OPERATORS} allowed; write a long list of alternatives as IN (...)",
            limit=MAX_BOOLEAN_OPERATORS,
        )
    selects = max(keywords.count("select"), sum(map(keywords.count, _SET_OPERATORS)))
    if selects > MAX_SELECTS:
        raise QueryError(
            f"the query has {selects} SELECTs or set operations (UNION, EXCEPT, INTERSECT), "
            f"more than the {MAX_SELECTS} allowed: load many rows as data, or query them in "
            "parts",
            limit=MAX_SELECTS,
        )
    try:
        row = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    try:
        tree: dict[str, Any] = json.loads(row[0] if row else "{}")
    except RecursionError:
        raise QueryError("the query nests too deeply") from None
    if tree.get("error"):
        message = str(tree.get("error_message", ""))
        # Any statement but a SELECT is "not implemented" too: only this one is the query's
        # own mistake rather than an attempt to write.
        if tree.get("error_type") == "parser" or "named and positional parameters" in message:
            raise QueryError(f"cannot parse the query: {message}")
        if "pivot" in keywords:
            # Without IN (...), DuckDB runs a PIVOT as several statements (it first makes a
            # type of the values it finds): not one read-only SELECT.
            raise QueryError(
                "a PIVOT here must list the values it makes columns of: ON col IN ('a', 'b')"
            )
        raise ReadOnly("only read-only SELECT queries are allowed here")
    statements = tree.get("statements") or []
    if not statements:
        raise QueryError("the query is empty")
    if len(statements) != 1:
        raise ReadOnly(
            f"send exactly one statement per query (got {len(statements)})",
            statements=len(statements),
        )
    return tree


def _parser() -> duckdb.DuckDBPyConnection:
    parser: duckdb.DuckDBPyConnection | None = getattr(_PARSERS, "cursor", None)
    if parser is None:
        parser = _PARSERS.cursor = _PARSER.cursor()
    return parser


def _keywords(sql: str) -> list[str]:
    """The keywords of ``sql`` in lower case, in order (DuckDB's tokenizer takes time in
    proportion to the text, unlike its parser)."""
    try:
        tokens = duckdb.tokenize(sql)
    except duckdb.Error as exc:
        raise QueryError(f"cannot parse the query: {exc}") from None
    found: list[str] = []
    for offset, kind in tokens:
        word = _WORD.match(sql, offset) if kind == duckdb.token_type.keyword else None
        if word is not None:
            found.append(fold(word.group()))
    return found
