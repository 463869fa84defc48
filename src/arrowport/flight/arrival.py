"""A client-streamed call's messages as they arrive, each within a stall timeout.

A client that opens a call and then sends nothing would hold it (one of
``flight.max_concurrent_calls``, and whatever the call holds) for good; every call that reads a
client's stream (a put, a Handshake) reads it through :func:`arriving`, which ends such a call
DEADLINE_EXCEEDED ``request_timeout`` once ``limits.body_timeout_seconds`` pass without a
message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from arrowport.errors import RequestTimeout, TruncatedStream


async def arriving(
    requests: AsyncIterator[bytes], stall_seconds: float, what: str, consequence: str
) -> AsyncIterator[bytes]:
    """``requests``' messages, each within ``stall_seconds`` of asking for it.

    A stall raises :class:`RequestTimeout`, and a call the client cancelled (or whose connection
    broke) :class:`TruncatedStream`; their messages name the stream ``what`` ("the upload") and
    end with ``consequence`` ("nothing was written").
    """
    source = aiter(requests)
    while True:
        try:
            async with asyncio.timeout(stall_seconds):
                raw = await anext(source)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(
                f"no data of {what} arrived for {stall_seconds:g} seconds; {consequence}"
            ) from None
        except Exception:  # grpc.RpcError: the client cancelled or the connection broke
            raise TruncatedStream(f"the client cancelled {what}; {consequence}") from None
        yield raw
