"""Flight SQL transactions: one consistent snapshot for every query a client runs in one.

``BeginTransaction`` only records the transaction; its snapshot (a ``READ ONLY`` DuckDB
transaction, :class:`~arrowport.storage.snapshot.Snapshot`) is taken by its first query, so a
client that only ingests (the Python DB-API connection begins one as soon as it connects) holds
nothing in the database. ``EndTransaction`` (commit or rollback: nothing in it was written) gives
the snapshot back; ending one the server does not hold (ended, forgotten, or begun before the
server restarted) is a no-op, so a client can end it and begin another. Bulk ingestion never joins a
transaction: each put commits on its own.

Bounds, so idle or forgotten clients cannot pile up state:

* at most :data:`MAX_SNAPSHOTS` snapshots are open; taking another gives up an idle one of a
  client that holds at least as many as the taker will (see :meth:`Transactions._make_room`),
  so that one client opening many never takes the fewer another holds (it is refused instead,
  overloaded); and a snapshot unused for :data:`SNAPSHOT_IDLE_SECONDS` is given up too. A
  transaction whose snapshot was given up (or whose query failed, which aborts it) refuses further
  queries with FAILED_PRECONDITION ``transaction_aborted`` until the client ends it;
* at most :data:`TRANSACTION_CAPACITY` transactions are recorded, of which one client (a token;
  anonymous clients are one) holds at most ``flight.max_transactions_per_client``. A client at
  its bound that begins another gives up its own least recently used one that holds no snapshot
  (the ADBC driver's connections, in their default mode, begin one as they connect and never end
  it: closing sends only ``CloseSession``); with none such, and beyond the server's bound,
  ``BeginTransaction`` is refused (nobody's transaction is forgotten to make room for another
  client's: one client cannot end another's; the refusal's retry hint is when its longest idle
  snapshot will be given up, after which that transaction is given up for a new one). Each is
  forgotten after :data:`TRANSACTION_IDLE_SECONDS` unused.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pyarrow as pa

from arrowport.errors import Overloaded, TransactionAborted
from arrowport.flight.sql.handles import Quota, Registry
from arrowport.storage.metadata import QueryShape
from arrowport.storage.query import Parameters
from arrowport.storage.query_stop import QueryStop
from arrowport.storage.snapshot import Rows, Snapshot

MAX_SNAPSHOTS = 32
SNAPSHOT_IDLE_SECONDS = 300.0
TRANSACTION_CAPACITY = 4096
TRANSACTION_IDLE_SECONDS = 24 * 3600.0
KIND = "transaction"


class Transaction:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.snapshot: Snapshot | None = None
        self.given_up: str | None = None
        # No longer held (ended, forgotten, given up for its client's newer one): a query that
        # got it before and waited for its turn meanwhile must not open a snapshot for it.
        self.ended = False
        self.used = time.monotonic()
        # Queries that took the snapshot and have not given it back: counted from the moment
        # they take it (under the lock), before the snapshot itself knows of them.
        self.readers = 0

    @property
    def busy(self) -> bool:
        return self.readers > 0 or (self.snapshot is not None and self.snapshot.busy)

    def end(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()
            self.snapshot = None


class Transactions:
    def __init__(
        self, open_snapshot: Callable[[], Snapshot], per_client: int, sweep_seconds: float = 0.0
    ) -> None:
        """``sweep_seconds``: how often :meth:`sweep` runs (an idle snapshot is given up at
        most that long after it is due)."""
        self._open = open_snapshot
        self._lock = threading.Lock()
        self._sweep_seconds = sweep_seconds
        quota = Quota(
            per_client,
            "flight.max_transactions_per_client",
            "each holds a snapshot or runs a query: end one (commit or roll back) to begin another",
        )
        self._held = Registry[Transaction](
            "transaction",
            KIND,
            TRANSACTION_CAPACITY,
            TRANSACTION_IDLE_SECONDS,
            close=self._ended,
            busy=lambda txn: txn.busy,
            sooner=", or given up for a newer one of its client's at "
            "flight.max_transactions_per_client",
            quota=quota,
            recycle=lambda txn: txn.snapshot is None,
            room_in=self._room_in,
        )

    def _room_in(self, held: list[Transaction]) -> tuple[int, str]:
        """When a client whose every transaction holds a snapshot or runs a query gets room
        with nothing ended: once the sweep gives up the snapshot idle the longest (one running a
        query is idle from its end, at the soonest now)."""
        now = time.monotonic()
        idle = max((now - txn.used for txn in held if not txn.busy), default=0.0)
        due = max(SNAPSHOT_IDLE_SECONDS - idle, 0.0) + self._sweep_seconds
        later = (
            "or retry once the snapshot of one left idle is given up, "
            f"{SNAPSHOT_IDLE_SECONDS:g} s after its last query"
        )
        return max(math.ceil(due), 1), later

    def begin(self, owner: str) -> bytes:
        return self._held.add(owner, Transaction(owner))

    def get(self, handle: bytes, owner: str) -> Transaction:
        return self._held.get(handle, owner)

    def held(self, handle: bytes, owner: str) -> bool:
        """Whether the transaction is still recorded (not ended, not forgotten)."""
        return self._held.holds(handle, owner)

    def end(self, handle: bytes, owner: str) -> None:
        """Give the transaction's snapshot back; a no-op when it is not held (404 only for a
        handle of no shape this server issues)."""
        txn = self._held.release(handle, owner)
        if txn is not None:
            self._ended(txn)

    @contextlib.contextmanager
    def query(
        self, txn: Transaction, sql: str, params: Parameters, stop: QueryStop | None = None
    ) -> Iterator[Rows]:
        """Run ``sql`` in ``txn``'s snapshot (taken now if it is its first query); ``stop``
        ends it from another thread."""
        with self._reading(txn) as snapshot, snapshot.query(sql, params, stop) as rows:
            yield rows

    def describe(self, txn: Transaction, sql: str) -> QueryShape:
        """What ``sql`` takes and returns, as ``txn``'s snapshot plans it (a prepared statement
        of the transaction)."""
        with self._reading(txn) as snapshot:
            return snapshot.describe(sql)

    def schema(
        self, txn: Transaction, sql: str, params: Parameters, stop: QueryStop | None = None
    ) -> pa.Schema | None:
        """``sql``'s result schema as ``txn``'s snapshot plans it."""
        with self._reading(txn) as snapshot:
            return snapshot.schema(sql, params, stop)

    @contextlib.contextmanager
    def _reading(self, txn: Transaction) -> Iterator[Snapshot]:
        snapshot = self._snapshot(txn)
        try:
            yield snapshot
        finally:
            with self._lock:
                txn.readers -= 1
        txn.used = time.monotonic()

    def _ended(self, txn: Transaction) -> None:
        """``txn`` is no longer held: its snapshot is given back, and none is taken for it
        again (under the lock :meth:`_snapshot` takes one under)."""
        with self._lock:
            txn.ended = True
        txn.end()

    def _snapshot(self, txn: Transaction) -> Snapshot:
        with self._lock:
            txn.used = time.monotonic()
            if txn.ended:
                raise TransactionAborted(
                    "the transaction ended while this query waited for its turn (it was ended, "
                    "or given up for a newer one of its client's at "
                    "flight.max_transactions_per_client): begin another"
                )
            if txn.given_up is not None:
                raise TransactionAborted(
                    f"the transaction's snapshot was given up ({txn.given_up}): roll it back "
                    "(or commit) to start a new one"
                )
            if txn.snapshot is None:
                self._make_room(txn)
                txn.snapshot = self._open()
            txn.readers += 1
            return txn.snapshot

    def _make_room(self, txn: Transaction) -> None:
        """With every snapshot taken, give up an idle one of a client that holds at least as
        many as ``txn``'s will with its new one: of the one holding the most, ``txn``'s own
        first among equals, its least recently used. None such: overloaded."""
        open_ = [t for t in self._held.items() if t.snapshot is not None]
        if len(open_) < MAX_SNAPSHOTS:
            return
        holding = Counter(t.owner for t in open_)
        holding[txn.owner] += 1  # the one it is taking
        fair = [t for t in open_ if not t.busy and holding[t.owner] >= holding[txn.owner]]
        if not fair:
            raise Overloaded(
                "too many transactions are reading at once, and none that this client may take "
                "a snapshot from is idle; retry shortly"
            )
        chosen = min(fair, key=lambda t: (-holding[t.owner], t.owner != txn.owner, t.used))
        self._give_up(chosen, f"{MAX_SNAPSHOTS} transactions were open")

    def _give_up(self, txn: Transaction, why: str) -> None:
        txn.given_up = why
        txn.end()

    def sweep(self) -> None:
        """Give up the snapshots unused for ``SNAPSHOT_IDLE_SECONDS``; forget old records."""
        self._held.sweep()
        now = time.monotonic()
        with self._lock:
            for txn in self._held.items():
                idle = now - txn.used >= SNAPSHOT_IDLE_SECONDS
                if txn.snapshot is not None and idle and not txn.busy:
                    self._give_up(txn, f"unused for {SNAPSHOT_IDLE_SECONDS:g} s")

    def close(self) -> None:
        self._held.close()
