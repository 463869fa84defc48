"""One plausible SQL call for each function DuckDB lists in ``duckdb_functions()``.

For each distinct (name, type) the first overload (by ``function_oid``) gets typed arguments
built from its parameter types and names — ``CAST(3 AS UTINYINT)``, ``DATE '2024-01-02'``,
``[1, 2, 3]``, ``MAP {'k': 1}``, ``lambda x: x + 1``, ``'day'`` for a date part, ``'%Y-%m-%d'``
for a format — except for the few functions listed in :data:`WHOLE_CALLS`, which need
semantically valid arguments. Where a column is needed the call reads the table
``t(i BIGINT, s VARCHAR, d DATE, ts TIMESTAMP)``.

The SQL form follows the function's type: scalar and macro ``SELECT fn(...)``, aggregate
``SELECT fn(...) FROM t``, window ``SELECT fn(...) OVER () FROM t``, table and table macro
``SELECT * FROM fn(...) LIMIT 5``, pragma ``PRAGMA "fn"(...)``.

Example::

    calls = function_calls(duckdb.connect(":memory:"))
    [call.sql for call in calls if call.name == "abs"]  # ['SELECT abs(CAST(3 AS TINYINT))']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import duckdb

# Functions that only run with OVER (...); duckdb_functions() lists them as aggregates.
WINDOW_FUNCTIONS = frozenset(
    {
        "row_number",
        "rank",
        "dense_rank",
        "rank_dense",
        "percent_rank",
        "cume_dist",
        "ntile",
        "lag",
        "lead",
        "first_value",
        "last_value",
        "nth_value",
        "fill",
    }
)
INTEGER_TYPES = frozenset(
    {
        "TINYINT",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "HUGEINT",
        "UTINYINT",
        "USMALLINT",
        "UINTEGER",
        "UBIGINT",
        "UHUGEINT",
    }
)
JSON_DOC = """'{"a": [1, 2], "b": "x"}'"""
JSON_SHAPE = """'{"a": ["INTEGER"], "b": "VARCHAR"}'"""
WKB_POINT = (
    "'\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\xF0?"
    "\\x00\\x00\\x00\\x00\\x00\\x00\\x00@'::BLOB"
)
MOOD = "ENUM('sad', 'ok', 'happy')"

# Literals by DuckDB type name, where the type alone decides.
TYPED_LITERALS = {
    "DECIMAL": "CAST(0.5 AS DECIMAL(4, 1))",
    "BOOLEAN": "true",
    "DATE": "DATE '2024-01-02'",
    "TIMESTAMP": "TIMESTAMP '2024-01-02 03:04:05'",
    "TIMESTAMP_NS": "TIMESTAMP_NS '2024-01-02 03:04:05'",
    "TIMESTAMP_MS": "CAST(TIMESTAMP '2024-01-02 03:04:05' AS TIMESTAMP_MS)",
    "TIMESTAMP_S": "CAST(TIMESTAMP '2024-01-02 03:04:05' AS TIMESTAMP_S)",
    "TIMESTAMP WITH TIME ZONE": "TIMESTAMPTZ '2024-01-02 03:04:05+00'",
    "TIME": "TIME '03:04:05'",
    "TIME_NS": "CAST('03:04:05' AS TIME_NS)",
    "TIME WITH TIME ZONE": "TIMETZ '03:04:05+00'",
    "INTERVAL": "INTERVAL 1 DAY",
    "UUID": "'0190e3a8-5a6b-7c3d-8e9f-0a1b2c3d4e5f'::UUID",
    "BIT": "'0101'::BIT",
    "BIGNUM": "CAST(3 AS BIGNUM)",
    "GEOMETRY": "'POINT (1 2)'::GEOMETRY",
    "VARIANT": "CAST({'a': 1} AS VARIANT)",
    "UNION": "union_value(k := 1)",
    "STRUCT": "{'a': 1, 'b': 'x'}",
    'STRUCT("year" BIGINT, "month" BIGINT, "day" BIGINT)': "{'year': 2024, 'month': 1, 'day': 2}",
    "STRUCT(K, V)[]": "[{'key': 'k', 'value': 1}]",
    "MAP(K, V)": "MAP {'k': 1}",
    "K": "'k'",
    "V": "1",
    "K[]": "['k']",
    "V[]": "[1]",
    "T[][]": "[[1, 2], [3]]",
    "BOOLEAN[]": "[true, false, true]",
    "BIGINT[]": "CAST([1, 2, 3] AS BIGINT[])",
    "FLOAT[ANY]": "CAST([1, 2, 3] AS FLOAT[3])",
    "DOUBLE[ANY]": "CAST([1, 2, 3] AS DOUBLE[3])",
    "FLOAT[3]": "CAST([1, 2, 3] AS FLOAT[3])",
    "DOUBLE[3]": "CAST([1, 2, 3] AS DOUBLE[3])",
    "POINTER": "0",
    "TABLE": "(SELECT * FROM t)",
    "AGGREGATE_STATE<?>": "sum(i) EXPORT_STATE",
}

# VARCHAR arguments by parameter name.
NAMED_STRINGS = {
    "part": "'day'",
    "ts": "'day'",
    "format": "'%Y-%m-%d'",
    "text": "'2024-01-02'",
    "regex": "'a(b)?'",
    "options": "'i'",
    "replacement": "'x'",
    "function_name": "'sum'",
    "message": "'boom'",
    "sequence_name": "'seq'",
    "setting_name": "'threads'",
    "database_name": "'memory'",
    "schema_name": "'main'",
    "name": "'INTEGER'",
    "crs": "'EPSG:4326'",
    "tag": "'a'",
    "entry": "'a'",
    "bitstring": "'0101'",
    "path": "'/a/b/c.txt'",
    "escape_character": "'$'",
    "like_specifier": "'a%'",
    "character": "'*'",
    "list": "'abc'",
    "col6": "'UTC'",
    "origin": "'UTC'",
}

# ANY arguments by parameter name.
NAMED_VALUES = {
    "enum": f"'ok'::{MOOD}",
    "map": "MAP {'k': 1}",
    "struct": "{'a': 1, 'b': 'x'}",
    "entry": "1",
    "list": "[1, 2, 3]",
    "begin": "1",
    "end": "2",
    "str": "'a'",
    "string": "'a'",
    "initial_value": "0",
}

# Whole calls by (name, type), for functions whose first overload needs arguments the types
# alone cannot give (or takes none that work).
WHOLE_CALLS: dict[tuple[str, str], str] = {
    # table functions and table macros
    ("repeat_row", "table"): "SELECT * FROM repeat_row(1, 'x', num_rows := 3) LIMIT 5",
    ("unnest", "table"): "SELECT * FROM unnest([1, 2, 3]) LIMIT 5",
    ("summary", "table"): "SELECT * FROM summary((SELECT * FROM t)) LIMIT 5",
    ("query", "table"): "SELECT * FROM query('SELECT 42') LIMIT 5",
    ("query_table", "table"): "SELECT * FROM query_table('t') LIMIT 5",
    ("json_execute_serialized_sql", "table"): (
        "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 42')) LIMIT 5"
    ),
    ("histogram", "table_macro"): "SELECT * FROM histogram('t', i) LIMIT 5",
    ("histogram_values", "table_macro"): "SELECT * FROM histogram_values('t', i) LIMIT 5",
    ("duckdb_logs_parsed", "table_macro"): "SELECT * FROM duckdb_logs_parsed('QueryLog') LIMIT 5",
    ("which_secret", "table"): "SELECT * FROM which_secret('s3://bucket/x', 's3') LIMIT 5",
    ("test_vector_types", "table"): (
        "SELECT * FROM test_vector_types(NULL::INTEGER, all_flat := true) LIMIT 5"
    ),
    ("glob", "table"): "SELECT * FROM glob('*') LIMIT 5",
    ("parquet_bloom_probe", "table"): (
        "SELECT * FROM parquet_bloom_probe('x.parquet', 'i', 1) LIMIT 5"
    ),
    ("python_map_function", "table"): (
        "SELECT * FROM python_map_function((SELECT 1), 0, 0) LIMIT 5"
    ),
    # scalars and aggregates
    ("finalize", "scalar"): "SELECT finalize(sum(i) EXPORT_STATE) FROM t",
    ("combine", "scalar"): (
        "SELECT finalize(combine(sum(i) EXPORT_STATE, sum(i) EXPORT_STATE)) FROM t"
    ),
    ("aggregate", "scalar"): "SELECT aggregate([1, 2, 3], 'sum')",
    ("array_aggr", "scalar"): "SELECT array_aggr([1, 2, 3], 'sum')",
    ("array_aggregate", "scalar"): "SELECT array_aggregate([1, 2, 3], 'sum')",
    ("list_aggr", "scalar"): "SELECT list_aggr([1, 2, 3], 'sum')",
    ("list_aggregate", "scalar"): "SELECT list_aggregate([1, 2, 3], 'sum')",
    ("array_extract", "scalar"): "SELECT array_extract([1, 2, 3], 2)",
    ("array_length", "scalar"): "SELECT array_length([1, 2, 3])",
    ("array_to_json", "scalar"): "SELECT array_to_json([1, 2])",
    ("row_to_json", "scalar"): "SELECT row_to_json({'a': 1, 'b': 'x'})",
    ("bitstring", "scalar"): "SELECT bitstring('0101', 8)",
    ("cardinality", "scalar"): "SELECT cardinality(MAP {'k': 1})",
    ("concat", "scalar"): "SELECT concat('a', 1, 'b')",
    ("date_sub", "scalar"): "SELECT date_sub('day', DATE '2024-01-02', DATE '2024-02-03')",
    ("dayofweek", "scalar"): "SELECT dayofweek(DATE '2024-01-02')",
    ("timezone_hour", "scalar"): "SELECT timezone_hour(TIMESTAMPTZ '2024-01-02 03:04:05+00')",
    ("timezone_minute", "scalar"): "SELECT timezone_minute(TIMESTAMPTZ '2024-01-02 03:04:05+00')",
    ("weekofyear", "scalar"): "SELECT weekofyear(DATE '2024-01-02')",
    ("list_reverse_sort", "scalar"): "SELECT list_reverse_sort([3, 1, 2])",
    ("switch", "scalar"): "SELECT switch('k', MAP {'k': 1})",
    ("parse_formatted_bytes", "scalar"): "SELECT parse_formatted_bytes('1GB')",
    ("position", "scalar"): "SELECT position('b' IN 'abc')",
    ("set_bit", "scalar"): "SELECT set_bit('0101'::BIT, 1, 1)",
    ("struct_contains", "scalar"): "SELECT struct_contains(row(1, 'x'), 1)",
    ("struct_has", "scalar"): "SELECT struct_has(row(1, 'x'), 1)",
    ("struct_indexof", "scalar"): "SELECT struct_indexof(row(1, 'x'), 1)",
    ("struct_position", "scalar"): "SELECT struct_position(row(1, 'x'), 1)",
    ("get_type", "scalar"): "SELECT get_type(1)::VARCHAR",
    ("make_type", "scalar"): "SELECT make_type('INTEGER')::VARCHAR",
    ("variant_normalize", "scalar"): "SELECT variant_normalize(CAST({'a': 1} AS VARIANT))::VARCHAR",
    ("variant_extract", "scalar"): "SELECT variant_extract({'a': 1}::VARIANT, 'a')::VARCHAR",
    ("variant_bytes_to_variant", "scalar"): (
        "SELECT variant_bytes_to_variant('\\x01\\x00\\x00\\x0c\\x05'::BLOB)::VARCHAR"
    ),
    ("remap_struct", "scalar"): (
        "SELECT remap_struct({'a': 1, 'b': 2}, NULL::STRUCT(x INTEGER, y INTEGER), "
        "{'x': 'a', 'y': 'b'}, NULL)"
    ),
    ("cast_to_type", "scalar"): "SELECT cast_to_type('3', NULL::INTEGER)",
    ("replace_type", "scalar"): "SELECT replace_type({'a': 1}, NULL::INTEGER, NULL::BIGINT)",
    ("can_cast_implicitly", "scalar"): "SELECT can_cast_implicitly(1::INTEGER, NULL::BIGINT)",
    ("equi_width_bins", "scalar"): "SELECT equi_width_bins(0, 10, 2, true)",
    ("struct_extract", "scalar"): "SELECT struct_extract({'a': 1, 'b': 'x'}, 'a')",
    ("struct_extract_at", "scalar"): "SELECT struct_extract_at({'a': 1, 'b': 'x'}, 1)",
    ("union_extract", "scalar"): "SELECT union_extract(union_value(k := 1), 'k')",
    ("union_tag", "scalar"): "SELECT union_tag(union_value(k := 1))",
    ("getvariable", "scalar"): "SELECT getvariable('x')",
    ("current_setting", "scalar"): "SELECT current_setting('threads')",
    ("error", "scalar"): "SELECT error('boom')",
    ("sleep_ms", "scalar"): "SELECT sleep_ms(3)",
    ("write_log", "scalar"): (
        "SELECT write_log('hello', level := 'info', scope := 'database', log_type := 'x')"
    ),
    ("stats", "scalar"): "SELECT stats(i) FROM t",
    ("struct_pack", "scalar"): "SELECT struct_pack(a := 1, b := 'x')",
    ("row", "scalar"): "SELECT row(1, 'x')",
    ("union_value", "scalar"): "SELECT union_value(k := 1)",
    ("map", "scalar"): "SELECT map(['k'], [1])",
    ("map_from_entries", "scalar"): "SELECT map_from_entries([{'k': 'k', 'v': 1}])",
    ("map_concat", "scalar"): "SELECT map_concat(MAP {'k': 1}, MAP {'j': 2})",
    ("struct_concat", "scalar"): "SELECT struct_concat({'a': 1}, {'b': 2})",
    ("struct_insert", "scalar"): "SELECT struct_insert({'a': 1}, b := 2)",
    ("struct_update", "scalar"): "SELECT struct_update({'a': 1}, a := 2)",
    ("struct_keys", "scalar"): "SELECT struct_keys({'a': 1, 'b': 'x'})",
    ("json_object", "scalar"): "SELECT json_object('a', 1, 'b', 'x')",
    ("json_array", "scalar"): "SELECT json_array(1, 'x')",
    ("json_serialize_sql", "scalar"): "SELECT json_serialize_sql('SELECT 42')",
    ("json_serialize_plan", "scalar"): "SELECT json_serialize_plan('SELECT 42')",
    ("json_deserialize_sql", "scalar"): (
        "SELECT json_deserialize_sql(json_serialize_sql('SELECT 42'))"
    ),
    ("from_json", "scalar"): f"SELECT from_json({JSON_DOC}, {JSON_SHAPE})",
    ("from_json_strict", "scalar"): f"SELECT from_json_strict({JSON_DOC}, {JSON_SHAPE})",
    ("json_transform", "scalar"): f"SELECT json_transform({JSON_DOC}, {JSON_SHAPE})",
    ("json_transform_strict", "scalar"): (
        f"SELECT json_transform_strict({JSON_DOC}, {JSON_SHAPE})"
    ),
    ("json_contains", "scalar"): f"""SELECT json_contains({JSON_DOC}, '"x"')""",
    ("json_merge_patch", "scalar"): """SELECT json_merge_patch('{"a": 1}', '{"b": 2}')""",
    ("parse_duckdb_log_message", "scalar"): (
        "SELECT parse_duckdb_log_message('QueryLog', 'SELECT 1')"
    ),
    ("enum_range_boundary", "scalar"): (
        f"SELECT enum_range_boundary('sad'::{MOOD}, 'happy'::{MOOD})"
    ),
    ("create_sort_key", "scalar"): "SELECT create_sort_key(3, 'ASC NULLS LAST')",
    ("bar", "scalar"): "SELECT bar(3, 0, 10, 20)",
    ("list_zip", "scalar"): "SELECT list_zip([1, 2], [3, 4])",
    ("array_zip", "scalar"): "SELECT array_zip([1, 2], [3, 4])",
    ("unpivot_list", "scalar"): "SELECT unpivot_list(1, 2)",
    ("list_value", "scalar"): "SELECT list_value(1, 2)",
    ("list_pack", "scalar"): "SELECT list_pack(1, 2)",
    ("array_value", "scalar"): "SELECT array_value(1, 2)",
    ("format", "scalar"): "SELECT format('x={} y={}', 1, 'a')",
    ("printf", "scalar"): "SELECT printf('x=%d y=%s', 1, 'a')",
    ("constant_or_null", "scalar"): "SELECT constant_or_null(1, 2)",
    ("vector_type", "scalar"): "SELECT vector_type(1)",
    ("alias", "scalar"): "SELECT alias(i) FROM t",
    ("in_search_path", "scalar"): "SELECT in_search_path('memory', 'main')",
    ("nextval", "scalar"): "SELECT nextval('seq')",
    ("currval", "scalar"): "SELECT currval('seq')",
    ("setseed", "scalar"): "SELECT setseed(0.5)",
    ("st_geomfromwkb", "scalar"): f"SELECT st_geomfromwkb({WKB_POINT})",
    ("st_setcrs", "scalar"): "SELECT st_setcrs('POINT (1 2)'::GEOMETRY, 'EPSG:4326')",
    ("timetz_byte_comparable", "scalar"): "SELECT timetz_byte_comparable(TIMETZ '03:04:05+00')",
    ("is_histogram_other_bin", "scalar"): "SELECT is_histogram_other_bin(1)",
    ("grade_up", "scalar"): "SELECT grade_up([3, 1, 2])",
    ("list_slice", "scalar"): "SELECT list_slice([1, 2, 3], 1, 2)",
    ("array_slice", "scalar"): "SELECT array_slice([1, 2, 3], 1, 2)",
    ("list_resize", "scalar"): "SELECT list_resize([1, 2, 3], 5, 0)",
    ("array_resize", "scalar"): "SELECT array_resize([1, 2, 3], 5, 0)",
    ("histogram_exact", "aggregate"): "SELECT histogram_exact(i, [0, 1, 2]) FROM t",
    ("approx_top_k", "aggregate"): "SELECT approx_top_k(i, 2) FROM t",
    ("to_base", "scalar"): "SELECT to_base(3, 2)",
    ("strptime", "scalar"): "SELECT strptime('2024-01-02', '%Y-%m-%d')",
    ("try_strptime", "scalar"): "SELECT try_strptime('2024-01-02', '%Y-%m-%d')",
    ("decode", "scalar"): "SELECT decode('abc'::BLOB)",
    ("encode", "scalar"): "SELECT encode('abc')",
    ("->>", "scalar"): f"SELECT {JSON_DOC}::JSON ->> '$.b'",
    ("fill", "aggregate"): "SELECT fill(i) OVER (ORDER BY i) FROM t",
    ("lag", "aggregate"): "SELECT lag(i, 1, 0) OVER () FROM t",
    ("lead", "aggregate"): "SELECT lead(i, 1, 0) OVER () FROM t",
}

# Macro arguments by macro name (duckdb_functions() gives macros no parameter types).
MACRO_ARGS = {
    "ago": "INTERVAL 1 DAY",
    "array_append": "[1, 2], 3",
    "array_pop_back": "[1, 2]",
    "array_pop_front": "[1, 2]",
    "array_prepend": "0, [1, 2]",
    "array_push_back": "[1, 2], 3",
    "array_push_front": "[1, 2], 0",
    "array_reverse": "[1, 2]",
    "array_to_string": "[1, 2], '-'",
    "array_to_string_comma_default": "[1, 2], sep := ','",
    "col_description": "1, 2",
    "current_schemas": "true",
    "date_add": "DATE '2024-01-02', INTERVAL 1 DAY",
    "days_in_month": "DATE '2024-02-02'",
    "fdiv": "7, 2",
    "fmod": "7, 2",
    "format_pg_type": "'INTEGER', 'integer'",
    "format_type": "23, 0",
    "generate_subscripts": "[1, 2], 1",
    "geomean": "i",
    "geometric_mean": "i",
    "get_block_size": "'memory'",
    "json": """'{"a": 1}'""",
    "json_group_array": "i",
    "json_group_object": "CAST(i AS VARCHAR), i",
    "json_group_structure": """'{"a": 1}'""",
    "map_contains_entry": "MAP {'k': 1}, 'k', 1",
    "map_contains_value": "MAP {'k': 1}, 1",
    "map_to_pg_oid": "'int'",
    "md5_number_lower": "'abc'",
    "md5_number_upper": "'abc'",
    "nullif": "1, 2",
    "obj_description": "1, 'pg_class'",
    "pg_get_constraintdef": "1",
    "pg_get_expr": "'x', 1",
    "pg_get_viewdef": "1",
    "pg_is_other_temp_schema": "1",
    "pg_size_pretty": "1024",
    "pg_sleep": "0.003",
    "pg_typeof": "1",
    "regexp_split_to_table": "'a,b', ','",
    "round_even": "2.5, 0",
    "roundbankers": "2.5, 0",
    "shobj_description": "1, 'pg_class'",
    "split_part": "'a,b', ',', 1",
    "wavg": "i, i",
    "weighted_avg": "i, i",
    "list_bool_and": "[true, false]",
    "list_bool_or": "[true, false]",
}
# Macro arguments by parameter name, for the macros not in MACRO_ARGS.
MACRO_PARAMS = {
    "l": "[1, 2, 3]",
    "arr": "[1, 2, 3]",
    "e": "4",
    "el": "4",
    "x": "1.5",
    "n": "1",
    "date": "DATE '2024-01-02'",
    "i": "INTERVAL 1 DAY",
}
# Macros that aggregate, so they read t.
AGGREGATE_MACROS = frozenset(
    {"geomean", "geometric_mean", "json_group_array", "json_group_object", "wavg", "weighted_avg"}
)
COLUMNS = frozenset({"i", "s", "d", "ts"})
# Pragmas whose single argument must name something.
PRAGMA_ARGS = {
    "table_info": ["'t'"],
    "storage_info": ["'t'"],
    "show": ["'t'"],
    "import_database": ["'nodir'"],
    "copy_database": ["'memory'", "'other'"],
    "json_execute_serialized_sql": ["json_serialize_sql('SELECT 42')"],
    "add_parquet_key": ["'k'", "'0123456789112345'"],
}


@dataclass(frozen=True)
class FunctionCall:
    name: str
    function_type: str
    sql: str

    @property
    def position(self) -> str:
        """Where the call puts the function: ``table`` (FROM clause), ``pragma`` (a PRAGMA
        statement) or ``expression``."""
        if self.function_type in ("table", "table_macro"):
            return "table"
        if self.function_type == "pragma":
            return "pragma"
        return "expression"


def function_calls(con: duckdb.DuckDBPyConnection) -> list[FunctionCall]:
    """One call per distinct (function_name, function_type) that ``con`` lists."""
    columns = [
        "function_name",
        "function_type",
        "schema_name",
        "parameters",
        "parameter_types",
        "varargs",
    ]
    rows = con.execute(
        f"SELECT {', '.join(columns)} FROM duckdb_functions() "
        "ORDER BY function_type, function_name, function_oid"
    ).fetchall()
    calls: dict[tuple[str, str], FunctionCall] = {}
    for values in rows:
        row = dict(zip(columns, values, strict=True))
        key = (row["function_name"], row["function_type"])
        if key not in calls:
            calls[key] = FunctionCall(key[0], key[1], _sql(row))
    return list(calls.values())


def _sql(row: dict[str, Any]) -> str:
    name: str = row["function_name"]
    kind: str = row["function_type"]
    if (name, kind) in WHOLE_CALLS:
        return WHOLE_CALLS[(name, kind)]
    params: list[str] = row["parameters"] or []
    types: list[str | None] = row["parameter_types"] or []
    qualified = f"pg_catalog.{name}" if row["schema_name"] == "pg_catalog" else name
    if kind in ("macro", "table_macro"):
        args = MACRO_ARGS.get(name) or ", ".join(MACRO_PARAMS.get(p, "1") for p in params)
        if kind == "table_macro":
            return f"SELECT * FROM {qualified}({args}) LIMIT 5"
        reads_t = name in AGGREGATE_MACROS or bool(COLUMNS & set(args.split(", ")))
        return f"SELECT {qualified}({args})" + (" FROM t" if reads_t else "")
    if kind == "pragma":
        positional = [
            _literal(types[n] if n < len(types) else None, p, name, "table", n)
            for n, p in enumerate(params)
            if re.fullmatch(r"col\d+", p)
        ]
        positional = PRAGMA_ARGS.get(name, positional)
        arguments = f"({', '.join(positional)})" if positional else ""
        return f'PRAGMA "{name}"{arguments}'  # quoted: "show" is a keyword
    if kind == "table":
        positional = [
            _literal(types[n], p, name, kind, n)
            for n, p in enumerate(params)
            if re.fullmatch(r"col\d+", p)
        ]
        return f"SELECT * FROM {name}({', '.join(positional)}) LIMIT 5"
    args = [
        _literal(types[n] if n < len(types) else None, p, name, kind, n)
        for n, p in enumerate(params)
    ]
    if row["varargs"]:
        args.append(_literal(row["varargs"], "vararg", name, kind, len(args)))
    if name in WINDOW_FUNCTIONS:
        return f"SELECT {qualified}({', '.join(args)}) OVER () FROM t"
    if kind == "aggregate":
        return f"SELECT {qualified}({', '.join(args)}) FROM t"
    if not (name[0].isalpha() or name[0] == "_"):
        qualified = f'"{name}"'  # an operator, called as a function: "+"(1, 2)
    reads_t = any(arg in COLUMNS or "EXPORT_STATE" in arg for arg in args)
    return f"SELECT {qualified}({', '.join(args)})" + (" FROM t" if reads_t else "")


def _literal(dtype: str | None, param: str, name: str, kind: str, index: int) -> str:
    """A value of DuckDB type ``dtype`` for parameter ``param`` of function ``name``."""
    param = param.strip("'").lower()
    if dtype is None:
        return "1"
    if dtype in INTEGER_TYPES:
        if name in ("nth_value", "ntile", "list_extract", "list_element", "element_at"):
            return f"CAST(1 AS {dtype})"
        if name == "to_base" and index == 1:
            return f"CAST(2 AS {dtype})"
        return f"CAST(3 AS {dtype})"
    if dtype in ("DOUBLE", "FLOAT"):
        if name in ("make_time", "make_timestamp", "make_timestamptz") or param == "seconds":
            return f"CAST(5.5 AS {dtype})"
        return f"CAST(0.5 AS {dtype})"
    if dtype in ("DOUBLE[]", "FLOAT[]"):
        if "quantile" in name:
            return f"CAST([0.25, 0.5, 0.75] AS {dtype})"
        return f"CAST([1, 2, 3] AS {dtype})"
    if dtype == "BLOB":
        return WKB_POINT if param == "wkb" else "'abc'::BLOB"
    if dtype == "JSON":
        return f"{JSON_DOC}::JSON" if index == 0 else "'[1, 2]'::JSON"
    if dtype in TYPED_LITERALS:
        return TYPED_LITERALS[dtype]
    if dtype in ("T[]", "ANY[]"):
        if name.endswith("sort") and name.startswith(("list_", "array_")):
            return "[3, 1, 2]"
        return "[1, 2, 3]"
    if dtype == "LAMBDA":
        if param == "lambda(x,y)":
            return "lambda x, y: x + y"
        return "lambda x: x > 1" if "filter" in name else "lambda x: x + 1"
    if dtype == "VARCHAR[]":
        return _string_list(param, name, kind)
    if dtype == "VARCHAR":
        return _string(param, name, kind, index)
    if dtype in ("ANY", "T"):
        return _value(param, name)
    return "1"


def _string_list(param: str, name: str, kind: str) -> str:
    if param == "ts":
        return "['year', 'month']"
    if param in ("format", "format-list"):
        return "['%Y-%m-%d']"
    if param in ("group", "name_list"):
        return "['g']"
    if name.startswith("json") or name == "->>":
        return "['$.a', '$.b']"
    return "['none.csv']" if kind == "table" else "['a', 'b']"


def _string(param: str, name: str, kind: str, index: int) -> str:
    if kind == "table":
        if name in ("checkpoint", "force_checkpoint", "pragma_metadata_info"):
            return "'memory'"
        if name.startswith(("read_", "parquet_", "sniff_csv")):
            return "'none.csv'"
        if name in ("json_each", "json_tree"):
            return JSON_DOC if index == 0 else "'$.a'"
        return "'t'"
    if name.startswith("json") or name in ("from_json", "from_json_strict", "->>"):
        return JSON_DOC if index == 0 else "'$.a'"
    if name in ("~~", "!~~", "~~*", "!~~*", "~~~") and index == 1:
        return "'a%'"
    if name.startswith(("icu_collate", "__internal_compress_string")):
        return "'ab'"
    if name == "icu_sort_key" and index == 1:
        return "'en'"
    if name.endswith(("sort", "grade_up")):
        return "'ASC'" if index == 1 else "'NULLS FIRST'"
    if name == "regexp_full_match" and index == 2:
        return "'i'"
    if name == "variant_extract":
        return "'a'"
    if name == "timezone":
        return "'UTC'"
    if name == "strftime":
        return "'%Y-%m-%d'"
    if name in ("from_binary", "unbin"):
        return "'0101'"
    if name in ("from_hex", "unhex"):
        return "'6162'"
    if name == "from_base64":
        return "'YWJj'"
    if param == "separator":
        return "'/'" if name.startswith("parse_") else "','"
    return NAMED_STRINGS.get(param, "'abc'")


def _value(param: str, name: str) -> str:
    if name in WINDOW_FUNCTIONS:
        return "i"
    if param.startswith("size"):
        return "5"
    if param.startswith("value]"):
        return "0"
    if param in NAMED_VALUES:
        return NAMED_VALUES[param]
    if param == "x" and name in ("quantile", "quantile_disc", "median", "mode", "entropy"):
        return "i"
    if param in ("arg", "val", "any", "expression", "x"):
        return "1" if name in ("typeof", "get_type", "hash", "concat") else "i"
    return "1"
