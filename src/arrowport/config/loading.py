"""Loading settings: built-in defaults < YAML file < ``ARROWPORT_*`` environment < CLI flags,
and a one-line error naming the offending key and where its value came from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arrowport.config.base import ConfigError
from arrowport.config.checks import EXCERPT_CHARS, ConfigFileError, excerpt, read_yaml
from arrowport.config.settings import ENV_ALIASES, Settings, env_name, scalar_fields

ENV_CONFIG_FILE = "ARROWPORT_CONFIG"
# Sections whose values may hold a secret anywhere (a token pasted for its hash, a password in
# a catalog's connection string, a key file's contents): never echoed in an error.
_SECRET_SECTIONS = frozenset({"auth", "ducklake", "tls"})


def _set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    node = target
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _deep_merge(
    base: dict[str, Any], extra: Mapping[str, Any], source: str, prefix: str = ""
) -> dict[str, Any]:
    """``extra``'s settings over ``base``'s (from ``source``); a section of ``base`` that is not
    a mapping is refused here, or the setting given over it would hide it."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value, source, f"{prefix}{key}.")
        elif isinstance(value, Mapping) and merged.get(key) is not None:
            raise ConfigError(
                f"invalid configuration: {prefix}{key}: expected a mapping of settings, "
                f"found a {type(merged[key]).__name__} (from {source})"
            )
        else:
            merged[key] = value
    return merged


def _env_layer(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    layer: dict[str, Any] = {}
    origin: dict[str, str] = {}
    by_variable = {env_name(key): key for key, _ in scalar_fields()} | ENV_ALIASES
    for variable, key in by_variable.items():
        if variable in environ:
            raw = environ[variable]
            if not raw.strip():
                # Set but empty, as `${VAR}` of an unset one: never taken to switch a setting
                # off (an empty ARROWPORT_AUTH_TOKENS would turn authentication off).
                raise ConfigError(
                    f"invalid configuration: {key}: {variable} is set but empty: unset it, "
                    "or give it a value"
                )
            _set_dotted(layer, key, raw)
            origin[key] = variable
    return layer, origin


def _config_file_variable(environ: Mapping[str, str]) -> str | None:
    """The config file ``ARROWPORT_CONFIG`` names. Set but empty (a template's unset
    ``${VAR}``) it is refused, as every ``ARROWPORT_*`` variable is: taken as unset, the server
    would start on its defaults, with another database and none of the file's tokens."""
    if ENV_CONFIG_FILE not in environ:
        return None
    if not environ[ENV_CONFIG_FILE].strip():
        raise ConfigError(
            f"invalid configuration: {ENV_CONFIG_FILE} is set but empty: unset it, or name a "
            "config file"
        )
    return environ[ENV_CONFIG_FILE]


def _yaml_layer(path: Path) -> dict[str, Any]:
    try:
        data = read_yaml(path)
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot read it ({exc.strerror})") from exc
    except ConfigFileError as exc:
        raise ConfigError(f"config file {path}{exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of sections at the top level")
    # A section whose keys are all commented out reads as null: treat it as empty.
    return {key: {} if value is None else value for key, value in data.items()}


def _explain(exc: ValidationError, origin: Mapping[str, str], source: str) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part)[:EXCERPT_CHARS] for part in error["loc"]) or "(top level)"
    parents = [key.rsplit(".", n)[0] for n in range(key.count(".") + 1)]
    where = next((origin[k] for k in parents if k in origin), source)
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    value = error.get("input")
    # Never echoed: what might be a secret; otherwise at most a short excerpt.
    secret = "secret" in key or "password" in key or key.split(".")[0] in _SECRET_SECTIONS
    hidden = secret or error["type"] == "extra_forbidden" or isinstance(value, dict)
    shown = "" if hidden else f" {excerpt(value)}"
    return f"invalid configuration: {key}:{shown} {message} (from {where})"


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer defaults < YAML < environment < ``overrides`` (dotted keys, e.g. from CLI flags).

    Raises :class:`ConfigError` with a one-line message naming the offending key.
    """
    environ = os.environ if environ is None else environ
    named = _config_file_variable(environ)
    if config_file is None:
        config_file = named
    merged: dict[str, Any] = {}
    source = "defaults"
    if config_file is not None:
        merged = _yaml_layer(Path(config_file))
        source = f"config file {config_file}"
    env_layer, origin = _env_layer(environ)
    merged = _deep_merge(merged, env_layer, source)
    flag_layer: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(flag_layer, key, value)
            origin[key] = "command line"
    merged = _deep_merge(merged, flag_layer, source)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, origin, source)) from None
