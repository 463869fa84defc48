"""How an ingest turns the caller's data into requests.

The data is read batch by batch; :class:`Cutter` groups the batches (slicing where needed) into
requests of at most ``request_rows`` rows and ``request_bytes`` bytes of Arrow data; each group is
written as one Arrow IPC stream, compressed (:func:`encode`), and sent with the producer offset
``(producer_id, sequence)``. At most a couple of requests are held at once, whatever the size of
the data.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from typing import Any, Literal

import pyarrow as pa

Compression = Literal["zstd", "gzip"]
#: Arrow bytes of text and binary views cast to large types at once (see :func:`without_views`).
_CAST_BYTES = 16 * 1024 * 1024


def arrow_reader(data: Any) -> pa.RecordBatchReader | None:
    """``data`` as a reader when it is Arrow data (anything with ``__arrow_c_stream__``: pyarrow
    tables and readers, polars and pandas DataFrames, DuckDB relations...), else ``None``; text
    and binary views come out as large strings and binaries (:func:`without_views`)."""
    if isinstance(data, pa.RecordBatchReader):
        reader = data
    elif isinstance(data, pa.Table):
        reader = data.to_reader()
    elif isinstance(data, pa.RecordBatch):
        reader = pa.RecordBatchReader.from_batches(data.schema, [data])
    elif _named_range_index(data):
        reader = pa.Table.from_pandas(data, preserve_index=True).to_reader()
    elif (scanned := _scanned(data)) is not None:
        reader = scanned
    elif hasattr(data, "__arrow_c_stream__"):
        reader = pa.RecordBatchReader.from_stream(data)
    elif hasattr(data, "__arrow_c_array__"):
        batch = pa.record_batch(data)
        reader = pa.RecordBatchReader.from_batches(batch.schema, [batch])
    else:
        return None
    schema = without_views(reader.schema)
    if schema.equals(reader.schema):
        return reader
    pieces = (piece for batch in reader for piece in _cast_views(batch, schema))
    return pa.RecordBatchReader.from_batches(schema, pieces)


def _scanned(data: Any) -> pa.RecordBatchReader | None:
    """A pyarrow Dataset or Scanner (which do not speak the stream interface), read batch by
    batch in file order; ``None`` for anything else."""
    dataset = sys.modules.get("pyarrow.dataset")  # loaded already if data is one of its own
    if dataset is None:
        return None
    if isinstance(data, dataset.Dataset):
        return data.scanner().to_reader()
    if isinstance(data, dataset.Scanner):
        return data.to_reader()
    return None


def _named_range_index(data: Any) -> bool:
    """Whether ``data`` is a pandas DataFrame indexed by a named range.

    pyarrow leaves a range index out (the default 0, 1, 2... is no data), named or not; but
    pandas keeps ``set_index("id")`` of consecutive numbers as a range, named ``id``: the
    column would be dropped for its values' order alone.
    """
    pandas = sys.modules.get("pandas")  # loaded already if data is one of its frames
    return (
        pandas is not None
        and isinstance(data, pandas.DataFrame)
        and isinstance(data.index, pandas.RangeIndex)
        and data.index.name is not None
    )


# -- text and binary views -----------------------------------------------------------------------


def without_views(schema: pa.Schema) -> pa.Schema:
    """``schema`` with every text or binary view (polars' strings and binaries, at any depth
    but inside a dictionary) made a large string or binary.

    The values of a view column live in buffers that every slice of it shares: a slice's
    ``nbytes``, and the IPC stream of a request holding it, count them all, so a frame of long
    strings was cut into requests of one row, each carrying all of its text. The large types
    hold the same values (DuckDB stores both as VARCHAR or BLOB) in buffers a slice cuts.
    """
    return pa.schema(
        [field.with_type(_without_views(field.type)) for field in schema], metadata=schema.metadata
    )


def _cast_views(batch: pa.RecordBatch, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``batch`` as ``schema`` (:func:`without_views`), cast a piece of about
    :data:`_CAST_BYTES` at a time: a copy of all of a large frame's text at once would double
    the memory the call holds."""
    if schema.equals(batch.schema):
        yield batch
        return
    # The batch's nbytes counts each shared buffer once: its rows' bytes, about.
    for piece in _slices(batch, batch.nbytes, _CAST_BYTES):
        yield piece.cast(schema)


def _slices(batch: pa.RecordBatch, size: int, most: int) -> Iterator[pa.RecordBatch]:
    """``batch``, of ``size`` bytes, in slices of about ``most`` bytes at most (by its rows'
    mean size; a single larger row alone)."""
    if size <= most or batch.num_rows <= 1:
        yield batch
        return
    rows = max(1, batch.num_rows * most // size)
    for offset in range(0, batch.num_rows, rows):
        yield batch.slice(offset, rows)


def _without_views(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_string_view(kind):
        return pa.large_string()
    if pa.types.is_binary_view(kind):
        return pa.large_binary()
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_without_views(kind.value_type)))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_without_views(kind.value_type)))
    if pa.types.is_fixed_size_list(kind):
        value = kind.value_field.with_type(_without_views(kind.value_type))
        return pa.list_(value, kind.list_size)
    if pa.types.is_map(kind):
        key = kind.key_field.with_type(_without_views(kind.key_type))
        item = kind.item_field.with_type(_without_views(kind.item_type))
        return pa.map_(key, item, keys_sorted=kind.keys_sorted)
    if pa.types.is_struct(kind):
        return pa.struct([field.with_type(_without_views(field.type)) for field in kind])
    return kind


def check_iterable(data: Any, asynchronous: bool = False) -> None:
    """Refuse what is not iterable, or iterable but not a sequence of batches (text, bytes, a
    mapping); an asynchronous iterable only for the asynchronous client."""
    if isinstance(data, str | bytes | bytearray | memoryview | dict):
        raise TypeError(
            f"cannot ingest a {type(data).__name__}: pass Arrow data (a pyarrow Table or "
            "RecordBatchReader, a polars DataFrame, a DuckDB relation...) or an iterable of "
            "pyarrow.RecordBatch"
        )
    if isinstance(data, AsyncIterable) and not isinstance(data, Iterable) and not asynchronous:
        raise TypeError("an asynchronous iterable needs AsyncClient.ingest")
    if not isinstance(data, Iterable | AsyncIterable):
        lazy = " (a polars LazyFrame: pass frame.collect())" if hasattr(data, "collect") else ""
        raise TypeError(
            f"cannot ingest a {type(data).__name__}{lazy}: it speaks neither the Arrow "
            "PyCapsule stream interface (__arrow_c_stream__) nor iteration"
        )


def as_batches(item: Any, position: int) -> Iterator[pa.RecordBatch]:
    """One item of an iterable of batches (or of tables and frames), in pieces where its views
    are cast (:func:`without_views`)."""
    if isinstance(item, pa.RecordBatch):
        batches: Iterable[pa.RecordBatch] = (item,)
    elif hasattr(item, "__arrow_c_array__"):
        batches = (pa.record_batch(item),)
    elif hasattr(item, "__arrow_c_stream__"):
        batches = pa.RecordBatchReader.from_stream(item)
    else:
        raise TypeError(
            f"item {position} of the data is a {type(item).__name__}, not a pyarrow.RecordBatch "
            "(nor a table or frame speaking the Arrow PyCapsule interface)"
        )
    for batch in batches:
        yield from _cast_views(batch, without_views(batch.schema))


def iter_batches(data: Any, cutter: Cutter | None = None) -> Iterator[pa.RecordBatch]:
    """Every batch of ``data`` (Arrow data, or an iterable of batches), in order; ``cutter``
    learns the schema of Arrow data before its first batch."""
    reader = arrow_reader(data)
    if reader is not None:
        if cutter is not None:
            cutter.expect(reader.schema)
        yield from reader
        return
    check_iterable(data)
    for position, item in enumerate(data):
        yield from as_batches(item, position)


def next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    """The reader's next batch, ``None`` at the end (for a worker thread: no StopIteration)."""
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


# -- IPC messages ---------------------------------------------------------------------------------

#: Most Arrow bytes of one IPC message: a request cut by rows alone (``resume=True``) may hold a
#: batch of any size, and the server refuses a message past ``limits.max_message_bytes``.
MESSAGE_BYTES = 16 * 1024 * 1024


# -- cutting batches into requests ---------------------------------------------------------------


def rows_bytes(batch: pa.RecordBatch) -> int:
    """Arrow bytes of ``batch``'s rows, a dictionary column's dictionary left out (a slice's
    ``nbytes`` counts all of it, however few rows the slice holds)."""
    return sum(
        column.indices.nbytes if pa.types.is_dictionary(column.type) else column.nbytes
        for column in batch.columns
    )


def request_size(batches: Sequence[pa.RecordBatch]) -> int:
    """Arrow bytes of one request's batches: their rows, and each dictionary they use once (as
    the IPC stream carries it)."""
    total = 0
    seen: set[tuple[int, ...]] = set()
    for batch in batches:
        total += rows_bytes(batch)
        for column in batch.columns:
            if pa.types.is_dictionary(column.type):
                dictionary = column.dictionary
                where = tuple(b.address if b is not None else 0 for b in dictionary.buffers())
                if where not in seen:
                    seen.add(where)
                    total += dictionary.nbytes
    return total


class Cutter:
    """Groups a sequence of batches into requests of at most ``max_rows`` rows and at most
    ``max_bytes`` Arrow bytes (``None``: rows alone decide), slicing batches where a limit falls
    inside one (slices share the batch's memory). A single row larger than ``max_bytes`` goes in
    a request of its own. A batch whose schema differs from the one before starts a new request.
    Data without rows makes one request of no rows, when its schema is known: it creates (or,
    replacing, empties) the table.

    Bytes are the rows' (:func:`rows_bytes`): a dictionary goes with every request whatever the
    cut, so cutting finer would only send it more often.

    Without ``max_bytes`` the cut depends on the rows alone, never on how they were batched:
    request ``i`` holds rows ``i * max_rows`` up to ``(i + 1) * max_rows``.
    """

    def __init__(self, max_rows: int, max_bytes: int | None) -> None:
        if max_rows < 1:
            raise ValueError("request_rows must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("request_bytes must be at least 1")
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self._bytes = 0
        self._schema: pa.Schema | None = None
        self._emitted = 0

    def expect(self, schema: pa.Schema) -> None:
        """The data's schema, known before its first batch (Arrow data)."""
        if self._schema is None:
            self._schema = schema

    def add(self, batch: pa.RecordBatch) -> list[list[pa.RecordBatch]]:
        """Take ``batch``; the requests it completed."""
        ready: list[list[pa.RecordBatch]] = []
        if self._pending and not batch.schema.equals(self._schema):
            ready.append(self._take())
        self._schema = batch.schema
        while batch.num_rows:
            count = self._fitting(batch)
            if count == 0:
                if self._pending:
                    ready.append(self._take())
                    continue
                count = 1  # one row over the byte limit: alone
            piece = batch if count == batch.num_rows else batch.slice(0, count)
            self._pending.append(piece)
            self._rows += count
            self._bytes += rows_bytes(piece)
            batch = batch.slice(count)
            full_bytes = self.max_bytes is not None and self._bytes >= self.max_bytes
            if self._rows >= self.max_rows or full_bytes:
                ready.append(self._take())
        return ready

    def finish(self) -> list[pa.RecordBatch] | None:
        """The last, partly filled request, if any."""
        if self._pending:
            return self._take()
        if self._emitted == 0 and self._schema is not None:
            self._emitted += 1
            return [pa.RecordBatch.from_pylist([], schema=self._schema)]
        return None

    def _fitting(self, batch: pa.RecordBatch) -> int:
        """How many of ``batch``'s first rows fit in the request being filled."""
        count = int(min(batch.num_rows, self.max_rows - self._rows))
        if self.max_bytes is None:
            return count
        room = self.max_bytes - self._bytes
        size = rows_bytes(batch)
        if count == batch.num_rows and size <= room:
            return count
        if room <= 0:
            return 0
        per_row = max(size / batch.num_rows, 1e-9)
        count = min(count, int(room / per_row))
        while count > 0:
            size = rows_bytes(batch.slice(0, count))
            if size <= room:
                return count
            count = min(count - 1, int(count * room / size))
        return 0

    def _take(self) -> list[pa.RecordBatch]:
        taken = self._pending
        self._pending, self._rows, self._bytes = [], 0, 0
        self._emitted += 1
        return taken


def encode(batches: Sequence[pa.RecordBatch], compression: Compression | None) -> bytes:
    """One Arrow IPC stream (with its end-of-stream marker) of ``batches``, compressed whole as
    the ``Content-Encoding`` says; a batch of more than :data:`MESSAGE_BYTES` goes as several
    messages."""
    sink = pa.BufferOutputStream()
    out = sink if compression is None else pa.CompressedOutputStream(sink, compression)
    with pa.ipc.new_stream(out, batches[0].schema) as writer:
        for batch in batches:
            for piece in _slices(batch, rows_bytes(batch), MESSAGE_BYTES):
                writer.write_batch(piece)
    if compression is not None:
        out.close()
    body: bytes = sink.getvalue().to_pybytes()
    return body
