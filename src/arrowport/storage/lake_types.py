"""The column types a DuckLake cannot hold (DuckLake 1.0 with DuckDB 1.5.5), refused with a
422 naming the columns before anything is written."""

from __future__ import annotations

import re

import pyarrow as pa

from arrowport.errors import UnsupportedType
from arrowport.storage.schema import arrow_columns

# DuckDB type names a DuckLake table cannot hold.
_UNSUPPORTED = re.compile(r"\b(ENUM|UNION|BIT|BIGNUM|VARINT|TIME_NS)\b|\[\d+\]")
# Field names inside a type (STRUCT("UNION" INTEGER)) are quoted: not types.
_QUOTED = re.compile(r'"(?:[^"]|"")*"')


def check_lake_types(schema: pa.Schema) -> None:
    refused = [
        f"column {column.name!r} ({column.type})"
        for column in arrow_columns(schema)
        if _UNSUPPORTED.search(_QUOTED.sub("", column.type))
    ]
    if refused:
        raise UnsupportedType(
            "a DuckLake cannot store the type of " + ", ".join(refused) + " (ENUM, UNION, "
            "fixed-size lists, BIT, BIGNUM and TIME_NS are not DuckLake types): cast them "
            "(e.g. to VARCHAR, a list, TIME) before sending",
            columns=[c.split("'")[1] for c in refused],
        )
