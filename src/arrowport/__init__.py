"""Arrowport: land Apache Arrow data in DuckDB over HTTP and Arrow Flight."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("arrowport")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "1.0.0.dev0"

__all__ = ["__version__"]
