"""HTTP plumbing shared by the two clients: connection options, calls, answers turned into
errors, and the retry loop (a blocking and an ``asyncio`` copy of the same few lines)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import math
import os
import ssl
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from arrowport import __version__
from arrowport.client._errors import (
    ArrowportClientError,
    ConnectionFailed,
    RequestError,
    TransientError,
)
from arrowport.client._retry import RetryPolicy

ARROW_STREAM = "application/vnd.apache.arrow.stream"
log = logging.getLogger("arrowport.client")

Verify = bool | str | os.PathLike[str] | ssl.SSLContext
Cert = str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]]

# Statuses a later attempt may get past; 501 (not implemented), 505 and 507 (disk full) need a
# person, and 408 only when the server gave up waiting for a slow body (not a slow query).
_NEVER_RETRIED = (501, 505, 507)
_RETRIED = (429, 502, 503, 504)
# Arrowport's codes for a request it did not carry out (see Attempts).
_REFUSED = frozenset({"overloaded", "shutting_down", "request_timeout", "write_conflict"})


def connection_options(
    url: str,
    *,
    token: str | None,
    verify: Verify,
    cert: Cert | None,
    timeout: float | None,
    connect_timeout: float | None,
    headers: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Keyword arguments for ``httpx.Client`` / ``httpx.AsyncClient``; ``ValueError`` for a
    URL, token or header that no request could carry."""
    check_url(url)
    sent = {"User-Agent": f"arrowport-client/{__version__}"}
    if token is not None:
        if not all("!" <= c <= "~" for c in token):
            # The token is a secret: the message does not repeat it.
            raise ValueError(
                "token must be printable ASCII without spaces (the characters of a bearer "
                "token); this one holds other characters"
            )
        sent["Authorization"] = f"Bearer {token}"
    for name, value in (headers or {}).items():
        if not (name.isascii() and value.isascii() and name.isprintable()):
            raise ValueError(f"header {name!r}: names and values must be ASCII text")
    sent |= dict(headers or {})
    return {
        "base_url": url,
        "headers": sent,
        "verify": ssl_context(verify, cert),
        "timeout": httpx.Timeout(timeout, connect=connect_timeout),
        "follow_redirects": False,
    }


def check_url(url: str) -> None:
    """Refuse what is not an ``http://`` or ``https://`` URL naming a host."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, not {url!r}")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"url {url!r} is not a valid URL: {exc}") from None
    if not parsed.host:
        raise ValueError(f"url {url!r} names no host")


def ssl_context(verify: Verify, cert: Cert | None) -> ssl.SSLContext | bool:
    """What httpx needs for ``verify`` (True, False, a CA bundle's path, or a context) and an
    optional client certificate (a PEM file holding both, or ``(certificate, key)``)."""
    if verify is True and cert is None:
        return True
    if isinstance(verify, ssl.SSLContext):
        context = verify
    elif verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif verify is True:
        import certifi  # httpx's own CA bundle

        context = ssl.create_default_context(cafile=certifi.where())
    else:
        with _naming(verify):
            context = ssl.create_default_context(cafile=os.fspath(verify))
    if cert is not None:
        with _naming(*(cert if isinstance(cert, tuple) else (cert,))):
            if isinstance(cert, tuple):
                context.load_cert_chain(os.fspath(cert[0]), os.fspath(cert[1]))
            else:
                context.load_cert_chain(os.fspath(cert))
    return context


@contextlib.contextmanager
def _naming(*paths: str | os.PathLike[str]) -> Iterator[None]:
    """A file that cannot be read raises its ``OSError`` with the file's name (the ``ssl``
    module leaves it out): the first of ``paths`` that is not a readable file."""
    try:
        yield
    except ssl.SSLError:
        raise
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        unreadable = [p for p in paths if not (os.path.isfile(p) and os.access(p, os.R_OK))]
        name = os.fspath((unreadable or paths)[0])
        raise OSError(exc.errno, exc.strerror, name) from None


def path_part(value: str) -> str:
    """``value`` quoted for one segment of a URL path."""
    try:
        return quote(value, safe="")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{value!r} is not valid Unicode text: it holds the lone surrogate "
            f"{exc.object[exc.start]!r} (what bytes that are not UTF-8 decode to)"
        ) from None


@dataclass(frozen=True)
class Call:
    """One request, enough to send it again byte for byte."""

    method: str
    path: str
    what: str = ""
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    json: Any = None
    # A query the server is still running when the client stops waiting would only run again.
    retry_timeouts: bool = True

    def describe(self) -> str:
        return self.what or f"{self.method} {self.path}"


def response_failure(response: httpx.Response) -> ArrowportClientError:
    """The error an unsuccessful answer stands for."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        code = body["code"]
        message = str(body.get("message", ""))
        details = {k: v for k, v in body.items() if k not in ("status", "code", "message")}
    else:
        code = "http_error"
        text = " ".join(response.text.split())[:200]
        message = response.reason_phrase + (f": {text}" if text else "")
        details = {}
    retry_after = _retry_after(response.headers.get("retry-after"))
    transient = status in _RETRIED or (status >= 500 and status not in _NEVER_RETRIED)
    transient = transient or (status == 408 and code == "request_timeout")
    # A concurrent write to the same table won: this one was rolled back whole.
    transient = transient or (status == 409 and code == "write_conflict")
    # A query stopped as the server's memory passed its bound: the same query, sent again at
    # once, is likely to grow it as far again; the caller decides.
    transient = transient and code != "out_of_memory"
    kind = TransientError if transient else RequestError
    return kind(code, status, message, details, retry_after=retry_after)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def transport_failure(
    exc: httpx.HTTPError, url: httpx.URL, call: Call | None = None
) -> ArrowportClientError:
    """The error a request (``call``) that got no answer stands for."""
    reason = str(exc) or type(exc).__name__
    if _tls_problem(exc):
        return RequestError("tls_error", None, f"TLS with {url} failed: {reason}")
    if isinstance(exc, httpx.ReadTimeout) and call is not None and not call.retry_timeouts:
        # The server had the whole request and was working on it: sent again, it would only
        # run again (a connection or pool that timed out never reached it, and is retried).
        unanswered = ConnectionFailed(
            "timeout",
            None,
            f"{url} did not answer in time ({reason}); {call.describe()} is not sent again: "
            "the server may still be running it (wait longer: the client's timeout, "
            "arrowport --timeout)",
        )
        unanswered.retryable = False
        return unanswered
    if isinstance(exc, httpx.TimeoutException):
        return ConnectionFailed("timeout", None, f"{url} did not answer in time ({reason})")
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        return ConnectionFailed("connection_error", None, f"cannot reach {url}: {reason}")
    return RequestError("http_error", None, f"request to {url} failed: {reason}")


def _tls_problem(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _wait(call: Call, error: ArrowportClientError, retry: int, policy: RetryPolicy) -> float:
    """Seconds to wait before sending ``call`` again; raises ``error`` when it is not retried."""
    if not error.retryable or retry >= policy.max_retries:
        raise error
    wait = policy.delay(retry, error.retry_after)
    log.warning(
        "%s failed (%s); retry %d of %d in %.1f s",
        call.describe(),
        error,
        retry + 1,
        policy.max_retries,
        wait,
    )
    return wait


@dataclass(frozen=True)
class Attempts:
    """How a call that succeeded got there: ``retries`` before the answer, and whether an earlier
    attempt may have been carried out (``uncertain``: it reached the server and its answer was
    lost, or came from something in between) rather than refused by Arrowport itself."""

    retries: int = 0
    uncertain: bool = False

    def after(self, exc: httpx.HTTPError | None, error: ArrowportClientError) -> Attempts:
        """These attempts and one more that failed with ``error`` (raised as ``exc``)."""
        unreached = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        # Refusals that say the request was turned away or rolled back whole; a transport
        # failure past the connect, a proxy's answer or a storage failure say nothing as sure.
        refused = exc is None and error.code in _REFUSED
        return Attempts(self.retries + 1, self.uncertain or not (unreached or refused))


def _arguments(call: Call) -> dict[str, Any]:
    arguments: dict[str, Any] = {"params": call.params, "headers": call.headers}
    if call.content is not None:
        arguments["content"] = call.content
    if call.json is not None:
        arguments["json"] = call.json
    return arguments


def send(http: httpx.Client, call: Call, policy: RetryPolicy) -> tuple[httpx.Response, Attempts]:
    """Send ``call``, retrying transient failures; the answer and the attempts it took."""
    attempts = Attempts()
    while True:
        failure: httpx.HTTPError | None = None
        try:
            response = http.request(call.method, call.path, **_arguments(call))
        except httpx.HTTPError as exc:
            failure, error = exc, transport_failure(exc, http.base_url, call)
        else:
            if response.is_success:
                return response, attempts
            error = response_failure(response)
        time.sleep(_wait(call, error, attempts.retries, policy))
        attempts = attempts.after(failure, error)


async def send_async(
    http: httpx.AsyncClient, call: Call, policy: RetryPolicy
) -> tuple[httpx.Response, Attempts]:
    """:func:`send` for ``asyncio``."""
    attempts = Attempts()
    while True:
        failure: httpx.HTTPError | None = None
        try:
            response = await http.request(call.method, call.path, **_arguments(call))
        except httpx.HTTPError as exc:
            failure, error = exc, transport_failure(exc, http.base_url, call)
        else:
            if response.is_success:
                return response, attempts
            error = response_failure(response)
        await asyncio.sleep(_wait(call, error, attempts.retries, policy))
        attempts = attempts.after(failure, error)


def json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise RequestError(
            "http_error",
            response.status_code,
            f"expected a JSON answer from {response.request.url}, got {response.text[:100]!r}",
        ) from None
