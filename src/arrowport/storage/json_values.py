"""Values of Arrow's ``arrow.json`` type that are not JSON, refused batch by batch.

DuckDB reads an ``arrow.json`` column (or one nested in lists, structs and maps) as its JSON
type without parsing the strings, so text that is not JSON would land, and every later query
that reads it as JSON would fail ("Malformed JSON"). A value must be one that DuckDB's cast to
JSON accepts (which ``json_valid`` tests, as the cast does: NaN and trailing commas pass, a
second document after the first does not), so DuckDB itself tests them: a private in-memory
database runs ``json_valid`` over the strings in place, about 40 ms for a million small
documents, where Python's ``json.loads`` takes 1.5 s and accepts other things.
"""

from __future__ import annotations

import threading

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from arrowport.errors import InvalidValue
from arrowport.storage.schema import LIST_ARRAYS, child_types

JSON_EXTENSION = "arrow.json"
_EXCERPT_CHARS = 40

_checker: duckdb.DuckDBPyConnection | None = None
_checker_lock = threading.Lock()


def _cursor() -> duckdb.DuckDBPyConnection:
    """A cursor of the database that tests JSON text, opened on first use."""
    global _checker
    with _checker_lock:
        if _checker is None:
            _checker = duckdb.connect(
                ":memory:",
                config={
                    # DuckDB scans one Arrow batch with one thread: more would only compete
                    # with the database's own.
                    "threads": 1,
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "python_enable_replacements": False,
                    "enable_external_access": False,
                },
            )
        return _checker.cursor()


def _is_json(dtype: pa.DataType) -> bool:
    return isinstance(dtype, pa.BaseExtensionType) and dtype.extension_name == JSON_EXTENSION


def holds_json(dtype: pa.DataType) -> bool:
    """True when ``dtype`` is ``arrow.json`` or nests it."""
    return _is_json(dtype) or any(holds_json(child) for child in child_types(dtype))


def _first_invalid_text(strings: pa.Array) -> tuple[int, str] | None:
    with _cursor() as cur:
        # Handed over as an Arrow C stream: a pyarrow Table goes through pyarrow.dataset.
        relation = cur.from_arrow(pa.table({"s": strings}).__arrow_c_stream__())
        # One thread keeps the answers in the strings' order; NULL answers NULL, skipped here.
        valid = relation.project("json_valid(s)").to_arrow_table().column(0)
    index: int = pc.index(valid, False).as_py()
    if index < 0:
        return None
    return index, str(strings[index].as_py())


def _first_invalid(array: pa.Array) -> tuple[int, str] | None:
    """The slot of ``array`` holding the first value that is not JSON, and that value."""
    if len(array) == 0 or not holds_json(array.type):
        return None
    if _is_json(array.type):
        return _first_invalid_text(array.storage)
    if isinstance(array, pa.ExtensionArray):
        return _first_invalid(array.storage)
    if isinstance(array, pa.DictionaryArray):
        found = _first_invalid(array.dictionary)
        if found is None:
            return None
        # The first row that refers to that entry (taking the values for the rows could make
        # gigabytes of a few bytes of indices); a bad entry no row refers to is refused too.
        entry, text = found
        row = pc.index(array.indices, entry).as_py()
        return (row if row >= 0 else 0), text
    if isinstance(array, pa.RunEndEncodedArray):
        start = array.find_physical_offset()
        found = _first_invalid(array.values.slice(start, array.find_physical_length()))
        if found is None:
            return None
        run, text = found
        row = 0 if run == 0 else array.run_ends[start + run - 1].as_py() - array.offset
        return row, text
    if isinstance(array, pa.MapArray):
        # list_flatten has no kernel for maps: view the entries as a list of structs.
        # (A null mask over a slice's offsets is refused by pyarrow: the entries' view is
        # taken without one, which only shows entries of null maps, that are checked too.)
        array = pa.ListArray.from_arrays(array.offsets, array.values)
    if isinstance(array, pa.StructArray):
        found_in = [_first_invalid(child) for child in array.flatten()]
        return min((found for found in found_in if found is not None), default=None)
    if isinstance(array, LIST_ARRAYS):
        found = _first_invalid(array.flatten())
        if found is None:
            return None
        element, text = found
        # flatten() leaves out null lists; the row is the first whose elements end after it.
        ends = pc.cumulative_sum(pc.fill_null(pc.list_value_length(array), 0))
        return int(pc.sum(pc.less_equal(ends, element)).as_py()), text
    return None


def check_json(name: str, column: pa.Array, first_row: int = 0) -> None:
    """422 ``invalid_value`` when ``column`` holds an ``arrow.json`` value that is not JSON;
    ``first_row`` is the row of the request the column's first value is."""
    found = _first_invalid(column)
    if found is None:
        return
    row, text = found
    excerpt = text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "…"
    raise InvalidValue(
        f"column {name!r} has a value that is not valid JSON at row {first_row + row} "
        f"({excerpt!r}); DuckDB's JSON type takes only what its cast to JSON accepts",
        column=name,
        row=first_row + row,
    )
