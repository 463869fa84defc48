"""How an incoming Arrow schema meets a DuckDB table: type mapping, compatibility, DDL.

Types come from DuckDB's own Arrow mapping (``DESCRIBE`` of an empty Arrow table), never from a
hand-written table, so a timestamp with a time zone stays ``TIMESTAMP WITH TIME ZONE``, a map stays
a ``MAP`` and so on.

Where that mapping would fail or silently change data, Arrowport refuses instead (422):

- by type, before DuckDB sees it (:func:`unsupported_reason`): float16, decimal256, decimals with a
  negative scale or a scale above the precision, unions, structs with no fields, an empty or
  duplicate (case-insensitive) field name, fixed-size lists of size 0 or above DuckDB's 100,000,
  and DuckDB's own unchecked encodings (Arrow opaque types of vendor ``DuckDB``);
- by value, batch by batch: see :mod:`arrowport.storage.values`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from arrowport.errors import InvalidName, SchemaConflict, UnsupportedType
from arrowport.storage.identifiers import check_column_name, quote, quote_table
from arrowport.storage.sql_parse import fold


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    # True when the Arrow type is ``null``: such a column holds only NULLs and fits any type.
    all_null: bool = False
    # True for a table's column with a DEFAULT or GENERATED expression (DuckDB fills it in).
    computed: bool = False

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "type": self.type, "nullable": self.nullable}


def _describe(cursor: duckdb.DuckDBPyConnection, schema: pa.Schema) -> list[tuple[str, str]]:
    # A reader of no batches, not an empty table: pyarrow cannot make an empty array of some
    # types DuckDB reads (a struct of dictionaries of dates).
    relation = cursor.from_arrow(pa.RecordBatchReader.from_batches(schema, []))
    return list(zip(relation.columns, [str(t) for t in relation.types], strict=True))


# DuckDB's limit on the size of an ARRAY (Arrow fixed_size_list) type.
MAX_ARRAY_SIZE = 100_000


# The array classes whose values are lists of one child array (``flatten`` gives it).
LIST_ARRAYS = (
    pa.ListArray
    | pa.LargeListArray
    | pa.FixedSizeListArray
    | pa.ListViewArray
    | pa.LargeListViewArray
)


def is_list_type(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is one of Arrow's list types (values: a list of one child)."""
    return bool(
        pa.types.is_list(dtype)
        or pa.types.is_large_list(dtype)
        or pa.types.is_fixed_size_list(dtype)
        or pa.types.is_list_view(dtype)
        or pa.types.is_large_list_view(dtype)
    )


def child_arrays(array: pa.Array) -> list[pa.Array]:
    """The arrays holding ``array``'s values one level down: a list's items, a struct's fields,
    a union's children, a map's entries (as a struct of keys and items), a dictionary's or
    run-end encoding's values, an extension's storage; none for flat values."""
    if isinstance(array, pa.DictionaryArray):
        return [array.dictionary]
    if isinstance(array, pa.RunEndEncodedArray):
        return [array.values]
    if isinstance(array, pa.ExtensionArray):
        return [array.storage]
    if isinstance(array, pa.MapArray):
        # list_flatten has no kernel for maps: the entries this slice's offsets span (those of
        # a null map among them, if it spans any), as a struct of keys and items.
        offsets = array.offsets
        start = offsets[0].as_py() if len(offsets) else 0
        end = offsets[-1].as_py() if len(offsets) else 0
        return [array.values.slice(start, end - start)]
    if isinstance(array, pa.StructArray):
        return struct_fields(array)
    if isinstance(array, pa.UnionArray):
        # A sparse union's children come sliced with it; a dense union's whole.
        return [array.field(i) for i in range(array.type.num_fields)]
    if isinstance(array, LIST_ARRAYS):
        return [array.flatten()]
    return []


def struct_fields(array: pa.StructArray) -> list[pa.Array]:
    """A struct's fields, null where the struct is (``flatten``); as stored where a field is or
    holds a union, which has no nulls of its own to take the struct's: pyarrow's ``flatten``
    aborts the process on those (a failed check, not an exception)."""
    if any(has_union(field.type) for field in array.type):
        return [array.field(i) for i in range(array.type.num_fields)]
    return list(array.flatten())


def child_types(dtype: pa.DataType) -> list[pa.DataType]:
    if isinstance(dtype, pa.DictionaryType | pa.RunEndEncodedType):
        return [dtype.value_type]
    if isinstance(dtype, pa.BaseExtensionType):
        return [dtype.storage_type]
    return [dtype.field(i).type for i in range(dtype.num_fields)]


# Arrow's interval types other than month_day_nano (pyarrow reads them, has no constructor).
_OTHER_INTERVALS = frozenset({"month_interval", "day_time_interval"})


def _misread_encoding(dtype: pa.DataType) -> str | None:
    """Why DuckDB 1.5.5 would misread a dictionary or run-end encoding at ``dtype``'s top: one of
    nested values (a dictionary of structs or lists was an INTERNAL error that invalidated the
    database until a restart), or a run-end encoding of a dictionary (stored as its indices).
    Refused, not decoded here: decoding could make gigabytes of a few bytes."""
    if isinstance(dtype, pa.DictionaryType | pa.RunEndEncodedType) and child_types(
        _storage(dtype.value_type)
    ):
        kind = "dictionary" if isinstance(dtype, pa.DictionaryType) else "run-end encoding"
        return (
            f"a {kind} of {dtype.value_type} is misread by DuckDB 1.5.5; send the values "
            "without the encoding"
        )
    if isinstance(dtype, pa.FixedSizeListType) and has_encoding(dtype.value_type):
        # Read as the indices, or a crash (SIGSEGV).
        return (
            f"{dtype}: DuckDB 1.5.5 misreads a dictionary or run-end encoding inside a "
            "fixed-size list; send the values without the encoding, or as a list"
        )
    return None


def _storage(dtype: pa.DataType) -> pa.DataType:
    """An extension type's storage (DuckDB reads a dictionary of ``arrow.json`` as of text)."""
    while isinstance(dtype, pa.BaseExtensionType):
        dtype = dtype.storage_type
    return dtype


def has_encoding(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is, or nests, a dictionary or run-end encoding."""
    return isinstance(dtype, pa.DictionaryType | pa.RunEndEncodedType) or any(
        map(has_encoding, child_types(dtype))
    )


def has_dictionary(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is, or nests, a dictionary type."""
    return isinstance(dtype, pa.DictionaryType) or any(map(has_dictionary, child_types(dtype)))


def has_union(dtype: pa.DataType) -> bool:
    """Whether ``dtype`` is, or nests, a union."""
    return bool(pa.types.is_union(dtype)) or any(map(has_union, child_types(dtype)))


def unsupported_reason(dtype: pa.DataType) -> str | None:
    """Why DuckDB cannot store Arrow type ``dtype`` (or anything nested in it) faithfully.

    >>> unsupported_reason(pa.list_(pa.float16()))
    'float16 has no DuckDB type; cast it to float32'
    """
    if pa.types.is_float16(dtype):
        return "float16 has no DuckDB type; cast it to float32"
    if pa.types.is_decimal256(dtype):
        return f"{dtype} is not readable by DuckDB; send decimal128 (precision up to 38)"
    if pa.types.is_decimal(dtype) and not 0 <= dtype.scale <= dtype.precision:
        return f"{dtype}: DuckDB decimals need 0 <= scale <= precision"
    if pa.types.is_union(dtype):
        return f"{dtype}: DuckDB cannot read Arrow unions"
    misread = _misread_encoding(dtype)
    if misread is not None:
        return misread
    if str(dtype) in _OTHER_INTERVALS:
        # DuckDB 1.5.5 reads their bytes as its own interval's: 1 day 2 ms became 272 years.
        return f"{dtype} is not read faithfully by DuckDB; send month_day_nano_interval"
    if pa.types.is_struct(dtype):
        if dtype.num_fields == 0:
            return "a struct with no fields has no DuckDB type"
        seen: set[str] = set()
        for i in range(dtype.num_fields):
            name = dtype.field(i).name
            if not name or "\x00" in name:
                return f"struct field name {name!r} is not allowed in DuckDB"
            if fold(name) in seen:
                return f"duplicate struct field name {name!r} (DuckDB names are case-insensitive)"
            seen.add(fold(name))
    if pa.types.is_fixed_size_list(dtype) and not 1 <= dtype.list_size <= MAX_ARRAY_SIZE:
        return (
            f"fixed_size_list of size {dtype.list_size}: DuckDB arrays hold 1 to "
            f"{MAX_ARRAY_SIZE:,} elements"
        )
    for child in child_types(dtype):
        reason = unsupported_reason(child)
        if reason is not None:
            return reason
    return None


# DuckDB reads an Arrow opaque type from this vendor as one of its own types (HUGEINT, BIGNUM,
# BIT, TIME WITH TIME ZONE...), taking its bytes as they are: one too short is read past its end,
# and a malformed BIGNUM kills the process when a query computes with it.
_DUCKDB_VENDOR = "DuckDB"


def _unsupported_field(field: pa.Field) -> str | None:
    """:func:`unsupported_reason` of the field's type, or why DuckDB would take its values
    (or those of a field nested in it) in its own unchecked encoding."""
    return unsupported_reason(field.type) or _vendor_encoded(field)


def _vendor_encoded(field: pa.Field) -> str | None:
    dtype = field.type
    metadata = field.metadata or {}
    if (
        isinstance(dtype, pa.OpaqueType) and dtype.vendor_name == _DUCKDB_VENDOR
    ) or (  # an opaque type pyarrow did not read as one, which DuckDB may all the same
        metadata.get(b"ARROW:extension:name") == b"arrow.opaque"
        and _DUCKDB_VENDOR.lower().encode()
        in metadata.get(b"ARROW:extension:metadata", b"").lower()
    ):
        name = dtype.type_name if isinstance(dtype, pa.OpaqueType) else "a type"
        return (
            f"DuckDB's own encoding of {name} (an Arrow opaque type) is not accepted, as its "
            "bytes cannot be checked; send the values as a standard Arrow type"
        )
    while isinstance(dtype, pa.BaseExtensionType | pa.DictionaryType):
        dtype = dtype.storage_type if isinstance(dtype, pa.BaseExtensionType) else dtype.value_type
    for i in range(dtype.num_fields):
        reason = _vendor_encoded(dtype.field(i))
        if reason is not None:
            return reason
    return None


# Type mapping runs on a private in-memory database: it needs no catalog, cannot disturb a
# caller's transaction, and its answers are cached per schema (a producer sends the same schema
# over and over; describing it costs a DuckDB round trip every time).
_MAPPER = duckdb.connect(":memory:")
_MAPPER_LOCK = threading.Lock()
_MAPPED: OrderedDict[pa.Schema, list[Column]] = OrderedDict()
_MAPPED_MAX = 512


def arrow_columns(schema: pa.Schema) -> list[Column]:
    """The DuckDB columns an Arrow schema maps to; 422 naming any column DuckDB cannot hold."""
    with _MAPPER_LOCK:
        cached = _MAPPED.get(schema)
        if cached is not None:
            _MAPPED.move_to_end(schema)
            return cached
    columns = _map_schema(schema)
    with _MAPPER_LOCK:
        _MAPPED[schema] = columns
        if len(_MAPPED) > _MAPPED_MAX:
            _MAPPED.popitem(last=False)
    return columns


def _map_schema(schema: pa.Schema) -> list[Column]:
    seen: dict[str, str] = {}
    for field in schema:
        check_column_name(field.name)
        folded = fold(field.name)
        if folded in seen:
            raise InvalidName(
                f"duplicate column name {field.name!r} (DuckDB column names are "
                f"case-insensitive; it clashes with {seen[folded]!r})",
                column=field.name,
            )
        seen[folded] = field.name
    refused = [(f, reason) for f in schema if (reason := _unsupported_field(f)) is not None]
    if refused:
        raise UnsupportedType(
            "DuckDB cannot store the Arrow type of "
            + "; ".join(f"column {f.name!r} ({f.type}): {reason}" for f, reason in refused),
            columns=[f.name for f, _ in refused],
        )
    try:
        with _MAPPER_LOCK:
            described = _describe(_MAPPER, schema)
    except (duckdb.Error, pa.ArrowException):
        # A failed DuckDB call aborts the cursor's transaction, so each column is tried on a
        # cursor of its own; otherwise every column after the first bad one would be blamed.
        bad = []
        for field in schema:
            probe = _MAPPER.cursor()
            try:
                _describe(probe, pa.schema([field]))
            except (duckdb.Error, pa.ArrowException):
                bad.append(field)
            finally:
                probe.close()
        if not bad:
            raise
        names = ", ".join(f"{f.name!r} ({f.type})" for f in bad)
        raise UnsupportedType(
            f"DuckDB cannot store the Arrow type of column {names}",
            columns=[f.name for f in bad],
        ) from None
    return [
        Column(name, dtype, field.nullable, pa.types.is_null(field.type))
        for (name, dtype), field in zip(described, schema, strict=True)
    ]


# -- values DuckDB would change silently -------------------------------------------------------


def create_table_sql(table: str, columns: list[Column], replace: bool = False) -> str:
    verb = "CREATE OR REPLACE TABLE" if replace else "CREATE TABLE"
    parts = [
        f"{quote(c.name)} {c.type}{'' if c.nullable or c.all_null else ' NOT NULL'}"
        for c in columns
    ]
    return f"{verb} {quote_table(table)} ({', '.join(parts)})"


_SIGNED = ["TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"]
_UNSIGNED = ["UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"]
_TIMESTAMP_WIDENING = {("TIMESTAMP_S", "TIMESTAMP"), ("TIMESTAMP_MS", "TIMESTAMP")}
_DECIMAL_RE = re.compile(r"^DECIMAL\((\d+),(\d+)\)$")


def _decimal(dtype: str) -> tuple[int, int] | None:
    match = _DECIMAL_RE.match(dtype.replace(" ", ""))
    return (int(match[1]), int(match[2])) if match else None


def is_safe_cast(source: str, target: str) -> bool:
    """True when every value of DuckDB type ``source`` fits ``target`` without loss."""
    if source == target:
        return True
    if source in _SIGNED and target in _SIGNED:
        return _SIGNED.index(target) >= _SIGNED.index(source)
    if source in _UNSIGNED and target in _UNSIGNED:
        return _UNSIGNED.index(target) >= _UNSIGNED.index(source)
    if source in _UNSIGNED and target in _SIGNED:
        return _SIGNED.index(target) > _UNSIGNED.index(source)
    if source == "FLOAT" and target == "DOUBLE":
        return True
    if target == "DOUBLE" and source in (
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
    ):
        return True
    if (source, target) in _TIMESTAMP_WIDENING:
        return True
    src_dec, dst_dec = _decimal(source), _decimal(target)
    if src_dec and dst_dec:
        (sp, ss), (tp, ts) = src_dec, dst_dec
        return ts >= ss and tp - ts >= sp - ss
    return False


def check_compatible(table: str, incoming: list[Column], existing: list[Column]) -> None:
    """Raise 409 naming every conflicting column; inserts match columns by name."""
    by_name = {fold(c.name): c for c in existing}
    unknown = [c.name for c in incoming if fold(c.name) not in by_name]
    mismatched: list[str] = []
    mismatched_names: list[str] = []
    for column in incoming:
        target = by_name.get(fold(column.name))
        if target is None or column.all_null:
            continue
        if not is_safe_cast(column.type, target.type):
            mismatched.append(f"{column.name} ({column.type} into {target.type})")
            mismatched_names.append(column.name)
    present = {fold(c.name) for c in incoming}
    missing = [c.name for c in existing if not c.nullable and fold(c.name) not in present]
    problems = []
    if unknown:
        problems.append("unknown columns: " + ", ".join(unknown))
    if mismatched:
        problems.append("incompatible types: " + ", ".join(mismatched))
    if missing:
        problems.append("missing NOT NULL columns: " + ", ".join(missing))
    if problems:
        raise SchemaConflict(
            f"batch does not fit table {table!r}: " + "; ".join(problems),
            table=table,
            columns=unknown + mismatched_names + missing,
        )
