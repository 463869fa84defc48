"""Who is calling, and may they: API tokens, scopes and the checks HTTP and Flight share.

A token is ``ap_<name>_<43 url-safe characters>``: 256 random bits behind a readable prefix (the
name tells an operator which token leaked; nothing parses it). The config keeps only
``sha256:<hex>`` of the whole token. A fast unsalted hash is the right tool here, unlike for
passwords: the secret is random and 256 bits long, so neither a dictionary nor brute force can
invert its hash, and salting or stretching would only slow every request down. A presented token
is hashed and compared with ``hmac.compare_digest`` against every configured hash, without an
early exit, so the time taken says nothing about which token (or how much of one) matched.

With no tokens configured, authentication is off and every caller is :data:`ANONYMOUS` (all
scopes); :func:`exposure_refusal` then keeps the server on loopback addresses.

Example (a protocol adapter)::

    principal = authenticate(settings.auth, headers.get("authorization"))
    principal.require("ingest", stream="events")   # raises Forbidden (403 / UNAUTHORIZED)
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from arrowport.config import AuthSettings, Scope, Settings, TokenSettings
from arrowport.errors import Forbidden, Unauthenticated

SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
TOKEN_PREFIX = "ap_"
_HASH_PREFIX = "sha256:"
_MISSING = "this server requires a token: send 'Authorization: Bearer <token>'"
_INVALID = "the token is not valid"  # one message for every mismatch: no hints to a guesser


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a configured token's name, scopes and stream limit.

    ``admin`` implies every other scope. ``streams`` (None: any) limits ``ingest`` only; reads
    are never limited by stream.
    """

    name: str
    scopes: frozenset[str]
    streams: frozenset[str] | None = None
    anonymous: bool = False

    def allows(self, scope: Scope, stream: str | None = None) -> bool:
        if "admin" in self.scopes:
            return True
        if scope not in self.scopes:
            return False
        if scope == "ingest" and self.streams is not None:
            # No stream named means "any stream": only an unlimited token qualifies.
            return stream is not None and stream in self.streams
        return True

    def require(self, scope: Scope, stream: str | None = None) -> None:
        """Raise :class:`Forbidden` unless this caller has ``scope`` (for ``stream``)."""
        if self.allows(scope, stream):
            return
        if scope in self.scopes:
            where = f"stream {stream!r}" if stream is not None else "an unnamed stream"
            raise Forbidden(
                f"token {self.name!r} may not ingest into {where}", token=self.name, scope=scope
            )
        raise Forbidden(
            f"token {self.name!r} lacks the {scope!r} scope", token=self.name, scope=scope
        )

    def require_table(self, stream: str, table: str, stream_table: str | None) -> None:
        """A stream-limited token writes only to its stream's own table (``stream_table``; a
        stream with none, such as an unconfigured ``app.v1``, is not writable by it).

        Call after the request's options are resolved: without it, a token limited to one stream
        could name any target table in the request.
        """
        if "admin" in self.scopes or self.streams is None:
            return
        if stream_table is None:
            raise Forbidden(
                f"token {self.name!r} may write stream {stream!r} only to the stream's own "
                "table, and it has none: configure the stream's table",
                token=self.name,
                table=table,
            )
        if table.lower() != stream_table.lower():
            raise Forbidden(
                f"token {self.name!r} may write stream {stream!r} only to table {stream_table!r}",
                token=self.name,
                table=table,
            )


ANONYMOUS = Principal("anonymous", frozenset(SCOPES), None, anonymous=True)


def auth_enabled(auth: AuthSettings) -> bool:
    return bool(auth.tokens)


# -- tokens --------------------------------------------------------------------------------------


def new_token(name: str) -> str:
    """A fresh secret for the token called ``name``."""
    return f"{TOKEN_PREFIX}{name}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    """The ``secret_hash`` to store in the config for ``secret``."""
    return _HASH_PREFIX + hashlib.sha256(secret.encode("utf-8")).hexdigest()


def config_entry(
    name: str, secret: str, scopes: Iterable[Scope], streams: Iterable[str] | None = None
) -> dict[str, Any]:
    """The ``auth.tokens`` item for a new token (what ``arrowport token create`` prints)."""
    entry: dict[str, Any] = {
        "name": name,
        "secret_hash": hash_secret(secret),
        "scopes": list(dict.fromkeys(scopes)),
    }
    if streams is not None:
        entry["streams"] = list(dict.fromkeys(streams))
    return entry


@functools.lru_cache(maxsize=1024)
def _digest(secret_hash: str) -> bytes:
    return bytes.fromhex(secret_hash.removeprefix(_HASH_PREFIX))


def _principal(token: TokenSettings) -> Principal:
    streams = None if token.streams is None else frozenset(token.streams)
    return Principal(token.name, frozenset(token.scopes), streams)


def verify_secret(auth: AuthSettings, secret: str) -> Principal:
    """The principal whose token is ``secret``; :class:`Unauthenticated` if none matches."""
    presented = hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).digest()
    found: TokenSettings | None = None
    for token in auth.tokens:
        if hmac.compare_digest(presented, _digest(token.secret_hash)):
            found = token
    if found is None:
        raise Unauthenticated(_INVALID)
    return _principal(found)


def authenticate_basic(auth: AuthSettings, name: str, secret: str) -> Principal:
    """Check a name and secret (Flight's Handshake, HTTP Basic): the token must carry that name."""
    if not auth_enabled(auth):
        return ANONYMOUS
    principal = verify_secret(auth, secret)
    if principal.name != name:
        raise Unauthenticated(_INVALID)
    return principal


def parse_basic(credentials: str) -> tuple[str, str]:
    """``base64(name:secret)`` (the part after ``Basic``) -> (name, secret). The ``=`` padding
    may be left out (the ADBC Flight SQL driver sends none)."""
    encoded = credentials.strip()
    encoded += "=" * (-len(encoded) % 4)
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthenticated("malformed Basic credentials") from None
    name, colon, secret = decoded.partition(":")
    if not colon:
        raise Unauthenticated("malformed Basic credentials")
    return name, secret


def _split(authorization: str | bytes | None) -> tuple[str, str]:
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    if not authorization or not authorization.strip():
        raise Unauthenticated(_MISSING)
    scheme, _, credentials = authorization.strip().partition(" ")
    return scheme.lower(), credentials.strip()


def authenticate(auth: AuthSettings, authorization: str | bytes | None) -> Principal:
    """The caller behind an ``Authorization`` header value (``Bearer <token>`` or ``Basic …``).

    Authentication off (no tokens): always :data:`ANONYMOUS`. Otherwise raises
    :class:`Unauthenticated` for a missing, malformed or unknown credential.
    """
    if not auth_enabled(auth):
        return ANONYMOUS
    scheme, credentials = _split(authorization)
    if scheme == "bearer" and credentials:
        return verify_secret(auth, credentials)
    if scheme == "basic":
        return authenticate_basic(auth, *parse_basic(credentials))
    raise Unauthenticated(_MISSING)


def basic_to_bearer(auth: AuthSettings, authorization: str | bytes | None) -> tuple[Principal, str]:
    """Flight's Handshake: check ``Basic`` credentials and return the ``Bearer`` header value the
    client should send from now on (the token itself: nothing is kept server-side)."""
    scheme, credentials = _split(authorization)
    if scheme != "basic":
        raise Unauthenticated("the handshake expects 'Authorization: Basic base64(name:token)'")
    name, secret = parse_basic(credentials)
    return authenticate_basic(auth, name, secret), f"Bearer {secret}"


# -- exposure ------------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bound_hosts(settings: Settings) -> list[str]:
    """Every address this server listens on (HTTP, Flight when enabled, the metrics port)."""
    hosts = [settings.api.host]
    flight = getattr(settings, "flight", None)
    if flight is not None and getattr(flight, "enabled", False):
        hosts.append(getattr(flight, "host", None) or settings.api.host)
    return list(dict.fromkeys(hosts))


def exposed_hosts(settings: Settings) -> list[str]:
    """Non-loopback addresses that would serve without authentication."""
    if auth_enabled(settings.auth):
        return []
    return [host for host in bound_hosts(settings) if not is_loopback(host)]


def exposure_refusal(settings: Settings) -> str | None:
    """Why the server must not start as configured, in one line (None: it may)."""
    hosts = exposed_hosts(settings)
    if not hosts or settings.auth.allow_unauthenticated:
        return None
    return (
        f"refusing to listen on {', '.join(hosts)} without authentication: configure "
        "auth.tokens (see `arrowport token create`), or bind 127.0.0.1, or pass "
        "--allow-unauthenticated (auth.allow_unauthenticated: true) to let anyone who can "
        "connect read and write every table"
    )
