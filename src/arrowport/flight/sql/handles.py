"""Opaque handles for server-side state (prepared statements, transactions, query answers),
and the bounded table that holds that state.

A handle is 16 random bytes plus a 16-byte tag (HMAC with a key of this process), so the server
can tell a handle it issued and has since dropped (closed, expired) from one it never issued,
without remembering the dropped ones. Each entry belongs to the token that made it: another
token gets NOT_FOUND, as if it did not exist. A handle of an earlier process (the server
restarted) looks never issued: using it is NOT_FOUND, but ending it (:meth:`Registry.release`)
is a no-op, as for any well-formed handle not held, so that a client can end what it held and
begin anew.

A :class:`Registry` holds at most ``capacity`` entries and ``max_bytes`` of their declared size
(503 ``overloaded`` beyond, after dropping expired ones), and, with a :class:`Quota`, at most so
many of them (and bytes) for one owner (RESOURCE_EXHAUSTED ``overloaded`` naming the bound, so
one client cannot take every place); it drops an entry ``idle_seconds`` after its last use
(``sweep``, called periodically), closing it. An entry is never dropped to make room for
another client's: one client cannot take another's state away. Where ``recycle`` allows, an
owner at its quota gives up its own least recently used entry that ``recycle`` picks (and that
is not busy) for its new one; with none such, ``room_in`` may tell when one will be (the
refusal's retry hint, and how, in words).

Example::

    statements = Registry("prepared statement", "s", capacity=1024, idle_seconds=600,
                          close=lambda s: None, quota=Quota(256, "flight.max_..._per_client"))
    handle = statements.add("alice", statement, size=len(sql))
    statements.get(handle, "alice")      # the statement, its idle clock restarted
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from arrowport.errors import ClientQuotaExceeded, Overloaded, UnknownHandle

log = structlog.get_logger(__name__)

_KEY = secrets.token_bytes(32)
_NONCE = 16
_TAG = 16
HANDLE_BYTES = _NONCE + _TAG

T = TypeVar("T")


def issue(kind: str) -> bytes:
    nonce = secrets.token_bytes(_NONCE)
    return nonce + _tag(kind, nonce)


def well_formed(handle: bytes) -> bool:
    """Whether ``handle`` has the shape of the handles this server issues (any process)."""
    return len(handle) == HANDLE_BYTES


def issued(kind: str, handle: bytes) -> bool:
    """Whether this process issued ``handle`` for ``kind`` (held now or not)."""
    if not well_formed(handle):
        return False
    return hmac.compare_digest(handle[_NONCE:], _tag(kind, handle[:_NONCE]))


def _tag(kind: str, nonce: bytes) -> bytes:
    return hmac.new(_KEY, kind.encode() + nonce, hashlib.sha256).digest()[:_TAG]


@dataclass(frozen=True)
class Quota:
    """What one owner (a token; anonymous clients are one) may hold: ``count`` entries (set by
    ``count_name``) and ``max_bytes`` of their size (``bytes_what``: of what, in words);
    ``advice`` tells the client what frees room."""

    count: int
    count_name: str
    advice: str
    max_bytes: int | None = None
    bytes_what: str = ""


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
        sooner: str = "",
        quota: Quota | None = None,
        recycle: Callable[[T], bool] | None = None,
        room_in: Callable[[list[T]], tuple[int, str]] | None = None,
    ) -> None:
        self.what = what
        self.kind = kind
        self.capacity = capacity
        self.idle_seconds = idle_seconds
        self.max_bytes = max_bytes
        self.quota = quota
        self._close = close
        self._busy = busy
        self._recycle = recycle
        # For an owner at its quota with nothing to recycle, given its entries: in how many
        # seconds one will be recyclable with nothing done, and what makes it so, in words.
        self._room_in = room_in
        self._sooner = sooner  # when an entry may be dropped before idle_seconds, in words
        self._entries: dict[bytes, _Entry[T]] = {}
        self._bytes = 0
        self._owned: Counter[str] = Counter()  # entries of each owner
        self._owned_bytes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def owned(self, owner: str) -> int:
        """How many entries ``owner`` holds."""
        with self._lock:
            return self._owned[owner]

    def add(self, owner: str, item: T, size: int = 0) -> bytes:
        """Hold ``item`` for ``owner``; its new handle. Beyond the owner's quota or the table's
        bounds, ``item`` is closed and the add refused."""
        self.sweep()
        handle = issue(self.kind)
        recycled: T | None = None
        with self._lock:
            if self.quota is not None and self._owned[owner] >= self.quota.count:
                recycled = self._take_oldest(owner)
            refusal = self._refusal(owner, 1, size)
            if refusal is None:
                self._put(handle, _Entry(owner, item, size, time.monotonic()))
        if recycled is not None:
            log.info("gave up a client's oldest idle entry at its quota", what=self.what)
            self._closed(recycled)
        if refusal is not None:
            self._close(item)
            raise refusal
        return handle

    def _take_oldest(self, owner: str) -> T | None:
        """Remove ``owner``'s least recently used entry that ``recycle`` picks and that is not
        busy (None: none such, or no ``recycle``)."""
        pick = self._recycle
        if pick is None:
            return None
        oldest = self._least_recently_used(lambda e: e.owner == owner and pick(e.item))[:1]
        return self._remove(oldest[0]).item if oldest else None

    def _least_recently_used(self, which: Callable[[_Entry[T]], bool]) -> list[bytes]:
        """The handles of the entries ``which`` picks that are not busy, least recently used
        first (under the lock)."""
        picked = (
            (entry.used, handle)
            for handle, entry in self._entries.items()
            if which(entry) and not self._busy(entry.item)
        )
        return [handle for _, handle in sorted(picked)]

    def _closed(self, item: T) -> None:
        try:
            self._close(item)
        except Exception:  # dropped all the same
            log.exception("closing a dropped entry failed", what=self.what)

    def resize(self, handle: bytes, owner: str, size: int) -> int:
        """Declare a new size for an entry (refused if it no longer fits); its size until
        now."""
        with self._lock:
            entry = self._entries.get(handle)
            if entry is None or entry.owner != owner:
                raise self.unknown(handle)
            refusal = self._refusal(owner, 0, size - entry.size)
            if refusal is not None:
                raise refusal
            self._bytes += size - entry.size
            self._owned_bytes[owner] += size - entry.size
            before, entry.size = entry.size, size
            return before

    def _dropped_in(self, owner: str) -> int:
        """Seconds until ``owner``'s entry unused the longest is dropped for being idle (the
        next :meth:`add` sweeps first), at least 1; with every entry busy, ``idle_seconds``."""
        idle = [
            e.used for e in self._entries.values() if e.owner == owner and not self._busy(e.item)
        ]
        due = self.idle_seconds - (time.monotonic() - min(idle)) if idle else self.idle_seconds
        return max(math.ceil(due), 1)

    def _refusal(self, owner: str, more: int, size: int) -> Overloaded | None:
        """Why ``more`` entries and ``size`` more bytes for ``owner`` do not fit (None: they
        do). The owner's quota is told first: it is what that client can do something about."""
        quota = self.quota
        if quota is not None:
            held = self._owned[owner]
            if more and held + more > quota.count:
                if self._room_in is None:
                    advice, retry_after = quota.advice, self._dropped_in(owner)
                else:
                    mine = [entry.item for entry in self._entries.values() if entry.owner == owner]
                    retry_after, later = self._room_in(mine)
                    advice = f"{quota.advice}, {later}"
                return ClientQuotaExceeded(
                    f"this client already holds {held} open {self.what}s, as many as "
                    f"{quota.count_name} ({quota.count}) allows: {advice}",
                    retry_after=retry_after,
                    limit=quota.count,
                )
            if quota.max_bytes is not None and self._owned_bytes[owner] + size > quota.max_bytes:
                return ClientQuotaExceeded(
                    f"this client's open {self.what}s would hold more than {quota.max_bytes} "
                    f"bytes{quota.bytes_what}, as much as one client may: {quota.advice}",
                    limit=quota.max_bytes,
                )
        full = more > 0 and len(self._entries) + more > self.capacity
        if full or (self.max_bytes is not None and self._bytes + size > self.max_bytes):
            return Overloaded(
                f"too many open {self.what}s on this server: close some, or retry shortly"
            )
        return None

    def _put(self, handle: bytes, entry: _Entry[T]) -> None:
        self._entries[handle] = entry
        self._bytes += entry.size
        self._owned[entry.owner] += 1
        self._owned_bytes[entry.owner] += entry.size

    def _remove(self, handle: bytes) -> _Entry[T]:
        entry = self._entries.pop(handle)
        self._bytes -= entry.size
        owner = entry.owner
        self._owned[owner] -= 1
        self._owned_bytes[owner] -= entry.size
        if not self._owned[owner]:
            del self._owned[owner]
            del self._owned_bytes[owner]
        return entry

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
            return self._remove(handle).item

    def release(self, handle: bytes, owner: str) -> T | None:
        """What a client's close or end of ``handle`` removes: its item, or None when ``owner``
        holds none (closed, dropped, another token's, or issued by an earlier process of the
        server): ending what is not held is a no-op, so a client whose server restarted can end
        its state and begin anew. Only a handle of no shape this server issues is refused."""
        if not well_formed(handle):
            raise self.unknown(handle)
        return self.pop(handle, owner)

    def unknown(self, handle: bytes) -> UnknownHandle:
        if not well_formed(handle):
            return UnknownHandle(
                f"not a {self.what} handle of this server: its handles are {HANDLE_BYTES} "
                f"bytes, this one is {len(handle)}"
            )
        if issued(self.kind, handle):
            return UnknownHandle(
                f"this {self.what} is no longer open: it was closed, or dropped after "
                f"{self.idle_seconds:g} s unused{self._sooner}"
            )
        return UnknownHandle(
            f"unknown {self.what} handle: this server process never issued it (the server may "
            "have restarted since)"
        )

    def sweep(self, now: float | None = None) -> None:
        """Drop and close the entries unused for ``idle_seconds`` (and not busy)."""
        self.drop_idle(self.idle_seconds, lambda item: True, now)

    def drop_idle(
        self,
        idle_seconds: float,
        which: Callable[[T], bool],
        now: float | None = None,
        most: int | None = None,
    ) -> int:
        """Drop and close the entries ``which`` picks that have been unused for
        ``idle_seconds`` (and are not busy), at most ``most`` of them, least recently used
        first; how many were dropped."""
        now = time.monotonic() if now is None else now
        expired: list[T] = []
        with self._lock:
            idle = self._least_recently_used(
                lambda e: now - e.used >= idle_seconds and which(e.item)
            )
            for handle in idle[:most]:
                expired.append(self._remove(handle).item)
        for item in expired:  # the others are still closed if one fails
            self._closed(item)
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
            self._owned.clear()
            self._owned_bytes.clear()
        for item in items:  # the others are still closed if one fails
            self._closed(item)
