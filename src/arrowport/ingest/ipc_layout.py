"""The field nodes and buffers a record batch must carry, as its stream's schema implies them.

A record batch message lists its field nodes (one per field of the schema, nested ones included,
depth first) and its buffers (each field's, in the same order), but says nothing of which buffer
belongs to which field: pyarrow's reader takes, field by field, as many as the field's type has,
and ignores any left over. A batch written for another schema (a string column's validity, offsets
and data where the schema has an int64 column's validity and data) is then decoded as garbage
that passes every later check: the int64 column reads the string's offsets. So each batch must
carry exactly the nodes and buffers its schema implies, counted once per schema here
(:func:`schema_layout`, when the schema message is read) and compared per batch
(:meth:`BatchLayout.check`), a dictionary batch against its dictionary's value type.

Buffers per type, as Arrow's columnar format lists them and as Arrow's IPC writer writes them
(``tests/test_ipc_layout.py`` checks this table against pyarrow for every type):

* null, run-end encoded: none (a run-end encoded field's children carry its buffers);
* struct, fixed-size list: 1 (validity);
* sparse union: 1 (type ids), dense union: 2 (type ids, offsets); a message of metadata version
  V4 writes a validity buffer before them, V5 does not;
* boolean, every fixed-width type, fixed-size binary, list, large list, map: 2;
* binary, string and their large kinds, list view, large list view: 3;
* binary view, string view: 2, and as many data buffers as the batch's
  ``variadicBufferCounts`` gives for the field (one count per view field, in field order);
* a dictionary-encoded field: its indices' 2 (an integer), its values in dictionary batches;
* an extension type: its storage type's (IPC carries only the storage type).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from arrowport.errors import InvalidIPC

if TYPE_CHECKING:
    from arrowport.ingest.ipc_messages import _Table

# The Type union of Schema.fbs: its members' buffer counts (a union's are its mode's, below).
NULL = 1
UNION = 14
RUN_END_ENCODED = 22
BINARY_VIEW = 23
UTF8_VIEW = 24
BUFFERS: dict[int, int] = {
    NULL: 0,
    2: 2,  # Int
    3: 2,  # FloatingPoint
    4: 3,  # Binary
    5: 3,  # Utf8
    6: 2,  # Bool
    7: 2,  # Decimal
    8: 2,  # Date
    9: 2,  # Time
    10: 2,  # Timestamp
    11: 2,  # Interval
    12: 2,  # List
    13: 1,  # Struct_
    UNION: 1,
    15: 2,  # FixedSizeBinary
    16: 1,  # FixedSizeList
    17: 2,  # Map
    18: 2,  # Duration
    19: 3,  # LargeBinary
    20: 3,  # LargeUtf8
    21: 2,  # LargeList
    RUN_END_ENCODED: 0,
    BINARY_VIEW: 2,
    UTF8_VIEW: 2,
    25: 3,  # ListView
    26: 3,  # LargeListView
}
DENSE = 1  # UnionMode (Schema.fbs): Sparse = 0, Dense = 1
V5 = 4  # MetadataVersion (Schema.fbs): V4 = 3, V5 = 4


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """What each batch of one schema (or of one of its dictionaries) must carry."""

    nodes: int
    buffers: int  # besides the view fields' data buffers and V4 unions' validity buffers
    views: int  # binary and string view fields: the counts in variadicBufferCounts
    unions: int  # union fields: one buffer more each in a message of metadata version V4

    def check(self, message: _Table, batch: _Table, buffers: int, what: str) -> None:
        """400 unless the RecordBatch table ``batch`` (with ``buffers`` buffers) of the Message
        table ``message`` carries exactly the field nodes and buffers of this layout."""
        found = batch.vector(1, 16)
        nodes = found[1] if found is not None else 0
        if nodes != self.nodes:
            raise InvalidIPC(
                f"an Arrow IPC {what} has {nodes} field nodes where its fields (nested ones "
                f"included) are {self.nodes}: it was not written for the stream's schema"
            )
        expected = self.buffers
        if self.views:
            counts = batch.longs(4)
            if len(counts) != self.views or min(counts) < 0:
                raise InvalidIPC(
                    f"an Arrow IPC {what} gives variadic buffer counts {list(counts[:8])} where "
                    f"its fields have {self.views} of binary or string view type: it was not "
                    "written for the stream's schema"
                )
            expected += sum(counts)
        if self.unions and message.scalar(0, "<h") < V5:
            expected += self.unions
        if buffers != expected:
            raise InvalidIPC(
                f"an Arrow IPC {what} has {buffers} buffers where its fields take {expected}: "
                "it was not written for the stream's schema"
            )


@dataclass(frozen=True, slots=True)
class SchemaLayout:
    """A schema's fields (nested ones included), and what its batches must carry."""

    columns: int
    batch: BatchLayout
    dictionaries: Mapping[int, BatchLayout]

    def dictionary(self, dictionary_id: int) -> BatchLayout:
        layout = self.dictionaries.get(dictionary_id)
        if layout is None:
            raise InvalidIPC(
                f"an Arrow IPC dictionary batch has id {dictionary_id}, which no field of the "
                "stream's schema is encoded with"
            )
        return layout


def schema_layout(schema: _Table, columns: int) -> SchemaLayout:
    """The layout of the Schema table ``schema`` (its nesting already checked, so recursion over
    it is bounded; ``columns``: its fields, counted)."""
    counts = [0, 0, 0, 0]
    dictionaries: dict[int, BatchLayout] = {}
    for field in schema.tables(1):
        _add_field(field, counts, dictionaries)
    # Shared by every request that sends the same schema (it is remembered): read-only.
    return SchemaLayout(columns, BatchLayout(*counts), MappingProxyType(dictionaries))


def _add_field(field: _Table, counts: list[int], dictionaries: dict[int, BatchLayout]) -> None:
    """Count ``field`` and its children into ``counts`` (nodes, buffers, views, unions); a
    dictionary-encoded one counts its indices there and its values as a dictionary's layout."""
    encoding = field.table(4)
    if encoding is None:
        _add_values(field, counts, dictionaries)
        return
    counts[0] += 1
    counts[1] += BUFFERS[2]  # the indices: an Int
    values = [0, 0, 0, 0]
    _add_values(field, values, dictionaries)
    dictionary_id = encoding.scalar(0, "<q")
    layout = BatchLayout(*values)
    if dictionaries.setdefault(dictionary_id, layout) != layout:
        raise InvalidIPC(
            f"two fields of the Arrow IPC schema share dictionary id {dictionary_id} with "
            "values of different types"
        )


def _add_values(field: _Table, counts: list[int], dictionaries: dict[int, BatchLayout]) -> None:
    type_id = field.scalar(2, "<B")
    buffers = BUFFERS.get(type_id)
    if buffers is None:
        raise InvalidIPC(f"an Arrow IPC schema has a field of unknown type {type_id}")
    if type_id == UNION:
        union = field.table(3)
        if union is not None and union.scalar(0, "<h") == DENSE:
            buffers += 1
        counts[3] += 1
    elif type_id in (BINARY_VIEW, UTF8_VIEW):
        counts[2] += 1
    counts[0] += 1
    counts[1] += buffers
    for child in field.tables(5):
        _add_field(child, counts, dictionaries)
