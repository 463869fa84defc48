"""Prepared statements: a read-only query kept by the server between calls, with the parameters
last bound to it.

``CreatePreparedStatement`` checks the query with the read guard at once (a statement that would
write is refused there, 403 ``read_only``) and answers with its parameters' schema (fields named
``1``, ``2``... of the null type: DuckDB's placeholders are untyped) and, for a query that takes
no parameters, its answer's schema. ``DoPut`` binds one row of parameters (the columns in
placeholder order; none: no parameters); ``GetFlightInfo`` runs it. A statement prepared in a
transaction runs in it while that transaction lasts, then on its own.

Open statements are bounded in number and bytes, server-wide and for each client
(``flight.max_prepared_statements_per_client`` and :data:`STATEMENT_BYTES_PER_CLIENT`), and
dropped after :data:`STATEMENT_IDLE_SECONDS` unused (see
:class:`~arrowport.flight.sql.handles.Registry`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from arrowport.errors import InvalidOptions, InvalidValue, PayloadTooLarge, TooManyColumns
from arrowport.flight.sql.handles import Quota, Registry
from arrowport.flight.sql.parameters import python_value
from arrowport.ingest.ipc_messages import Message, PayloadBudget, PayloadLimits
from arrowport.ingest.payload import IpcPayload
from arrowport.storage import query_inputs
from arrowport.storage.metadata import QueryShape
from arrowport.storage.query import Parameters

STATEMENT_CAPACITY = 1024
STATEMENT_IDLE_SECONDS = 600.0
# The SQL text and bound parameters of every open statement together.
STATEMENT_BYTES = 128 * 1024**2
# The SQL text and bound parameters of one client's open statements together.
STATEMENT_BYTES_PER_CLIENT = 32 * 1024**2
# Values in one statement's parameters, nested ones included (a list of 20M nulls is 336 bytes of
# Arrow but 160 MB of Python objects): the bound every protocol's parameters are held to. What
# each is counted as once bound.
MAX_PARAMETER_VALUES = query_inputs.MAX_PARAMETER_VALUES
BYTES_PER_VALUE = 64
# Rows in one batch of parameters (a statement binds one).
MAX_PARAMETER_ROWS = 1_000


class _ParameterBudget(PayloadBudget):
    """A batch of parameters is held to the size of a query, ``limits.max_query_body_bytes``
    (both the message and the payload limits of its :class:`PayloadLimits`), and named so."""

    def admit(self, message: Message) -> None:
        try:
            super().admit(message)
        except TooManyColumns:
            raise
        except PayloadTooLarge:
            limit = self.limits.max_body_bytes
            raise PayloadTooLarge(
                f"the bound parameters decode to more than {limit} bytes "
                "(limits.max_query_body_bytes): bind smaller values",
                limit=limit,
            ) from None


def read_parameters(messages: Iterator[Message], max_bytes: int, max_columns: int) -> pa.Table:
    """One batch of bound parameters from the IPC ``messages`` of a put, of at most
    ``max_bytes`` decoded (``limits.max_query_body_bytes``)."""
    limits = PayloadLimits(max_bytes, max_bytes, max_columns)
    budget = _ParameterBudget(limits)
    payload = IpcPayload(messages, limits, 2**31, max_rows=MAX_PARAMETER_ROWS, budget=budget)
    return payload.stream.read_all()


def value_count(array: pa.Array) -> int:
    """Values in ``array``, counting every element of nested lists, maps and structs (and the
    values behind a dictionary, a run-end encoding, a union or an extension type)."""
    kind = array.type
    if isinstance(kind, pa.BaseExtensionType):
        return value_count(array.storage)
    if pa.types.is_struct(kind) or pa.types.is_union(kind):
        return len(array) + sum(value_count(array.field(i)) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        # Its entries, each a key and an item (list_flatten has no kernel for maps).
        return len(array) + value_count(array.keys) + value_count(array.items)
    if (
        pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_list_view(kind)
        or pa.types.is_large_list_view(kind)
    ):
        return len(array) + value_count(array.flatten())
    if pa.types.is_dictionary(kind):
        return len(array) + value_count(array.dictionary)
    if pa.types.is_run_end_encoded(kind):
        return len(array) + value_count(array.values)
    return len(array)


def parameters_size(sql: str, values: pa.Table) -> int:
    """What a statement with ``values`` bound holds in memory, as the registry counts it; 422
    ``invalid_value`` for more values than a statement may bind."""
    count = sum(value_count(chunk) for column in values.columns for chunk in column.chunks)
    if count > MAX_PARAMETER_VALUES:
        raise InvalidValue(
            f"the parameters hold {count:,} values (nested ones included); at most "
            f"{MAX_PARAMETER_VALUES:,} can be bound"
        )
    return len(sql) + int(values.get_total_buffer_size()) + BYTES_PER_VALUE * count


@dataclass
class PreparedStatement:
    sql: str
    shape: QueryShape
    transaction: bytes | None = None
    params: Parameters = field(default=None)

    def parameter_schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, pa.null()) for name in self.shape.parameters])

    def arguments(self) -> Parameters:
        """The parameters to run with; 422 before it runs if it takes some and none were bound,
        as for too few: run, it would fail in DuckDB and abort the transaction it runs in."""
        wanted = len(self.shape.parameters)
        if self.params is None and wanted:
            raise InvalidOptions(
                f"the query takes {wanted} parameters; none were bound "
                "(execute it with its parameters)"
            )
        return self.params

    def bind(self, values: pa.Table) -> None:
        """Bind a batch of parameters: one row, or none. Its columns are the placeholders in order
        (``?``, ``$1``), or, for a query with named ones (``$name``), by their names."""
        if values.num_rows == 0:
            self.params = None
            return
        if values.num_rows > 1:
            raise InvalidOptions(
                f"a query runs with one row of parameters; {values.num_rows} rows were bound"
            )
        row = [
            python_value(column[0], f"parameter {name}")
            for name, column in zip(_labels(values, self.shape), values.columns, strict=True)
        ]
        if any(not name.isdigit() for name in self.shape.parameters):
            # DuckDB's parameter names are case-insensitive, as its other names are.
            names = [name.lower() for name in values.column_names]
            given = dict(zip(names, row, strict=True))
            wanted = {name.lower(): name for name in self.shape.parameters}
            if len(given) != len(row) or given.keys() != wanted.keys():
                raise InvalidOptions(
                    "the query's named parameters are "
                    + ", ".join("$" + n for n in self.shape.parameters)
                    + "; the bound columns are named "
                    + (", ".join(values.column_names) or "nothing")
                    + " (each once)"
                )
            params: Parameters = {wanted[key]: value for key, value in given.items()}
        else:
            if len(row) != len(self.shape.parameters):
                raise InvalidOptions(
                    f"the query takes {len(self.shape.parameters)} parameters; "
                    f"{len(row)} were bound"
                )
            params = row
        query_inputs.check_parameters(params)
        self.params = params


def _labels(values: pa.Table, shape: QueryShape) -> list[str]:
    """What errors call each bound column: ``$name`` for named parameters, else its position."""
    if any(not name.isdigit() for name in shape.parameters):
        return ["$" + name for name in values.column_names]
    return [str(i) for i in range(1, values.num_columns + 1)]


def statements(per_client: int) -> Registry[PreparedStatement]:
    """Open statements, at most ``per_client`` (``flight.max_prepared_statements_per_client``)
    of them for one client."""
    quota = Quota(
        per_client,
        "flight.max_prepared_statements_per_client",
        "close some (ClosePreparedStatement; closing a cursor closes its own) before preparing "
        f"more; one left open is dropped after {STATEMENT_IDLE_SECONDS:g} s unused",
        STATEMENT_BYTES_PER_CLIENT,
        " of SQL and bound parameters",
    )
    return Registry(
        "prepared statement",
        "statement",
        STATEMENT_CAPACITY,
        STATEMENT_IDLE_SECONDS,
        close=lambda statement: None,
        max_bytes=STATEMENT_BYTES,
        quota=quota,
    )
