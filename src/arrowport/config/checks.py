"""Checks every configuration section applies to its settings, whatever their section.

* A duration (a number setting named ``*_seconds``, ``*_ms`` or ``*_hours``) is finite and at
  most :data:`MAX_DURATION_SECONDS` (one year) in its unit: an infinite or huge one was accepted,
  then overflowed a timer at run time.
* ``true``/``false`` is no number: YAML's ``port: true`` is not port 1.
* A CORS origin is compared as browsers send it: lower-case, without a trailing ``/`` or the
  scheme's default port.
* A config file is UTF-8 YAML of at most :data:`MAX_CONFIG_FILE_BYTES`, without aliases (a few
  nested ones expand into gigabytes).
"""

from __future__ import annotations

import math
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml

MAX_DURATION_SECONDS = 365 * 24 * 3600
# Seconds per unit, by the setting name's suffix.
DURATION_UNITS = {"_seconds": 1.0, "_ms": 0.001, "_hours": 3600.0}
_DEFAULT_PORTS = {"http": 80, "https": 443}
# How much of a refused value an error message shows.
EXCERPT_CHARS = 60


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_admits_bool(arg) for arg in get_args(annotation))
    return False


def _is_number(annotation: Any) -> bool:
    if annotation in (int, float):
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_is_number(arg) for arg in get_args(annotation))
    return False


def refuse_bool(annotation: Any, value: Any) -> Any:
    """``value``, unless it is a bool given to a number setting."""
    if isinstance(value, bool) and _is_number(annotation) and not _admits_bool(annotation):
        raise ValueError("expected a number, not true or false")
    return value


def check_duration(name: str, value: Any) -> Any:
    """``value`` if the setting ``name`` is no duration, or a finite one within one year."""
    unit = next((s for suffix, s in DURATION_UNITS.items() if name.endswith(suffix)), None)
    if unit is None or not isinstance(value, int | float) or isinstance(value, bool):
        return value
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    bound = MAX_DURATION_SECONDS / unit
    if value > bound:
        raise ValueError(f"expected at most {bound:.0f} (one year)")
    return value


def normal_origin(origin: str) -> str:
    """``origin`` as a browser sends it in ``Origin``: ``HTTP://App.example:80/`` ->
    ``http://app.example``."""
    origin = origin.strip().rstrip("/").lower()
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return origin
    if port is not None and _DEFAULT_PORTS.get(parts.scheme) == port and not parts.path:
        host = parts.netloc.rsplit(":", 1)[0]
        return f"{parts.scheme}://{host}"
    return origin


def excerpt(value: Any) -> str:
    """``repr(value)``, cut to a few dozen characters."""
    shown = repr(value)
    if len(shown) > EXCERPT_CHARS:
        return shown[:EXCERPT_CHARS] + f"... ({len(shown)} characters)"
    return shown


MAX_CONFIG_FILE_BYTES = 1024**2


class ConfigFileError(ValueError):
    """A config file that cannot be read as settings; the message follows the file's name."""


class _NoAliasLoader(yaml.SafeLoader):
    """YAML's safe subset without aliases (``*name``)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise ConfigFileError(f" line {mark.line + 1}: YAML aliases (*name) are not supported")
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        # A key given twice would otherwise keep its last value alone, silently: a second
        # `auth:` section would drop the tokens of the first.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # a complex key: the settings never hold one, and refuse it
            if key in seen:  # as the mapping would see it (1 and true are one key to it)
                line = key_node.start_mark.line + 1
                raise ConfigFileError(f" line {line}: key {excerpt(key)} is given twice")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> Any:
    """The document of the YAML file ``path``. Raises :class:`OSError`, or
    :class:`ConfigFileError` (``" line 3: not valid YAML"``)."""
    with path.open("rb") as file:
        raw = file.read(MAX_CONFIG_FILE_BYTES + 1)
    if len(raw) > MAX_CONFIG_FILE_BYTES:
        raise ConfigFileError(f": larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f": not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except ConfigFileError:
        raise
    except yaml.MarkedYAMLError as exc:
        where = exc.problem_mark
        raise ConfigFileError(
            (f" line {where.line + 1}" if where is not None else "") + ": not valid YAML"
        ) from None
    except RecursionError:
        raise ConfigFileError(": nested too deeply") from None
    except (yaml.YAMLError, ValueError, OverflowError):
        # A value YAML's resolver takes for one it cannot build (a date such as 2024-13-45).
        raise ConfigFileError(": not valid YAML") from None
