"""Browsers cannot drive the API: foreign origins and unknown host names are refused.

A web page the user has open can send simple requests (a ``text/plain`` POST, a GET) to
``http://127.0.0.1:8000`` without any CORS preflight, and a page whose domain an attacker points
at 127.0.0.1 (DNS rebinding) can even read the answers. Both are refused here, before routing:

* a request whose ``Origin`` is neither this server itself nor one of ``api.cors_origins``, or that
  a browser marks ``Sec-Fetch-Site: cross-site`` without such an origin: 403 ``forbidden_origin``;
* an HTTP/1.1 request without a ``Host`` (or an empty one): 400 ``bad_request``;
* a ``Host`` that is not one this server answers to: 403 ``forbidden_host``. With
  ``api.allowed_hosts`` set, those names (``*.example.com`` for subdomains, ``*`` for any); else,
  with authentication on, any name (a rebound page has no token); without authentication, only
  loopback names and addresses, and the address the server is bound to.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from arrowport.auth import auth_enabled, is_loopback
from arrowport.config import Settings
from arrowport.errors import ArrowportError, BadRequest, ForbiddenHost, ForbiddenOrigin
from arrowport.metrics import Metrics

_WILDCARD_BINDS = ("0.0.0.0", "::", "")


def _split_host(value: str) -> tuple[str, str]:
    """``host[:port]`` -> (host lower-cased without brackets, port or "")."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    host, _, port = value.partition(":")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostRules:
    """Which ``Host`` names this server answers to."""

    def __init__(self, settings: Settings) -> None:
        self._patterns = [p.strip().lower() for p in settings.api.allowed_hosts if p.strip()]
        self._open = not self._patterns and auth_enabled(settings.auth)
        bind = settings.api.host.strip("[]").lower()
        self._bound = {bind}
        self._any_ip = bind in _WILDCARD_BINDS
        # Every request asks, nearly always about the same few names; parsing an IP address
        # each time was 5 % of the event loop's time under 16 small writers.
        self.allows = functools.lru_cache(maxsize=256)(self._allows)

    def _allows(self, host: str) -> bool:
        if self._open:
            return True
        if self._patterns:
            return any(
                pattern == "*"
                or host == pattern
                or (pattern.startswith("*.") and host.endswith(pattern[1:]))
                for pattern in self._patterns
            )
        if host == "localhost" or host.endswith(".localhost"):
            return True
        if not _is_ip(host):
            return False  # a name: DNS rebinding needs one
        return is_loopback(host) or host in self._bound or self._any_ip


# Headers the rules read that a request may carry once only.
_SINGLE = frozenset((b"host", b"origin"))


class OriginGuard:
    """Pure ASGI middleware applying the rules above to every HTTP request."""

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self.hosts = HostRules(settings)
        # Normalised by the configuration as CORS (security.with_cors) sees them too.
        self.origins = frozenset(settings.api.cors_origins)

    def _refusal(self, scope: Scope) -> ArrowportError | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            name = name.lower()
            if name in headers and name in _SINGLE:
                # Which of two would a proxy in front have checked? Neither is taken.
                refused = ForbiddenHost if name == b"host" else ForbiddenOrigin
                return refused(f"the request carries more than one {name.decode()} header")
            headers[name] = value
        if not headers.get(b"host", b"").strip() and scope.get("http_version") == "1.1":
            # Which host was it for? RFC 9112 (3.2) has a server refuse it rather than guess.
            return BadRequest("an HTTP/1.1 request must carry a Host header")
        raw_host = headers.get(b"host", b"").decode("latin-1")
        host, port = _split_host(raw_host)
        if raw_host and not self.hosts.allows(host):
            return ForbiddenHost(
                f"this server does not answer to the host name {host!r} "
                "(add it to api.allowed_hosts)"
            )
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
        if origin:
            if origin in self.origins or "*" in self.origins or self._same(origin, host, port):
                return None
            return ForbiddenOrigin(
                f"requests from the web origin {origin!r} are refused (add it to "
                "api.cors_origins to allow a browser application)"
            )
        if headers.get(b"sec-fetch-site", b"").lower() == b"cross-site":
            return ForbiddenOrigin("cross-site requests from browsers are refused")
        return None

    @staticmethod
    def _same(origin: str, host: str, port: str) -> bool:
        parts = urlsplit(origin)
        if parts.hostname is None:
            return False  # "null" and the like
        default = "443" if parts.scheme == "https" else "80"
        return parts.hostname == host and str(parts.port or default) == (port or default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        self.metrics.errors.labels(refusal.code, "http").inc()
        body = json.dumps(refusal.to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": refusal.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
