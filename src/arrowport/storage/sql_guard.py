"""What a read-only query may do, decided from DuckDB's own parse of it.

DuckDB calls ``SELECT * FROM enable_logging(...)`` a SELECT, so a statement-type check lets
through table functions that change global state, read the database's raw files or abort the
process. So a query is parsed with DuckDB's ``json_serialize_sql`` (which refuses anything but a
SELECT; see :mod:`arrowport.storage.sql_parse`) and every part of the tree is checked against
what is known to be harmless:

* every function (scalar, aggregate, window, macro) and every table function must be on the
  reviewed allow-list in ``read_functions.json`` (everything else, including all that DuckDB adds
  in a later version or through an extension, is refused: 403 ``read_only`` naming it);
* a table must be one of the database's own tables or a CTE of the query, or one of the
  harmless catalog views (``information_schema.tables``, ``duckdb_columns``...): never another
  view, a catalog view that reveals settings or paths, the internal ``_arrowport`` schema or
  another database;
* no ``VARIANT`` (no cast to it, no JSON structure or file reader's column type naming it),
  and ``lag``/``lead`` only with a small literal offset (both crash DuckDB 1.5.5 on crafted
  input); functions that build values as large as an argument asks, only with literal sizes,
  and not where what they repeat is repeated again (:mod:`arrowport.storage.query_growth`);
* with ``duckdb.allow_file_access``, the file readers too, but only with literal paths that are
  none of the database's own files.

Example::

    guard = ReadGuard(file_access=False, protected=["/data/db.duckdb"])
    guard.check("SELECT id, upper(name) FROM events", tables={("main", "events")})
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from collections.abc import Callable, Collection, Iterator
from importlib import resources
from typing import Any

from arrowport.errors import QueryError, ReadOnly
from arrowport.storage.identifiers import INTERNAL_SCHEMA
from arrowport.storage.query_growth import SIZED_ARGUMENTS, check_growth
from arrowport.storage.sql_parse import DUCKDB_VIEWS, fold, nodes, parse

_CATALOGUE = json.loads(
    resources.files("arrowport.storage").joinpath("read_functions.json").read_text("utf-8")
)
# Names the parser emits for constructs that are not functions in duckdb_functions().
_PARSER_NAMES = frozenset({"unnest", "unlist"})
# DuckDB's function names are case-insensitive (formatReadableSize); compared in lower case.
EXPRESSION_FUNCTIONS = frozenset(n.lower() for n in _CATALOGUE["expression_functions"]) | (
    _PARSER_NAMES
)
TABLE_FUNCTIONS = frozenset(n.lower() for n in _CATALOGUE["table_functions"])
# Catalog views over those table functions (``information_schema.tables``...), by schema.name.
SYSTEM_VIEWS = frozenset(_CATALOGUE["system_views"])
# Read files; allowed only with duckdb.allow_file_access, and only with literal paths.
FILE_READERS = frozenset(
    {
        "read_csv",
        "read_csv_auto",
        "read_parquet",
        "parquet_scan",
        "read_json",
        "read_json_auto",
        "read_ndjson",
        "read_ndjson_auto",
        "read_json_objects",
        "read_json_objects_auto",
        "read_ndjson_objects",
        "read_text",
        "read_blob",
        "parquet_metadata",
        "parquet_schema",
        "glob",
    }
)
# lag(x, -9223372036854775808) crashes DuckDB 1.5.5 (any offset not a plain small literal).
_OFFSET_WINDOWS = frozenset({"lag", "lead"})
_MAX_OFFSET = 2**31
_FORMATTERS = frozenset({"printf", "format"})
# Functions that build a type from a structure given as text (its second argument): a deep one
# crashes DuckDB 1.5.5 (SIGSEGV at ~100,000 nested lists), and one may name VARIANT.
_JSON_STRUCTURES = frozenset(
    {"json_transform", "json_transform_strict", "from_json", "from_json_strict"}
)
_MAX_NESTING = 64
_MAX_SIZE = 10_000
_NUMBER_RE = re.compile(r"\d+")
# Table references that only combine or contain other parts of the tree.
_COMPOSITE_REFS = frozenset({"JOIN", "SUBQUERY", "EMPTY", "EXPRESSION_LIST", "PIVOT", "DELIM_GET"})


def allowed_like(name: str) -> str | None:
    """The allowed function whose name is nearest ``name`` (a typo's), if one is near."""
    near = difflib.get_close_matches(name, EXPRESSION_FUNCTIONS | TABLE_FUNCTIONS, 1, 0.75)
    return near[0] if near else None


def _refuse(message: str, **details: Any) -> ReadOnly:
    return ReadOnly(
        f"{message} (read-only queries read this database's own tables, with functions known "
        "to be harmless)",
        **details,
    )


def _has_variant(dtype: Any) -> bool:
    return any(node.get("id") == "VARIANT" for node in nodes(dtype))


def _plain_structure(text: str) -> bool:
    """A JSON structure (``'{"a": ["INTEGER"]}'``) DuckDB can build a type from safely: not
    too long or deep, and naming no VARIANT, however its strings are escapes
    (``"\\u0076ariant"`` is ``"variant"`` to DuckDB too)."""
    if len(text) > _MAX_SIZE or "variant" in fold(text):
        return False
    depth = 0
    for character in text:
        if character in "[{":
            depth += 1
            if depth > _MAX_NESTING:
                return False
        elif character in "]}":
            depth -= 1
    try:
        structure = json.loads(text)
    except ValueError:  # not JSON: DuckDB refuses it too, but it need not get to try
        return False
    return not any("variant" in fold(word) for word in _json_strings(structure))


def _json_strings(value: Any) -> Iterator[str]:
    """Every key and string in a decoded JSON value (at most _MAX_NESTING deep)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)


def _scoped_nodes(tree: Any) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every object in the parse tree, with the CTE names (lower case) in scope there, as
    DuckDB binds them: a query's CTEs are visible in the rest of that query, each CTE's body
    sees only the CTEs before it, and a recursive CTE sees itself only in its recursive term.
    Out of scope a CTE's name reaches whatever else bears it (a table, a file)."""
    stack: list[tuple[Any, frozenset[str]]] = [(tree, frozenset())]
    while stack:
        item, visible = stack.pop()
        if isinstance(item, list):
            stack.extend((value, visible) for value in item)
            continue
        if not isinstance(item, dict):
            continue
        yield item, visible
        inner = visible
        cte_map = item.get("cte_map")
        if isinstance(cte_map, dict):
            for key, value in cte_map.items():
                if key != "map":
                    stack.append((value, visible))
            for entry in cte_map.get("map") or ():
                stack.append((entry, inner))
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    inner = inner | {fold(entry["key"])}
        recursive = item.get("cte_name") if item.get("type") == "RECURSIVE_CTE_NODE" else None
        for key, value in item.items():
            if key == "cte_map" and isinstance(cte_map, dict):
                continue
            if key == "right" and isinstance(recursive, str):
                stack.append((value, inner | {fold(recursive)}))
            else:
                stack.append((value, inner))


def _literal_path(node: Any) -> list[str] | None:
    """The path(s) a file reader's first argument names, if it is a literal."""
    if not isinstance(node, dict):
        return None
    if node.get("class") == "CONSTANT":
        value = node.get("value", {})
        if value.get("type", {}).get("id") == "VARCHAR" and isinstance(value.get("value"), str):
            return [value["value"]]
        return None
    if node.get("class") == "FUNCTION" and node.get("function_name") == "list_value":
        paths: list[str] = []
        for child in node.get("children") or ():
            found = _literal_path(child)
            if found is None:
                return None
            paths += found
        return paths
    return None


class ReadGuard:
    """Checks read-only queries; ``protected`` are files and directories no query may read, or
    read inside (the database's own, its write-ahead log, its spill directory; a lake's data
    directory and catalog file), which matters once file access is on."""

    def __init__(
        self,
        file_access: bool,
        protected: Collection[str] = (),
        also: Callable[[str, object], None] | None = None,
    ) -> None:
        """``also``: a check of the storage's own of a query (its parse tree, as JSON text) and
        its parameters."""
        self.file_access = file_access
        self._protected = [os.path.realpath(path) for path in protected]
        self._also = also

    def check(self, sql: str, tables: Collection[tuple[str, str]], params: object = None) -> int:
        """403 ``read_only`` unless ``sql`` only reads ``tables`` (the database's own tables, as
        (schema, table) pairs) and its own CTEs with allowed functions; 400 if it does not
        parse. Answers the bytes of the longest text the query holds, literal or bound (see
        :func:`~arrowport.storage.query_growth.widest_input`)."""
        tree = parse(sql)
        if self._also is not None:
            # The parsed query: its literals as DuckDB reads them (E'\x7B' is a brace).
            self._also(json.dumps(tree), params)
        known = {(fold(schema), fold(table)) for schema, table in tables}
        # A table function's own call node is checked as a table function, not as an
        # expression (its arguments are expressions all the same).
        table_calls: set[int] = set()
        widths = 0  # of every format of the query's printf and format calls together
        for node, ctes in _scoped_nodes(tree):
            kind = node.get("class")
            if kind is not None:
                if kind == "FUNCTION" and id(node) not in table_calls:
                    widths += self._function(node)
                    if widths > _MAX_SIZE:
                        raise _refuse(
                            f"the widths of the query's printf and format patterns add up to "
                            f"more than {_MAX_SIZE}",
                            rule="literal_size",
                        )
                elif kind == "WINDOW":
                    self._window(node)
                elif kind == "CAST" and _has_variant(node.get("cast_type")):
                    raise _refuse("casts to VARIANT are not allowed")
            elif "sample" in node and "modifiers" not in node:  # a table reference
                ref = node.get("type")
                if ref == "TABLE_FUNCTION":
                    function = node.get("function") or {}
                    table_calls.add(id(function))
                    self._table_function(function)
                elif ref == "BASE_TABLE":
                    self._table(node, known, ctes)
                elif ref == "SHOW_REF":
                    if node.get("query") is None:
                        raise _refuse("SHOW of the catalog is not allowed; use GET /tables")
                elif ref not in _COMPOSITE_REFS:
                    raise _refuse(f"a {ref} table reference is not allowed")
        return check_growth(tree, params)

    def _function(self, node: dict[str, Any]) -> int:
        """Check a function call; the widths its format pattern asks for (printf, format)."""
        name = fold(str(node.get("function_name", "")))
        if name not in EXPRESSION_FUNCTIONS:
            raise _refuse(f"the function {name}() is not allowed", function=name)
        children = node.get("children") or []
        for position in SIZED_ARGUMENTS.get(name, ()):
            if position < len(children) and not _small_literal(children[position], _MAX_SIZE):
                raise _refuse(
                    f"{name}() takes only a literal size from 0 to {_MAX_SIZE}",
                    function=name,
                    rule="literal_size",
                )
        if name in _JSON_STRUCTURES:
            structure = _literal_path(children[1]) if len(children) > 1 else None
            if structure is None or any(not _plain_structure(text) for text in structure):
                raise _refuse(
                    f"{name}() takes only a literal structure, at most {_MAX_SIZE} characters "
                    f"nested at most {_MAX_NESTING} deep, with no VARIANT",
                    function=name,
                    rule="literal_size",
                )
        if name in _FORMATTERS:
            pattern = _literal_path(children[0]) if children else None
            widths = _NUMBER_RE.findall(pattern[0]) if pattern else None
            # The widths together, too: 100 conversions of width 9,999 made 2 GB for a vector.
            total = None if widths is None else sum(int(width[:12]) for width in widths)
            if (
                total is None
                or total > _MAX_SIZE
                or _argument_width(name, pattern[0] if pattern else "")
            ):
                raise _refuse(
                    f"{name}() takes only a literal format with literal widths adding up to "
                    f"at most {_MAX_SIZE}",
                    function=name,
                    rule="literal_size",
                )
            return total
        return 0

    def _window(self, node: dict[str, Any]) -> None:
        name = fold(str(node.get("function_name", "")))
        if name in _OFFSET_WINDOWS:
            offset = node.get("offset_expr")
            if offset is not None and not _small_literal(offset, _MAX_OFFSET):
                raise _refuse(
                    f"{name}() takes only a literal offset from 0 to {_MAX_OFFSET}",
                    function=name,
                    rule="literal_offset",
                )
            return
        if name not in EXPRESSION_FUNCTIONS:
            raise _refuse(f"the window function {name}() is not allowed", function=name)

    def _table_function(self, function: dict[str, Any]) -> None:
        name = fold(str(function.get("function_name", "")))
        if name in TABLE_FUNCTIONS:
            return
        if self.file_access and name in FILE_READERS:
            children = function.get("children") or [None]
            paths = _literal_path(children[0])
            if paths is None:
                raise _refuse(f"{name}() needs a literal file path", function=name)
            for path in paths:
                self._readable(path)
            # Its options may give a column's type as text: never VARIANT (see the casts).
            for node in nodes(children[1:]):
                value = node.get("value") if node.get("class") == "CONSTANT" else None
                text = value.get("value") if isinstance(value, dict) else None
                if isinstance(text, str) and "variant" in fold(text):
                    raise _refuse(f"{name}() may not read into VARIANT", function=name)
            return
        raise _refuse(f"the table function {name}() is not allowed", function=name)

    def _table(
        self, node: dict[str, Any], tables: set[tuple[str, str]], ctes: frozenset[str]
    ) -> None:
        catalog = fold(str(node.get("catalog_name", "")))
        schema = fold(str(node.get("schema_name", "")))
        name = str(node.get("table_name", ""))
        if schema == INTERNAL_SCHEMA:
            raise _refuse("Arrowport's internal tables are not readable")
        if not catalog and (schema or "main", fold(name)) in tables:
            return
        # A CTE in scope, referenced (as it only can be) without a schema. One named like a
        # system view is refused all the same.
        if not catalog and not schema and fold(name) in ctes - DUCKDB_VIEWS:
            return
        if not catalog and f"{schema or 'main'}.{fold(name)}" in SYSTEM_VIEWS:
            return
        if self.file_access and not catalog and not schema and ("/" in name or "." in name):
            self._readable(name)  # a file read by DuckDB's replacement scan
            return
        where = ".".join(part for part in (catalog, schema, name) if part)
        if catalog or schema or fold(name) in DUCKDB_VIEWS or "/" in name or "." in name:
            raise _refuse(f"{where!r} is not one of this database's tables", table=where)
        raise QueryError(f"table {name!r} does not exist", table=name)

    def _readable(self, pattern: str) -> None:
        """Refuse a literal path (or glob) that could name one of the protected files."""
        if "://" in pattern and not pattern.startswith("file://"):
            raise _refuse("only local files are readable")
        local = os.path.realpath(os.path.expanduser(pattern.removeprefix("file://")))
        for protected in self._protected:
            # fnmatch lets '*' cross directories: it matches more than DuckDB's glob, never less.
            if (
                fnmatch.fnmatch(protected, local)
                or protected.startswith(local.rstrip("/") + "/")  # a directory above it
                or local.startswith(protected.rstrip("/") + "/")  # a file inside it
            ):
                raise _refuse("the database's own files are never readable")


# A printf conversion whose width or precision is an argument: %*d, %.*f, %1$*2$d.
_PRINTF_ARGUMENT_WIDTH = re.compile(r"%[^A-Za-z%]*\*")


def _argument_width(name: str, pattern: str) -> bool:
    """Whether a format pattern takes a width or precision from an argument (any size, and
    so any amount of memory): printf's ``*``, or format's field within a field (``{:>{}}``)."""
    if name == "printf":
        return _PRINTF_ARGUMENT_WIDTH.search(pattern.replace("%%", "")) is not None
    depth = 0
    position = 0
    while position < len(pattern):
        if depth == 0 and pattern.startswith(("{{", "}}"), position):  # a literal brace
            position += 2
            continue
        if pattern[position] == "{":
            depth += 1
            if depth > 1:
                return True
        elif pattern[position] == "}" and depth:
            depth -= 1
        position += 1
    return False


def _small_literal(node: Any, limit: int) -> bool:
    """Whether ``node`` is an integer literal from 0 to ``limit`` (a negative literal parses as
    a function ``-`` of a positive one: refused, as nothing needs it here)."""
    if isinstance(node, dict) and node.get("class") == "CAST":
        node = node.get("child")  # CAST(3 AS INTEGER) is as literal as 3
    if not isinstance(node, dict) or node.get("class") != "CONSTANT":
        return False
    number = node.get("value", {}).get("value")
    return isinstance(number, int) and not isinstance(number, bool) and 0 <= number <= limit
