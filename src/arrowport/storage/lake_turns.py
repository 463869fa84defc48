"""Turns a lake node takes so that a write that creates, replaces or alters a table (a
*reshaping* write) neither kills the process nor starves.

DuckLake 1.5.5 (the extension built for DuckDB 1.5.5) keeps each schema version it reads in
DuckDB's object cache, and holds on to it only for the statement that read it. A table that a
transaction creates (or replaces, or alters) points into that cached entry until the commit.
If the entry leaves the cache meanwhile, the commit reads freed memory and the whole process
dies (SIGSEGV in ``DuckLakeTransaction::GetTransactionChanges``; plain DuckDB reproduces it in
seconds). It leaves in two ways: two connections read a version the cache does not hold at
once (the second one's copy replaces the first), or maintenance drops cached versions
(flushing inlined data, expiring snapshots). duckdb/ducklake#1255 holds the entry for the whole
transaction; until the DuckDB this server is pinned to carries it, a lake node takes turns:

- *loads*: a reshaping write reads its schema version first :meth:`~Turns.alone`, while every
  other statement that may be the first of its transaction to read one (a connection's
  ``USE``, a transaction's first statement, an autocommit statement) holds a shared turn. Its
  version is then cached with its own copy, and the statements after it find that one;
- *drops*: a reshaping write holds a shared turn throughout, and maintenance that drops cached
  versions waits for it (and holds new ones back) alone.

A commit DuckLake retries reads the latest version again, so commits hold a shared turn at
loads too. Not covered: a statement later in a transaction that finds its version dropped by
maintenance and reads it again, time travel (``AT (VERSION => n)``), and the cache evicting a
version under memory pressure.

And a third set, for fairness: a reshaping commit writes more catalog rows than an append's
and loses the race for the next snapshot id to a steady stream of appends (DuckLake retries it
ten times, then fails it); *commits*: it commits alone among the node's write commits.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Turns:
    """A readers-writer lock whose writer is served before readers that come after it (a
    stream of reads cannot hold a replace off), except while a long shared turn is held (then
    they would queue behind the waiting writer for as long). A thread may nest shared turns, and
    take them inside its own exclusive one; it may not take an exclusive turn inside a shared
    one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._sharing = 0
        self._sharing_long = 0
        self._alone: int | None = None  # the thread holding the exclusive turn
        self._waiting_alone = 0
        self._held = threading.local()

    @contextlib.contextmanager
    def shared(self, long: bool = False) -> Iterator[None]:
        """A shared turn; ``long``: held across work of unknown length (maintenance). Only the
        thread's outermost turn counts."""
        if self._depth() or self._alone == threading.get_ident():
            self._held.depth = self._depth() + 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with self._changed:
            while self._alone is not None or (self._waiting_alone and not self._sharing_long):
                self._changed.wait()
            self._sharing += 1
            self._sharing_long += long
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._changed:
                self._sharing -= 1
                self._sharing_long -= long
                if not self._sharing:
                    self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        if self._depth() or self._alone == threading.get_ident():
            raise RuntimeError("a thread holding a turn cannot wait for every other one to end")
        with self._changed:
            self._waiting_alone += 1
            try:
                while self._alone is not None or self._sharing:
                    self._changed.wait()
            finally:
                self._waiting_alone -= 1
                self._changed.notify_all()  # readers held back for it (it may have given up)
            self._alone = threading.get_ident()
        try:
            yield
        finally:
            with self._changed:
                self._alone = None
                self._changed.notify_all()

    def _depth(self) -> int:
        return getattr(self._held, "depth", 0)
