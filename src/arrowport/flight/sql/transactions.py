"""Flight SQL transactions: one consistent snapshot for every query a client runs in one.

``BeginTransaction`` only records the transaction; its snapshot (a ``READ ONLY`` DuckDB
transaction, :class:`~arrowport.storage.snapshot.Snapshot`) is taken by its first query, so a
client that only ingests (the Python DB-API connection begins one as soon as it connects) holds
nothing in the database. ``EndTransaction`` (commit or rollback: nothing in it was written) gives
the snapshot back; ending one the server no longer holds is a no-op. Bulk ingestion never joins a
transaction: each put commits on its own.

Bounds, so idle or forgotten clients cannot pile up state:

* at most :data:`MAX_SNAPSHOTS` snapshots are open; taking another gives up an idle one of the
  client holding the most (counting the one being taken: its own, if that is the taker), its
  least recently used, so that one client opening many never takes the few another holds; and
  a snapshot unused for :data:`SNAPSHOT_IDLE_SECONDS` is given up too. A
  transaction whose snapshot was given up (or whose query failed, which aborts it) refuses further
  queries with FAILED_PRECONDITION ``transaction_aborted`` until the client ends it;
* at most :data:`TRANSACTION_CAPACITY` transactions are recorded, of which one client (a token;
  anonymous clients are one) holds at most ``flight.max_transactions_per_client``; beyond either,
  ``BeginTransaction`` is refused (nobody's transaction is forgotten to make room: one client
  cannot end another's). Each is forgotten after :data:`TRANSACTION_IDLE_SECONDS` unused.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

from arrowport.errors import Overloaded, TransactionAborted
from arrowport.flight.sql.handles import Quota, Registry, issued
from arrowport.storage.query import Parameters
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
        self.used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self.snapshot is not None and self.snapshot.busy

    def end(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()
            self.snapshot = None


class Transactions:
    def __init__(self, open_snapshot: Callable[[], Snapshot], per_client: int) -> None:
        self._open = open_snapshot
        self._lock = threading.Lock()
        quota = Quota(
            per_client,
            "flight.max_transactions_per_client",
            "end one (commit or roll back, or close its connection) before beginning another; "
            f"one left open is forgotten after {TRANSACTION_IDLE_SECONDS:g} s unused",
        )
        self._held = Registry[Transaction](
            "transaction",
            KIND,
            TRANSACTION_CAPACITY,
            TRANSACTION_IDLE_SECONDS,
            close=Transaction.end,
            busy=lambda txn: txn.busy,
            quota=quota,
        )

    def begin(self, owner: str) -> bytes:
        return self._held.add(owner, Transaction(owner))

    def get(self, handle: bytes, owner: str) -> Transaction:
        return self._held.get(handle, owner)

    def held(self, handle: bytes, owner: str) -> bool:
        """Whether the transaction is still recorded (not ended, not forgotten)."""
        return self._held.holds(handle, owner)

    def end(self, handle: bytes, owner: str) -> None:
        """Give the transaction's snapshot back (404 only for a handle never issued)."""
        txn = self._held.pop(handle, owner)
        if txn is not None:
            txn.end()
        elif not issued(KIND, handle):
            raise self._held.unknown(handle)

    @contextlib.contextmanager
    def query(self, txn: Transaction, sql: str, params: Parameters) -> Iterator[Rows]:
        """Run ``sql`` in ``txn``'s snapshot (taken now if it is its first query)."""
        snapshot = self._snapshot(txn)
        with snapshot.query(sql, params) as rows:
            yield rows
        txn.used = time.monotonic()

    def _snapshot(self, txn: Transaction) -> Snapshot:
        with self._lock:
            txn.used = time.monotonic()
            if txn.given_up is not None:
                raise TransactionAborted(
                    f"the transaction's snapshot was given up ({txn.given_up}): roll it back "
                    "(or commit) to start a new one"
                )
            if txn.snapshot is not None:
                return txn.snapshot
            open_ = [t for t in self._held.items() if t.snapshot is not None]
            if len(open_) >= MAX_SNAPSHOTS:
                idle = [t for t in open_ if not t.busy]
                if not idle:
                    raise Overloaded("too many transactions are reading at once; retry shortly")
                holding = Counter(t.owner for t in open_)
                holding[txn.owner] += 1  # the one it is taking
                chosen = min(idle, key=lambda t: (-holding[t.owner], t.used))
                self._give_up(chosen, f"{MAX_SNAPSHOTS} transactions were open")
            txn.snapshot = self._open()
            return txn.snapshot

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
