"""Flight access control: the same tokens and scopes as HTTP, read from the call's metadata.

Every call is authenticated from its ``authorization`` header (``Bearer <token>`` or
``Basic base64(name:token)``); a handler then checks the scope it needs::

    principal = caller(context, auth)
    principal.require("ingest", stream)    # PERMISSION_DENIED "forbidden: ..."

The Handshake follows ``client.authenticate_basic_token(name, token)`` (pyarrow) and the ADBC
driver: the client sends Basic credentials and receives ``authorization: Bearer <token>`` as a
response header, which it sends on later calls. Nothing is kept server-side: the bearer value is
the token itself. With no tokens configured every caller is
:data:`~arrowport.auth.ANONYMOUS` (all scopes), as on HTTP. Credentials never reach a log line:
only the token's name does.
"""

from __future__ import annotations

import grpc

from arrowport.auth import (
    ANONYMOUS,
    Principal,
    auth_enabled,
    authenticate,
    basic_to_bearer,
    parse_basic,
)
from arrowport.config import AuthSettings
from arrowport.errors import Unauthenticated
from arrowport.flight.threaded import ThreadContext

# A call's context, on the event loop or on a thread (each tells the call's metadata).
AnyContext = grpc.ServicerContext | grpc.aio.ServicerContext[bytes, bytes] | ThreadContext


def authorization(context: AnyContext) -> str | None:
    """The first ``authorization`` value of the call's metadata (gRPC lower-cases names)."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def caller(context: AnyContext, auth: AuthSettings) -> Principal:
    """The authenticated caller of this call (UNAUTHENTICATED otherwise)."""
    return authenticate(auth, authorization(context))


def handshake(context: AnyContext, auth: AuthSettings) -> tuple[Principal, str | None]:
    """Check the Handshake's credentials: the caller, and the bearer header value to answer
    Basic credentials with (``None`` for a bearer token)."""
    header = authorization(context)
    if header is not None and header.strip().lower().startswith("basic "):
        if not auth_enabled(auth) and not _well_formed(header):
            # No tokens: credentials are not checked, as HTTP does not read them either.
            return ANONYMOUS, None
        return basic_to_bearer(auth, header)
    return authenticate(auth, header), None


def _well_formed(header: str) -> bool:
    try:
        parse_basic(header.strip()[len("basic ") :])
    except Unauthenticated:
        return False
    return True
