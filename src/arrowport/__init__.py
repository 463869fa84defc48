"""Arrowport: land Apache Arrow data in DuckDB over HTTP and Arrow Flight.

``arrowport.Client`` and ``arrowport.AsyncClient`` are the Python client's
(:mod:`arrowport.client`), loaded on first use: importing ``arrowport`` loads no server.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arrowport.client import AsyncClient, Client

try:
    __version__ = version("arrowport")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "1.0.0.dev0"

_CLIENT_NAMES = ("AsyncClient", "Client")


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        import arrowport.client

        return getattr(arrowport.client, name)
    raise AttributeError(f"module 'arrowport' has no attribute {name!r}")


__all__ = ["AsyncClient", "Client", "__version__"]
