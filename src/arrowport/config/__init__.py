"""One settings model: built-in defaults < YAML file < ``ARROWPORT_*`` environment < CLI flags.

Every scalar setting has a dotted YAML key (``api.port``) and an environment variable derived from it
(``ARROWPORT_API_PORT``); :data:`ENV_ALIASES` adds the seed spec's spellings that do not follow the
rule (``ARROWPORT_ENABLE_METRICS``). ``settings_table()`` yields (key, variable, default, help) rows,
which the README's configuration table is generated from, so code and docs cannot drift apart.

The modules:

* ``checks``: what every section checks (durations, booleans given as numbers, origins, YAML files).
* ``base``: the ``Section`` base model, ``ConfigError`` and the shared literal types.
* ``serving``: the HTTP API, Arrow Flight, TLS and logging sections.
* ``access``: API tokens and authentication.
* ``storage``: the DuckDB file, the storage target and the DuckLake.
* ``data``: compression, batch sizes, limits, group commit, delivery and streams.
* ``settings``: the root ``Settings`` model, environment variable names and ``settings_table()``.
* ``loading``: layering the sources into ``Settings`` (``load_settings``) and explaining errors.

Example::

    settings = load_settings(config_file="config.yaml", overrides={"api.port": 9000})
"""

from arrowport.config.access import AuthSettings, TokenSettings
from arrowport.config.base import ConfigError, ResultCodec, Scope
from arrowport.config.data import (
    CompressionSettings,
    DefaultsSettings,
    DeliverySettings,
    GroupCommitSettings,
    LimitsSettings,
    StreamSettings,
)
from arrowport.config.loading import ENV_CONFIG_FILE, load_settings
from arrowport.config.serving import ApiSettings, FlightSettings, LoggingSettings, TlsSettings
from arrowport.config.settings import ENV_ALIASES, ENV_PREFIX, Settings, env_name, settings_table
from arrowport.config.storage import DuckDBSettings, DuckLakeSettings, StorageSettings

__all__ = [
    "ENV_ALIASES",
    "ENV_CONFIG_FILE",
    "ENV_PREFIX",
    "ApiSettings",
    "AuthSettings",
    "CompressionSettings",
    "ConfigError",
    "DefaultsSettings",
    "DeliverySettings",
    "DuckDBSettings",
    "DuckLakeSettings",
    "FlightSettings",
    "GroupCommitSettings",
    "LimitsSettings",
    "LoggingSettings",
    "ResultCodec",
    "Scope",
    "Settings",
    "StorageSettings",
    "StreamSettings",
    "TlsSettings",
    "TokenSettings",
    "env_name",
    "load_settings",
    "settings_table",
]
