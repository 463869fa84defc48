"""Text a DuckLake would change as it commits it, refused before anything is written.

DuckLake 1.5.5 builds each commit as SQL text, with the written values inlined in it (small
writes' rows, every column's min and max, names), and then replaces placeholders such as
``{SNAPSHOT_ID}`` or ``{DATA_PATH}`` throughout that text. A value holding one is stored
changed (``'batch-{SNAPSHOT_ID}'`` lands as ``'batch-2'``), a column's statistics then no longer
hold its values (``WHERE s = '{SNAPSHOT_ID}'`` finds no row), and some make every commit fail.
So on a lake a string or binary value, a table or column name, an idempotency key or a producer
id holding one of those placeholders is refused: 422 ``invalid_value`` (a value), 400
``invalid_name`` (a name), 422 ``invalid_options`` (a key or id); and so is a query whose text or
parameters hold one (422 ``invalid_options``), since a filter's values reach the catalog's SQL.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from arrowport.errors import InvalidName, InvalidOptions, InvalidValue
from arrowport.storage.delivery import Delivery
from arrowport.storage.schema import child_arrays

# The placeholders DuckLake 1.5.5 replaces in its commits' SQL (metadata managers and
# server-side commit of the duckdb/ducklake v1.5 sources).
PLACEHOLDERS = (
    "AUTHOR",
    "CATALOG",
    "COMMIT_EXTRA_INFO",
    "COMMIT_MESSAGE",
    "DATA_PATH",
    "METADATA_CATALOG",
    "METADATA_CATALOG_NAME_IDENTIFIER",
    "METADATA_CATALOG_NAME_LITERAL",
    "METADATA_PATH",
    "METADATA_SCHEMA_ESCAPED",
    "METADATA_SCHEMA_NAME_LITERAL",
    "NEXT_CATALOG_ID",
    "NEXT_FILE_ID",
    "SCHEMA_VERSION",
    "SEPARATOR",
    "SNAPSHOT_ID",
    "TABLE_ID",
)
_PATTERN = r"\{(?:" + "|".join(PLACEHOLDERS) + r")\}"
_FOUND = re.compile(_PATTERN)
_WHY = "a placeholder DuckLake 1.5.5 replaces as it commits (with a snapshot id, a path...)"


def _placeholder(text: str) -> str | None:
    found = _FOUND.search(text)
    return None if found is None else found.group()


def check_lake_names(table: str, schema: pa.Schema) -> None:
    """400 ``invalid_name`` for a table, column or nested field name holding a placeholder."""
    names = [table]
    kinds = [pa.field("", pa.struct(list(schema)))]
    while kinds:
        kind = kinds.pop().type
        if isinstance(kind, pa.StructType):
            fields = [kind.field(i) for i in range(kind.num_fields)]
        elif isinstance(kind, pa.MapType):
            fields = [kind.key_field, kind.item_field]
        elif hasattr(kind, "value_field"):
            fields = [kind.value_field]
        elif isinstance(kind, pa.DictionaryType):
            fields = [pa.field("", kind.value_type)]
        elif isinstance(kind, pa.BaseExtensionType):
            fields = [pa.field("", kind.storage_type)]
        else:
            fields = []
        names += [field.name for field in fields]
        kinds += fields
    for name in names:
        placeholder = _placeholder(name)
        if placeholder is not None:
            raise InvalidName(
                f"the name {name[:100]!r} holds {placeholder}, {_WHY}: a lake cannot keep "
                "it; rename it",
                name=name[:100],
            )


def check_lake_delivery(delivery: Delivery | None) -> None:
    """422 ``invalid_options`` for an idempotency key or producer id holding a placeholder: the
    lake's delivery records would keep another one, and never find it again."""
    if delivery is None:
        return
    for option, value in (
        ("idempotency_key", delivery.idempotency_key),
        ("producer_id", delivery.producer_id),
    ):
        placeholder = None if value is None else _placeholder(value)
        if placeholder is not None:
            raise InvalidOptions(
                f"{option} holds {placeholder}, {_WHY}: the lake could not recognise it "
                "again; choose another",
                option=option,
            )


def _placeholder_in(array: pa.Array) -> str | None:
    """The first placeholder a value of ``array`` (or nested in it) holds; None for none."""
    kind = array.type
    if len(array) == 0:
        return None
    if (
        pa.types.is_string_view(kind)
        or pa.types.is_binary_view(kind)
        or pa.types.is_fixed_size_binary(kind)
    ):
        return _placeholder_in(array.cast(pa.large_binary()))
    if (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    ):
        found = pc.match_substring_regex(array, _PATTERN)
        if not pc.any(found).as_py():
            return None
        value = pc.filter(array, found)[0].as_py()
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        return _placeholder(text)
    return next(filter(None, map(_placeholder_in, child_arrays(array))), None)


def check_lake_text(batch: pa.RecordBatch, first_row: int = 0) -> None:
    """422 ``invalid_value`` naming the first column with a value holding a placeholder."""
    for field, column in zip(batch.schema, batch.columns, strict=True):
        placeholder = _placeholder_in(column)
        if placeholder is not None:
            raise InvalidValue(
                f"column {field.name!r} has a value holding {placeholder}, {_WHY}: the lake "
                "would store another value, and its statistics would hide the row from "
                "queries",
                column=field.name,
            )


def check_lake_query(sql: str, params: object) -> None:
    """422 ``invalid_options`` for a query (``sql``: its text or parse tree) or parameters
    holding a placeholder:
    DuckLake sends a filter's values to its catalog as SQL too, so ``WHERE s < '{SNAPSHOT_ID}'``
    would skip files by another value's statistics (a value the query computes, such as
    ``'{' || 'SNAPSHOT_ID}'``, is not seen here)."""
    texts = [sql]
    pending = [params]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, bytes | bytearray):
            texts.append(bytes(value).decode("latin-1"))
        elif isinstance(value, dict):
            pending += [*value.keys(), *value.values()]
        elif isinstance(value, list | tuple):
            pending += value
    for text in texts:
        placeholder = _placeholder(text)
        if placeholder is not None:
            where = "the query" if text is sql else "a parameter"
            raise InvalidOptions(
                f"{where} holds {placeholder}, {_WHY}: on a lake its filters would compare "
                "with another value"
            )
