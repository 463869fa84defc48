"""How large a read query can make each row of its answer, judged from its parse tree.

DuckDB builds a row's values, and then each Arrow batch of them, outside its ``memory_limit``,
before any limit of the server's can count them. A query's own inputs can be multiplied that
way: a function that builds a value as large as an argument asks (:data:`SIZED_ARGUMENTS`:
``repeat``, ``range``...) repeats its other arguments up to that size, and a lambda repeats its
body for every element of a list. So, besides the literal sizes the read guard asks of those
functions:

* those that repeat what they are given (``repeat``, ``list_resize``, ``array_resize``) or
  make lists (``range``, ``generate_series``) may not sit inside one another, or inside a
  lambda (``repeat(repeat(s, 10000), 10000)``, or ``list_transform(range(10000), x ->
  range(10000))``: 100 MB a row);
* ``repeat``, ``list_resize`` and ``array_resize`` may repeat literal text (or bound values)
  to at most :data:`MAX_REPEATED_BYTES` a row (``repeat('<10 KB>', 10000)``: 100 MB a row);
* no text or blob the query holds, literal or bound, may be longer than
  :data:`MAX_LITERAL_BYTES`: selected over many rows, DuckDB copies it into every one;
* and the longest of them, :func:`widest_input`, sizes the answer's Arrow batches (see
  :mod:`arrowport.storage.result_batches`).

These look at one call and one literal at a time, so they stop the direct forms and nothing
more: a value made in a subquery or CTE and repeated outside it, many literals joined into one
value (``concat`` of sixty 16 KB literals), text grown by other functions (``replace``,
``bin``), stored values repeated (``repeat(text_column, 10000)``), a window aggregate over a
whole partition, and what a lambda makes for each element of a list
(``list_transform(range(10000), x -> '<10 KB>')`` peaked at 11.8 GB over 100 rows) all escape
them. No check of a parse tree bounds a row's size, as every text and list function composes:
the bound on the process's memory is its operator's (the README's security section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from arrowport.errors import ReadOnly
from arrowport.storage.sql_parse import nodes

# Functions whose result grows with an argument (by position), allocated outside DuckDB's
# memory_limit: repeat('x', 1000000000) takes 3 GB. The read guard takes only literal sizes
# there, up to its own limit; what else they are given is repeated up to that size.
SIZED_ARGUMENTS = {
    "repeat": (1,),
    "lpad": (1,),
    "rpad": (1,),
    "list_resize": (1,),
    "array_resize": (1,),
    "bitstring": (1,),
    "bar": (3,),
    "to_base": (2,),
    "range": (0, 1, 2),
    "generate_series": (0, 1, 2),
}
# Functions that repeat their other arguments as many times as their size (the second
# argument) asks, and those that make a list of as many elements as asked. The other sized
# functions (lpad, bar...) make a value of a size asked, whatever they are given, as a literal
# of that size would: they may sit anywhere.
_REPEATING = frozenset({"repeat", "list_resize", "array_resize"})
_MULTIPLYING = _REPEATING | {"range", "generate_series"}
# The bytes a row of literal text and bound values may be repeated to, by those functions.
MAX_REPEATED_BYTES = 100_000
# The longest text or blob a query may hold, literal or bound. DuckDB repeats one selected over
# many rows in every row, a vector of 2,048 rows at a time and several vectors ahead of its
# reader, whatever rows an Arrow batch holds: a 500 KB literal over 8,192 rows took 3.9 GB, a
# 50 KB one 415 MB. (Queries may be 1 MiB long.)
MAX_LITERAL_BYTES = 16 * 1024


def check_growth(tree: Any, params: object) -> int:
    """403 ``read_only`` (rule ``literal_size``) for text longer than :data:`MAX_LITERAL_BYTES`,
    a sized function inside another or inside a lambda, or a function that would repeat
    literal text to more than :data:`MAX_REPEATED_BYTES` a row (see the module's text).
    Answers the bytes of the query's longest text (:func:`widest_input`)."""
    widest = widest_input(tree, params)
    if widest > MAX_LITERAL_BYTES:
        raise _refused(
            f"a text or blob of {widest} bytes, literal or bound: at most {MAX_LITERAL_BYTES} "
            "are allowed"
        )
    bound = _bound_bytes(params)
    stack: list[tuple[Any, str | None]] = [(tree, None)]
    while stack:
        item, repeated_by = stack.pop()
        if isinstance(item, list):
            stack.extend((value, repeated_by) for value in item)
            continue
        if not isinstance(item, dict):
            continue
        within = repeated_by
        kind = item.get("class")
        if item.get("type") == "TABLE_FUNCTION" and isinstance(item.get("function"), dict):
            # A table function (range(10) as a table) makes rows, not a value: only its
            # arguments are looked at.
            stack.append((item["function"].get("children"), repeated_by))
            stack.extend((v, repeated_by) for k, v in item.items() if k != "function")
            continue
        if kind == "FUNCTION":
            name = str(item.get("function_name", "")).lower()
            if name in _MULTIPLYING:
                if repeated_by is not None:
                    raise _refused(f"{name}() inside {repeated_by} is not allowed")
                within = f"{name}()"
                _check_repeats(name, item.get("children") or [], bound)
        elif kind == "LAMBDA":
            stack.append((item.get("lhs"), repeated_by))
            stack.append((item.get("expr"), repeated_by or "a lambda"))
            continue
        stack.extend((value, within) for value in item.values())
    return widest


def _check_repeats(name: str, arguments: list[Any], bound: Mapping[str, int]) -> None:
    """Refuse a call of :data:`_REPEATING` whose literal text, repeated, passes the bound
    (``bound``: each parameter's bytes, by its identifier)."""
    if name not in _REPEATING or len(arguments) < 2:
        return
    size = _integer(arguments[1])
    repeated = sum(
        _text_bytes(argument, bound) for position, argument in enumerate(arguments) if position != 1
    )
    if size * repeated > MAX_REPEATED_BYTES:
        raise _refused(
            f"{name}() would repeat {repeated} bytes of literal text {size} times, more than "
            f"{MAX_REPEATED_BYTES} bytes a row"
        )


def widest_input(tree: Any, params: object) -> int:
    """The bytes of the longest text or blob the query holds, literal or bound: a row of its
    answer may hold it, whatever else it holds."""
    literals = (
        _input_bytes(_constant_value(node))
        for node in nodes(tree)
        if node.get("class") == "CONSTANT"
    )
    return max(max(literals, default=0), _widest(params))


def _refused(message: str) -> ReadOnly:
    return ReadOnly(
        f"{message} (DuckDB builds every row's values in memory outside duckdb.memory_limit)",
        rule="literal_size",
    )


def _text_bytes(tree: Any, bound: Mapping[str, int]) -> int:
    """The bytes of the text and blob literals and bound values in ``tree``."""
    held = 0
    for node in nodes(tree):
        if node.get("class") == "CONSTANT":
            held += _input_bytes(_constant_value(node))
        elif node.get("class") == "PARAMETER":
            held += bound.get(str(node.get("identifier", "")).lower(), 0)
    return held


def _integer(node: Any) -> int:
    """An integer literal's value (the read guard allows only those as sizes); 0 otherwise."""
    if isinstance(node, dict) and node.get("class") == "CAST":
        node = node.get("child")
    value = _constant_value(node) if isinstance(node, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _constant_value(node: dict[str, Any]) -> object:
    value = node.get("value")
    return value.get("value") if isinstance(value, dict) else None


def _input_bytes(value: object) -> int:
    """The bytes of a value's text and blobs, all of them (a list's, a struct's)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_input_bytes(item) for item in value.values())
    if isinstance(value, Sequence):
        return sum(_input_bytes(item) for item in value)
    return 0


def _widest(params: object) -> int:
    """The bytes of the longest bound value (a list's element, as its literals would count:
    ids bound for ``= ANY(?)`` are many short values)."""
    if isinstance(params, Mapping):
        return max((_longest(value) for value in params.values()), default=0)
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        return max((_longest(value) for value in params), default=0)
    return 0


def _bound_bytes(params: object) -> dict[str, int]:
    """Each bound value's bytes, by the identifier DuckDB's parse gives its parameter (``1``
    for the first ``?`` or ``$1``, the name of a ``$name``)."""
    if isinstance(params, Mapping):
        return {str(name).lower(): _input_bytes(value) for name, value in params.items()}
    if isinstance(params, Sequence) and not isinstance(params, str | bytes):
        return {str(index): _input_bytes(value) for index, value in enumerate(params, 1)}
    return {}


def _longest(value: object) -> int:
    if isinstance(value, list | tuple):
        return max((_longest(item) for item in value), default=0)
    return _input_bytes(value)
