"""``GetSqlInfo``: what this server is and supports, in the protocol's dense-union layout.

The answer's schema is fixed by the protocol and checked exactly by clients (the ADBC driver's
Go core cannot even read a different union): ``info_name uint32 NOT NULL`` and ``value`` a dense
union of, with type codes 0 to 5, ``string_value utf8``, ``bool_value bool``, ``bigint_value
int64``, ``int32_bitmask int32``, ``string_list list<utf8>`` and ``int32_to_int32_list_map
map<int32, list<int32>>``, none of them nullable.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

import arrowport

_CHILDREN = [
    pa.field("string_value", pa.string(), nullable=False),
    pa.field("bool_value", pa.bool_(), nullable=False),
    pa.field("bigint_value", pa.int64(), nullable=False),
    pa.field("int32_bitmask", pa.int32(), nullable=False),
    pa.field("string_list", pa.list_(pa.string()), nullable=False),
    pa.field("int32_to_int32_list_map", pa.map_(pa.int32(), pa.list_(pa.int32())), nullable=False),
]
VALUE_TYPE = pa.dense_union(_CHILDREN, type_codes=list(range(len(_CHILDREN))))
SCHEMA = pa.schema(
    [
        pa.field("info_name", pa.uint32(), nullable=False),
        pa.field("value", VALUE_TYPE, nullable=False),
    ]
)
# The child each Python type goes to.
_STRING, _BOOL, _BIGINT, _BITMASK = 0, 1, 2, 3

# SqlSupportedTransaction: TRANSACTION (begin/commit/rollback, no savepoints).
_TRANSACTIONS = 1


class Bitmask(int):
    """An ``int32_bitmask`` value (a plain int is a ``bigint_value``)."""


def values(statement_idle_ms: int, transaction_idle_ms: int) -> dict[int, str | bool | int]:
    """The server's SqlInfo values by id (FlightSql.proto's ``SqlInfo``)."""
    return {
        0: "Arrowport",  # FLIGHT_SQL_SERVER_NAME
        1: arrowport.__version__,  # FLIGHT_SQL_SERVER_VERSION
        2: pa.__version__,  # FLIGHT_SQL_SERVER_ARROW_VERSION
        3: False,  # FLIGHT_SQL_SERVER_READ_ONLY: bulk ingestion writes
        4: True,  # FLIGHT_SQL_SERVER_SQL
        5: False,  # FLIGHT_SQL_SERVER_SUBSTRAIT
        8: Bitmask(_TRANSACTIONS),  # FLIGHT_SQL_SERVER_TRANSACTION
        9: False,  # FLIGHT_SQL_SERVER_CANCEL
        10: True,  # FLIGHT_SQL_SERVER_BULK_INGESTION
        11: False,  # FLIGHT_SQL_SERVER_INGEST_TRANSACTIONS_SUPPORTED
        100: Bitmask(statement_idle_ms),  # FLIGHT_SQL_SERVER_STATEMENT_TIMEOUT
        101: Bitmask(transaction_idle_ms),  # FLIGHT_SQL_SERVER_TRANSACTION_TIMEOUT
        500: False,  # SQL_DDL_CATALOG
        501: False,  # SQL_DDL_SCHEMA
        502: False,  # SQL_DDL_TABLE
        504: '"',  # SQL_IDENTIFIER_QUOTE_CHAR
        513: "\\",  # SQL_SEARCH_STRING_ESCAPE
        531: "catalog",  # SQL_CATALOG_TERM
        529: "schema",  # SQL_SCHEMA_TERM
    }


def sql_info(known: dict[int, str | bool | int], asked: Iterable[int]) -> pa.Table:
    """The rows for ``asked`` (every known id when empty); ids this server does not know are
    left out."""
    ids = list(dict.fromkeys(asked)) or sorted(known)
    ids = [i for i in ids if i in known]
    children: list[list[object]] = [[] for _ in _CHILDREN]
    types: list[int] = []
    offsets: list[int] = []
    for info_id in ids:
        value = known[info_id]
        if isinstance(value, bool):
            child = _BOOL
        elif isinstance(value, str):
            child = _STRING
        else:
            child = _BITMASK if isinstance(value, Bitmask) else _BIGINT
        types.append(child)
        offsets.append(len(children[child]))
        children[child].append(int(value) if child == _BITMASK else value)
    child_arrays = [
        pa.array(items, field.type) for items, field in zip(children, _CHILDREN, strict=True)
    ]
    union = pa.Array.from_buffers(
        VALUE_TYPE,
        len(ids),
        [None, pa.array(types, pa.int8()).buffers()[1], pa.array(offsets, pa.int32()).buffers()[1]],
        children=child_arrays,
    )
    names = pa.array(ids, pa.uint32())
    return pa.Table.from_arrays([names, union], schema=SCHEMA)
