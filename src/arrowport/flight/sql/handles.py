"""Opaque handles for server-side state (prepared statements, transactions, query answers),
and the bounded table that holds that state.

A handle is 16 random bytes plus a 16-byte tag (HMAC with a key of this process), so the server
can tell a handle it issued and has since dropped (closed, expired) from one it never issued,
without remembering the dropped ones. Each entry belongs to the token that made it: another
token gets NOT_FOUND, as if it did not exist.

A :class:`Registry` holds at most ``capacity`` entries and ``max_bytes`` of their declared size
(503 ``overloaded`` beyond, after dropping expired ones) and drops an entry ``idle_seconds``
after its last use (``sweep``, called periodically), closing it.

Example::

    statements = Registry("prepared statement", "s", capacity=1024, idle_seconds=600,
                          close=lambda s: None)
    handle = statements.add("alice", statement, size=len(sql))
    statements.get(handle, "alice")      # the statement, its idle clock restarted
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from arrowport.errors import Overloaded, UnknownHandle

log = structlog.get_logger(__name__)

_KEY = secrets.token_bytes(32)
_NONCE = 16
_TAG = 16

T = TypeVar("T")


def issue(kind: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + _tag(kind, nonce)


def issued(kind: str, handle: bytes) -> bool:
    """Whether this process issued ``handle`` for ``kind`` (held now or not)."""
    if len(handle) != _NONCE + _TAG:
        return False
    return hmac.compare_digest(handle[_NONCE:], _tag(kind, handle[:_NONCE]))


def _tag(kind: str, nonce: bytes) -> bytes:
    return hmac.new(_KEY, kind.encode() + nonce, hashlib.sha256).digest()[:_TAG]


@dataclass
class _Entry(Generic[T]):
    owner: str
    item: T
    size: int
    used: float


class Registry(Generic[T]):
    def __init__(
        self,
        what: str,
        kind: str,
        capacity: int,
        idle_seconds: float,
        close: Callable[[T], None],
        max_bytes: int | None = None,
        busy: Callable[[T], bool] = lambda item: False,
        evict: bool = False,
        sooner: str = "",
    ) -> None:
        self.what = what
        self.kind = kind
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.max_bytes = max_bytes
        self._close = close
        self._busy = busy
        self._evict = evict
        self._sooner = sooner  # when an entry may be dropped before idle_seconds, in words
        self._entries: dict[bytes, _Entry[T]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, owner: str, item: T, size: int = 0) -> bytes:
        """Hold ``item`` for ``owner``; its new handle. When the table is full, the least
        recently used entry that is not busy is dropped (``evict``), or 503 ``overloaded``."""
        self.sweep()
        handle = issue(self.kind)
        evicted: list[T] = []
        with self._lock:
            while self._evict and self._full(size) and self._drop_oldest(evicted):
                pass
            full = self._full(size)
            if not full:
                self._entries[handle] = _Entry(owner, item, size, time.monotonic())
                self._bytes += size
        for old in evicted:
            self._close(old)
        if full:
            self._close(item)
            raise self._overloaded()
        return handle

    def resize(self, handle: bytes, owner: str, size: int) -> None:
        """Declare a new size for an entry (503 ``overloaded`` if it no longer fits)."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None or entry.owner != owner:
                raise self.unknown(handle)
            if self.max_bytes is not None and self._bytes - entry.size + size > self.max_bytes:
                raise self._overloaded()
            self._bytes += size - entry.size
            entry.size = size

    def _full(self, size: int) -> bool:
        if len(self._entries) >= self.capacity:
            return True
        return self.max_bytes is not None and self._bytes + size > self.max_bytes

    def _drop_oldest(self, dropped: list[T]) -> bool:
        idle = [(e.used, h) for h, e in self._entries.items() if not self._busy(e.item)]
        if not idle:
            return False
        entry = self._entries.pop(min(idle)[1])
        self._bytes -= entry.size
        dropped.append(entry.item)
        return True

    def _overloaded(self) -> Overloaded:
        return Overloaded(
            f"too many open {self.what}s on this server: close some, or retry shortly"
        )

    def get(self, handle: bytes, owner: str) -> T:
        """The item behind ``handle`` (404 ``unknown_handle``); its idle clock restarts."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is not None and entry.owner == owner:
                entry.used = time.monotonic()
                return entry.item
        raise self.unknown(handle)

    def holds(self, handle: bytes, owner: str) -> bool:
        with self._lock:
            entry = self._entries.get(handle)
            return entry is not None and entry.owner == owner

    def pop(self, handle: bytes, owner: str) -> T | None:
        """Remove and return the item behind ``handle`` (None: not held for ``owner``)."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None or entry.owner != owner:
                return None
            del self._entries[handle]
            self._bytes -= entry.size
            return entry.item

    def unknown(self, handle: bytes) -> UnknownHandle:
        if issued(self.kind, handle):
            return UnknownHandle(
                f"this {self.what} is no longer open: it was closed, or dropped after "
                f"{self.idle_seconds:g} s unused{self._sooner}"
            )
        return UnknownHandle(f"unknown {self.what} handle")

    def sweep(self, now: float | None = None) -> None:
        """Drop and close the entries unused for ``idle_seconds`` (and not busy)."""
        self.drop_idle(self.idle_seconds, lambda item: True, now)

    def drop_idle(
        self, idle_seconds: float, which: Callable[[T], bool], now: float | None = None
    ) -> int:
        """Drop and close the entries ``which`` picks that have been unused for
        ``idle_seconds`` (and are not busy); how many were dropped."""
        now = time.monotonic() if now is None else now
        expired: list[T] = []
        with self._lock:
            for handle, entry in list(self._entries.items()):
                if (
                    now - entry.used >= idle_seconds
                    and not self._busy(entry.item)
                    and which(entry.item)
                ):
                    del self._entries[handle]
                    self._bytes -= entry.size
                    expired.append(entry.item)
        for item in expired:
            try:
                self._close(item)
            except Exception:  # the others are still closed
                log.exception("closing a dropped entry failed", what=self.what)
        return len(expired)

    def items(self) -> list[T]:
        with self._lock:
            return [entry.item for entry in self._entries.values()]

    def close(self) -> None:
        """Drop and close every entry (the server is stopping)."""
        with self._lock:
            items = [entry.item for entry in self._entries.values()]
            self._entries.clear()
            self._bytes = 0
        for item in items:
            self._close(item)
