"""The exceptions the client raises: one base class, split by whether a retry can help.

::

    ArrowportClientError            .code .status .message .details .retryable .retry_after
    ├── TransientError              retryable: 5xx (but 501, 505, 507, out_of_memory), 429,
    │                               408 request_timeout, 409 write_conflict
    │   └── ConnectionFailed        no answer at all: refused, reset, timed out (status None)
    └── RequestError                not retryable: the server refused the request as it is
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ArrowportClientError(Exception):
    """A request failed. ``code`` is the server's stable error code (``schema_conflict``,
    ``sequence_gap``, ``overloaded``...; see the README's Errors table), or one of the client's
    own: ``connection_error``, ``timeout``, ``tls_error``, ``http_error`` (an answer that is not
    an Arrowport error body), ``producer_conflict``.

    ``status`` is the HTTP status (``None`` when no answer arrived), ``message`` the server's
    message, ``details`` the rest of its error body (``expected_sequence``, ``field``...).
    ``str(error)`` carries all three: ``schema_conflict (409): batch does not fit table ...``.

    Example::

        try:
            client.ingest("events", table)
        except ArrowportClientError as error:
            if error.code == "schema_conflict":
                ...
            raise
    """

    #: Whether the same request may succeed later (the client already retried it).
    retryable: bool = False

    def __init__(
        self,
        code: str,
        status: int | None,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.status = status
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        #: Seconds the server asked the client to wait (``Retry-After``), if it did.
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.code} ({self.status})" if self.status is not None else self.code
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.code, self.status, self.message, self.details, self.retry_after),
        )


def _rebuild(
    cls: type[ArrowportClientError],
    code: str,
    status: int | None,
    message: str,
    details: dict[str, Any],
    retry_after: float | None,
) -> ArrowportClientError:
    return cls(code, status, message, details, retry_after=retry_after)


class TransientError(ArrowportClientError):
    """The server was overloaded, restarting or unreachable: retrying later may succeed.

    The client retries these itself (see :class:`~arrowport.client.RetryPolicy`); one reaches
    the caller only when the retries are used up.
    """

    retryable = True


class ConnectionFailed(TransientError):
    """No answer: the connection was refused or broke, or the server took too long
    (``code`` is ``connection_error`` or ``timeout``)."""


class RequestError(ArrowportClientError):
    """The server refused the request as it is (a 4xx, 501, 507...): sending it again will not
    help; change the request, the data or the credentials."""
