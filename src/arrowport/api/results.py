"""A query's answer rendered for HTTP — Arrow IPC stream, JSON or CSV — in bounded memory.

The answer is rendered batch by batch into a spool (memory up to :data:`SPOOL_MEMORY_BYTES`,
then a temporary file) and sent only once it is complete, so whatever happens while it is
produced — the query fails halfway, runs out of time, or grows past
``limits.max_result_bytes`` (413 ``result_too_large``) — the client gets a clean error instead
of a response broken off in the middle, and the server's memory stays flat for any size.
Rendering counts against the query's time limit like the query itself.

JSON is ``{"columns": [{"name", "type"}], "rows": [{...}], "row_count": n}``: timestamps and
dates in ISO form (values beyond Python's calendar as Arrow writes them), decimals as strings,
binary as base64, NaN and infinities as null.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa
import pyarrow.csv as pa_csv

from arrowport.errors import InvalidOptions, ResultTooLarge
from arrowport.reads import ResultBudget
from arrowport.storage.query import QueryResult

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


def _slices(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Each batch in row slices of about :data:`RENDER_SLICE_BYTES`."""
    for batch in batches:
        size = batch.get_total_buffer_size()
        if size <= RENDER_SLICE_BYTES:
            yield batch
            continue
        rows = max(1, batch.num_rows * RENDER_SLICE_BYTES // size)
        for offset in range(0, batch.num_rows, rows):
            piece = batch.slice(offset, rows)
            if rows == 1 and piece.get_total_buffer_size() > MAX_TEXT_ROW_BYTES:
                raise ResultTooLarge(
                    f"a row of the answer is larger than {MAX_TEXT_ROW_BYTES} bytes: too large "
                    "to render as JSON or CSV; ask for Arrow (the default)"
                )
            yield piece


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
    try:
        with pa_csv.CSVWriter(pa.PythonFile(sink, mode="w"), schema) as writer:
            for batch in _slices(batches):
                writer.write_batch(batch)
    except pa.ArrowNotImplementedError as exc:
        raise InvalidOptions(f"this result cannot be written as CSV: {exc}") from None


def _json(schema: pa.Schema, batches: Iterator[pa.RecordBatch], sink: _Counted) -> None:
    columns = [{"name": f.name, "type": str(f.type)} for f in schema]
    sink.write(b'{"columns":' + _dumps(columns) + b',"rows":[')
    count = 0
    for batch in _slices(batches):
        if not batch.num_rows:
            continue
        names = batch.schema.names
        values = [_column_values(column) for column in batch.columns]
        rows = [dict(zip(names, row, strict=True)) for row in zip(*values, strict=True)]
        if count:
            sink.write(b",")
        sink.write(_dumps(rows)[1:-1])
        count += batch.num_rows
    sink.write(b'],"row_count":' + str(count).encode() + b"}")


def _dumps(value: Any) -> bytes:
    text = json.dumps(_finite(value), default=_json_value, allow_nan=False, separators=(",", ":"))
    return text.encode()


def _column_values(column: pa.Array) -> list[Any]:
    """A column as JSON-ready Python values; temporal values beyond Python's calendar (DuckDB's
    ``infinity``, year 290309) are written as Arrow formats them instead of failing, and struct
    fields that repeat a name (``row(1, 'x')``) get a suffix (``v``, ``v_2``)."""
    try:
        values: list[Any] = column.to_pylist()
    except (OverflowError, ValueError):
        renamed = column.view(_unique_names(column.type))
        try:
            values = renamed.to_pylist()
        except (OverflowError, ValueError):
            values = renamed.cast(_as_text(renamed.type)).to_pylist()
    return values


def _unique_names(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with repeated struct field names (nested ones too) made unique."""
    if pa.types.is_struct(dtype):
        seen: dict[str, int] = {}
        fields = []
        for field in dtype:
            count = seen[field.name] = seen.get(field.name, 0) + 1
            name = field.name if count == 1 else f"{field.name}_{count}"
            fields.append(field.with_name(name).with_type(_unique_names(field.type)))
        return pa.struct(fields)
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(_unique_names(dtype.value_type)))
    if pa.types.is_large_list(dtype):
        return pa.large_list(dtype.value_field.with_type(_unique_names(dtype.value_type)))
    if pa.types.is_fixed_size_list(dtype):
        field = dtype.value_field.with_type(_unique_names(dtype.value_type))
        return pa.list_(field, dtype.list_size)
    if pa.types.is_map(dtype):
        return pa.map_(dtype.key_field, dtype.item_field.with_type(_unique_names(dtype.item_type)))
    return dtype


def _as_text(dtype: pa.DataType) -> pa.DataType:
    """``dtype`` with every date and timestamp (nested ones too) replaced by text."""
    if pa.types.is_date(dtype) or pa.types.is_timestamp(dtype) or pa.types.is_duration(dtype):
        return pa.string()
    if isinstance(dtype, pa.DictionaryType):
        return _as_text(dtype.value_type)
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(_as_text(dtype.value_type))
    if pa.types.is_fixed_size_list(dtype):
        return pa.list_(_as_text(dtype.value_type), dtype.list_size)
    if pa.types.is_map(dtype):
        return pa.map_(_as_text(dtype.key_type), _as_text(dtype.item_type))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_as_text(f.type)) for f in dtype])
    return dtype


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such floats become null (anywhere in nested values)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)
