"""A query's answer rendered for HTTP — Arrow IPC stream, JSON or CSV — in bounded memory.

The answer is rendered batch by batch into a spool (memory up to :data:`SPOOL_MEMORY_BYTES`,
then a temporary file) and sent only once it is complete, so whatever happens while it is
produced — the query fails halfway, runs out of time, or grows past
``limits.max_result_bytes`` (413 ``result_too_large``) — the client gets a clean error instead
of a response broken off in the middle, and the server's memory stays flat for any size.
Rendering counts against the query's time limit like the query itself.

JSON is ``{"columns": [{"name", "type"}], "rows": [{...}], "row_count": n}``: dates, times and
timestamps in ISO form (years past 9999 too; DuckDB's ``infinity`` and ``-infinity`` by name),
decimals (plain digits, never exponent form) and BIGNUMs as strings, binary as base64, NaN and
infinities as null, a union as its value. Columns (and struct fields) that share a name get a
suffix (``a``, ``a_2``) so that no value is lost from a row's object.

CSV writes numbers, booleans, text, dates, times and timestamps as Arrow does (the same names for
the infinities), but for decimals Arrow would write in exponent form (quoted plain digits
instead); every other value — binary, lists, structs, maps, unions, fixed-size arrays,
intervals, BIGNUMs — is written as its JSON rendering (binary as base64, nested values as JSON
text), so a value never breaks the CSV or is left out.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from arrowport.api.calendar_text import (
    calendar_storage,
    calendar_text,
    is_calendar,
    outside_calendar,
)
from arrowport.api.result_values import (
    decimal_text,
    finite,
    json_value,
    json_values,
    unique_names,
)
from arrowport.errors import InvalidOptions, ResultTooLarge
from arrowport.reads import ResultBudget
from arrowport.storage.query import QueryResult
from arrowport.storage.schema import child_arrays, child_types, has_dictionary, has_union

ARROW_STREAM = "application/vnd.apache.arrow.stream"
JSON = "application/json"
CSV = "text/csv"
SPOOL_MEMORY_BYTES = 4 * 1024**2
SEND_CHUNK_BYTES = 1024**2
# JSON and CSV are rendered this many Arrow bytes at a time: Python's objects for a slice take
# several times its size, so slices keep rendering's memory small whatever the batch size.
RENDER_SLICE_BYTES = 1024**2
# One row larger than this is not rendered as text at all (Arrow sends it as it is).
MAX_TEXT_ROW_BYTES = 64 * 1024**2


class _Counted:
    """A write-only file over the spool that counts what is written against the budget."""

    closed = False

    def __init__(self, spool: IO[bytes], budget: ResultBudget) -> None:
        self._spool = spool
        self._budget = budget

    def write(self, data: bytes | memoryview) -> int:
        self._budget.add(len(data))
        return self._spool.write(data)

    def flush(self) -> None:
        pass


def render(
    result: QueryResult,
    media_type: str,
    budget: ResultBudget,
    options: pa.ipc.IpcWriteOptions,
    directory: str | None = None,
) -> IO[bytes]:
    """The whole answer of ``result`` in ``media_type``, in a spool rewound to its start."""
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (the caller closes it)
        max_size=SPOOL_MEMORY_BYTES, dir=directory
    )
    sink = _Counted(spool, budget)
    try:
        with result:
            batches = _checked(result, budget)
            if media_type == ARROW_STREAM:
                _arrow(result.schema, batches, sink, options)
            elif media_type == CSV:
                _csv(result.schema, batches, sink)
            else:
                _json(result.schema, batches, sink)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def chunks(spool: IO[bytes]) -> Iterator[bytes]:
    """The spool's bytes, piece by piece, closing it at the end."""
    try:
        while piece := spool.read(SEND_CHUNK_BYTES):
            yield piece
    finally:
        spool.close()


def size(spool: IO[bytes]) -> int:
    position = spool.tell()
    end = spool.seek(0, 2)
    spool.seek(position)
    return end


def _checked(result: QueryResult, budget: ResultBudget) -> Iterator[pa.RecordBatch]:
    """The result's batches; one that cannot fit the answer's budget even as Arrow is refused
    before it is rendered (JSON of a 1 GB value would take several GB to build)."""
    for batch in result:
        budget.check(batch.get_total_buffer_size())
        yield batch
        result.check_deadline()


def _rendered_bytes(batch: pa.RecordBatch) -> int:
    """About the bytes ``batch``'s values take once decoded: a dictionary's rows each hold a
    value of it (an ENUM of 16,000-character labels is 125 KB of Arrow for 122,880 rows, and
    2 GB of JSON), not the dictionary once; and every row names its columns, and every struct
    its fields (a column named with 10,000 characters over 122,880 rows of NULL is 500 KB of
    Arrow and 1.2 GB of JSON)."""
    names = sum(map(_json_name_bytes, batch.schema.names))
    return int(batch.num_rows) * names + sum(map(_decoded_bytes, batch.columns))


def _json_name_bytes(name: str) -> int:
    """A name's bytes as a JSON key: quoted, escaped (a control character is six bytes, an
    emoji twelve), and its colon."""
    return len(json.dumps(name)) + 1


def _has_names(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is, or nests, a struct (whose field names each value repeats)."""
    return bool(pa.types.is_struct(dtype)) or any(map(_has_names, child_types(dtype)))


def _text_like(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_binary(dtype)
        or pa.types.is_large_binary(dtype)
    )


def _decoded_bytes(array: pa.Array) -> int:
    dtype = array.type
    if not (has_dictionary(dtype) or _has_names(dtype) or has_union(dtype)):
        # Of these rows alone: a slice's buffers are its whole batch's. (A union is summed from
        # its children below: pyarrow has crashed computing nbytes of one in a list.)
        return int(array.nbytes)
    if isinstance(array, pa.DictionaryArray):
        values = array.dictionary
        if len(values) == 0:
            return int(array.indices.nbytes)
        if _text_like(values.type):
            each = int(pc.max(pc.binary_length(values)).as_py() or 0)  # the longest, not the mean
        else:
            each = _decoded_bytes(values) // len(values)
        return int(array.indices.nbytes) + len(array) * each
    names = 0
    if pa.types.is_struct(array.type):
        names = len(array) * sum(_json_name_bytes(field.name) for field in array.type)
    return names + sum(map(_decoded_bytes, child_arrays(array)))


def _slices(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Each batch in row slices of about :data:`RENDER_SLICE_BYTES` once decoded."""
    for batch in batches:
        yield from _fitting(batch)


def _fitting(batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
    """``batch`` cut into slices of at most :data:`RENDER_SLICE_BYTES` once decoded, but for
    single rows (413 past :data:`MAX_TEXT_ROW_BYTES`). A slice still over, one large value among
    small ones, is cut again, in halves at least, however unevenly its rows weigh."""
    size = _rendered_bytes(batch)
    if size <= RENDER_SLICE_BYTES:
        yield batch
        return
    if batch.num_rows == 1:
        if size > MAX_TEXT_ROW_BYTES:
            raise ResultTooLarge(
                f"a row of the answer is larger than {MAX_TEXT_ROW_BYTES} bytes: too large "
                "to render as JSON or CSV; ask for Arrow (the default)"
            )
        yield batch
        return
    rows = max(1, min(batch.num_rows // 2, batch.num_rows * RENDER_SLICE_BYTES // size))
    for offset in range(0, batch.num_rows, rows):
        yield from _fitting(batch.slice(offset, rows))


def _arrow(
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    sink: _Counted,
    options: pa.ipc.IpcWriteOptions,
) -> None:
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _csv(schema: pa.Schema, batches: Iterator[pa.RecordBatch], sink: _Counted) -> None:
    # Each slice is written on its own: a column it renders as text (a timestamp holding
    # infinity) need not have the type of that column in the other slices.
    out = pa.PythonFile(sink, mode="w")
    header = pa.schema([pa.field(name, pa.string()) for name in schema.names])
    rows_only = pa_csv.WriteOptions(include_header=False)
    try:
        pa_csv.write_csv(header.empty_table(), out)
        for batch in _slices(batches):
            columns = [_csv_column(column) for column in batch.columns]
            pa_csv.write_csv(pa.record_batch(columns, names=schema.names), out, rows_only)
    except pa.ArrowNotImplementedError as exc:
        raise InvalidOptions(f"this result cannot be written as CSV: {exc}") from None


def _csv_column(column: pa.Array) -> pa.Array:
    """``column`` as Arrow's CSV writer can write it without losing or falsifying a value."""
    dtype = column.type
    if is_calendar(dtype):
        return _calendar_csv(column)
    if _exponent_decimal(dtype):
        digits = [None if value is None else decimal_text(value) for value in column.to_pylist()]
        return pa.array(digits, pa.string())
    if _csv_plain(dtype):
        return column
    if isinstance(dtype, pa.DictionaryType):
        return _csv_column(column.dictionary_decode())
    return pa.array([_csv_cell(value) for value in json_values(column)], pa.string())


def _exponent_decimal(dtype: pa.DataType) -> bool:
    """Whether Arrow may write this decimal type's values in exponent form: it does where a
    value's exponent would be below -6 (``0E-10`` for zero at scale 10, ``1.000E-7``), so for
    any scale above 6."""
    return bool(pa.types.is_decimal(dtype)) and not 0 <= dtype.scale <= 6


def _csv_plain(dtype: pa.DataType) -> bool:
    """Whether Arrow writes this type's values in CSV as they are (numbers, booleans, text)."""
    if isinstance(dtype, pa.DictionaryType):
        return _csv_plain(dtype.value_type)
    return bool(
        pa.types.is_null(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_decimal(dtype)
        or pa.types.is_string(dtype)
        or pa.types.is_large_string(dtype)
        or pa.types.is_string_view(dtype)
    )


def _csv_cell(value: Any) -> str | None:
    """A value's JSON rendering as a CSV cell: text as it is, anything else as JSON text."""
    value = finite(value)
    if value is None:
        return None
    if not isinstance(value, dict | list | tuple | bool | int | float | str):
        value = json_value(value)
    if isinstance(value, str):
        return value
    return _dumps(value).decode()


def _calendar_csv(column: pa.Array) -> pa.Array:
    """A date, time or timestamp column for CSV: as Arrow writes it, unless it holds values
    Arrow writes wrongly (DuckDB's infinities, extreme years, ``24:00:00``); then as text, those
    values spelled out in Arrow's format."""
    outside = outside_calendar(column)
    if outside is None:
        return column
    text: list[str | None] = pc.if_else(outside, None, column).cast(pa.string()).to_pylist()
    raw = calendar_storage(column).to_pylist()
    for index in pc.indices_nonzero(outside).to_pylist():
        text[index] = calendar_text(raw[index], column.type, iso=False)
    return pa.array(text, pa.string())


def _json(schema: pa.Schema, batches: Iterator[pa.RecordBatch], sink: _Counted) -> None:
    names = unique_names(schema.names)
    columns = [{"name": n, "type": str(f.type)} for n, f in zip(names, schema, strict=True)]
    sink.write(b'{"columns":' + _dumps(columns) + b',"rows":[')
    count = 0
    for batch in _slices(batches):
        if not batch.num_rows:
            continue
        values = [json_values(column) for column in batch.columns]
        rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        if count:
            sink.write(b",")
        sink.write(_dumps(rows)[1:-1])
        count += batch.num_rows
    sink.write(b'],"row_count":' + str(count).encode() + b"}")


def _dumps(value: Any) -> bytes:
    text = json.dumps(finite(value), default=json_value, allow_nan=False, separators=(",", ":"))
    return text.encode()
