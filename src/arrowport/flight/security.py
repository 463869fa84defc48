"""Flight access control: the same tokens and scopes as HTTP, checked once per call.

Every call passes :class:`AuthMiddlewareFactory` first. It reads the ``authorization`` header
(``Bearer <token>`` or ``Basic base64(name:token)``) and either refuses the call
(``UNAUTHENTICATED``, message ``unauthenticated: ...``) or hands the handler a
:class:`~arrowport.auth.Principal`, which the handler checks against the scope it needs::

    principal = caller(context)
    principal.require("ingest", stream)    # FlightUnauthorizedError "forbidden: ..."

The Handshake follows pyarrow's ``client.authenticate_basic_token(name, token)``: the client sends
Basic credentials and receives ``authorization: Bearer <token>`` as a response header, which it
sends on later calls. Nothing is kept server-side: the bearer value is the token itself.

With no tokens configured every caller is :data:`~arrowport.auth.ANONYMOUS` (all scopes), as on
HTTP. Credentials never reach a log line: only the token's name does.
"""

from __future__ import annotations

from typing import Any

import pyarrow.flight as flight

from arrowport.auth import Principal, authenticate, basic_to_bearer
from arrowport.config import AuthSettings
from arrowport.errors import Unauthenticated
from arrowport.flight.errors import flight_errors
from arrowport.metrics import Metrics

MIDDLEWARE_KEY = "auth"

# Calls whose scope does not depend on what they carry are checked before the handler runs: a
# refusal raised here leaves cleanly even for get_schema, whose handler pyarrow cannot fail
# without sending a traceback. do_put (ingest, per stream) and do_action check in the handler.
_READ_METHODS = frozenset(
    {
        flight.FlightMethod.DO_GET,
        flight.FlightMethod.LIST_FLIGHTS,
        flight.FlightMethod.GET_FLIGHT_INFO,
        flight.FlightMethod.GET_SCHEMA,
    }
)


class AuthMiddleware(flight.ServerMiddleware):  # type: ignore[misc]
    """The authenticated caller of one call (and, for a Handshake, the header to answer with)."""

    def __init__(self, principal: Principal, authorization: str | None = None) -> None:
        super().__init__()
        self.principal = principal
        self._authorization = authorization

    def sending_headers(self) -> dict[str, str]:
        if self._authorization is None:
            return {}
        return {"authorization": self._authorization}

    def __repr__(self) -> str:  # never show the bearer value
        return f"AuthMiddleware(principal={self.principal.name!r})"


class AuthMiddlewareFactory(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Authenticates every Flight call; refusals leave as Flight errors without traceback."""

    def __init__(self, auth: AuthSettings, metrics: Metrics) -> None:
        super().__init__()
        self._auth = auth
        self._metrics = metrics

    def start_call(self, info: flight.CallInfo, headers: dict[str, list[Any]]) -> AuthMiddleware:
        # pyarrow sends any other exception raised here to the client with its traceback.
        with flight_errors(self._metrics, _method_name(info)) as call:
            authorization = _header(headers, "authorization")
            if info.method == flight.FlightMethod.HANDSHAKE and _is_basic(authorization):
                principal, bearer = basic_to_bearer(self._auth, authorization)
                return AuthMiddleware(principal, bearer)
            principal = authenticate(self._auth, authorization)
            call.token = None if principal.anonymous else principal.name
            if info.method in _READ_METHODS:
                principal.require("read")
            return AuthMiddleware(principal)
        raise AssertionError("unreachable")  # flight_errors re-raises every exception


class HandshakeAuthHandler(flight.ServerAuthHandler):  # type: ignore[misc]
    """Lets the Handshake succeed: :class:`AuthMiddlewareFactory` has checked it already.

    Without an auth handler pyarrow answers every Handshake with UNIMPLEMENTED, which
    ``authenticate_basic_token`` reports as an error even when the credentials were good.
    """

    def authenticate(self, outgoing: Any, incoming: Any) -> None:
        return None

    def is_valid(self, token: bytes) -> str:
        # Called on every call with the legacy ``auth-token-bin`` header; the middleware decides.
        return ""


def caller(context: flight.ServerCallContext) -> Principal:
    """The principal :class:`AuthMiddlewareFactory` established for this call (fail closed)."""
    middleware = context.get_middleware(MIDDLEWARE_KEY)
    if not isinstance(middleware, AuthMiddleware):
        raise Unauthenticated("this call was not authenticated")
    return middleware.principal


def _method_name(info: flight.CallInfo) -> str:
    name: str = info.method.name
    return name.lower()


def _header(headers: dict[str, list[Any]], name: str) -> str | None:
    """The first value of a header (gRPC lower-cases names; pyarrow gives lists of values)."""
    values = headers.get(name) or []
    if not values:
        return None
    value = values[0]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def _is_basic(authorization: str | None) -> bool:
    return authorization is not None and authorization.strip().lower().startswith("basic ")
