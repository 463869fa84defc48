"""What a query's SQL text and parameters may be, checked where a request is parsed (every
protocol), before anything waits for a query turn or DuckDB sees them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from arrowport.errors import InvalidOptions, InvalidValue
from arrowport.storage.query import Parameters

# What a query's parameters may amount to. DuckDB turns bound values into its own before the
# query starts, where its interrupt (limits.query_timeout_seconds) cannot reach, in time that
# grows with their nesting (a list 800 deep takes seconds) and with the fields a list of objects
# adds up to (every object gets every field any of them has); both are bounded up front.
MAX_PARAMETER_DEPTH = 32
MAX_PARAMETER_VALUES = 100_000


def check_sql(sql: str) -> None:
    """422 ``invalid_options`` for SQL text that is not valid Unicode: a lone surrogate, which
    JSON's ``\\ud800`` escape can carry, has no UTF-8 form for DuckDB to take."""
    position = _lone_surrogate(sql)
    if position is not None:
        raise InvalidOptions(
            f"the SQL text is not valid Unicode: it holds a lone surrogate "
            f"(U+{ord(sql[position]):04X}) at character {position}"
        )


def check_parameters(params: Parameters) -> None:
    """422 ``invalid_value`` for parameters DuckDB cannot take, or could take only at a cost
    that no query limit covers: a string that is not valid Unicode, lists and objects nested
    deeper than :data:`MAX_PARAMETER_DEPTH`, or more than :data:`MAX_PARAMETER_VALUES` values
    once DuckDB has typed them (a list of objects is a list of structs, each with every field
    any of them has: 2,000 objects of one key each are 4 million values). Checked where a
    request is parsed, before anything waits for a query turn."""
    if not params:
        return
    named: Iterator[tuple[int | str, Any]]
    named = iter(params.items()) if isinstance(params, Mapping) else enumerate(params, 1)
    total = 0
    for name, value in named:
        where = _Where(name, isinstance(params, Mapping))
        shape = _Shape()
        _absorb(shape, value, where, 0)
        total += shape.cells(value)
        if total > MAX_PARAMETER_VALUES:
            raise where.refused(
                f"takes the parameters past {MAX_PARAMETER_VALUES:,} values once typed "
                f"({total:,}: nested ones included, and every field a list's objects add up "
                "to): bind fewer or smaller values"
            )


@dataclass(frozen=True)
class _Where:
    """A parameter, by position (from 1) or by name, for its errors."""

    name: int | str
    named: bool

    def refused(self, why: str) -> InvalidValue:
        label = f"${self.name}" if self.named else str(self.name)
        return InvalidValue(f"parameter {label} {why}", parameter=self.name)


def _lone_surrogate(text: str) -> int | None:
    """Where ``text`` holds a lone surrogate (None: it is valid Unicode)."""
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


class _Shape:
    """The type DuckDB gives a parameter value, as far as its size goes: an object is a struct
    whose fields are every key the objects in its place have; a list's items share one type."""

    __slots__ = ("_width", "fields", "items")

    def __init__(self) -> None:
        self.fields: dict[str, _Shape] | None = None
        self.items: _Shape | None = None
        self._width: int | None = None

    def width(self) -> int:
        """Values one NULL (or missing) value takes in this place: a struct's fields are there
        even when the struct is NULL."""
        if self._width is None:
            self._width = 1 + sum(field.width() for field in (self.fields or {}).values())
        return self._width

    def cells(self, value: Any) -> int:
        """Values ``value`` becomes in this place."""
        if isinstance(value, dict) and self.fields is not None:
            total = self.width()
            for key, item in value.items():
                field = self.fields[key]
                total += field.cells(item) - field.width()
            return total
        if isinstance(value, list | tuple) and self.items is not None:
            items = self.items
            return 1 + sum(items.cells(item) for item in value)
        return self.width()


def _absorb(shape: _Shape, value: Any, where: _Where, depth: int) -> None:
    """Widen ``shape`` to take ``value``; 422 for a value no parameter may hold."""
    if isinstance(value, str):
        if _lone_surrogate(value) is not None:
            raise where.refused("is not valid Unicode: a string in it holds a lone surrogate")
        return
    if not isinstance(value, dict | list | tuple):
        return
    if depth >= MAX_PARAMETER_DEPTH:
        raise where.refused(f"nests lists and objects deeper than {MAX_PARAMETER_DEPTH} levels")
    if isinstance(value, dict):
        if shape.fields is None:
            shape.fields = {}
        fields = shape.fields
        for key, item in value.items():
            if isinstance(key, str) and _lone_surrogate(key) is not None:
                raise where.refused("is not valid Unicode: a key in it holds a lone surrogate")
            field = fields.get(key)
            if field is None:
                field = fields[key] = _Shape()
            _absorb(field, item, where, depth + 1)
        return
    if shape.items is None:
        shape.items = _Shape()
    for item in value:
        _absorb(shape.items, item, where, depth + 1)
