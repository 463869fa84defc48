"""Configuration: defaults < YAML < environment < CLI flags, the seed's variables, clean refusals."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import BaseModel

from arrowport.config import ConfigError, Settings, load_settings
from tests.server import ArrowportProcess, free_port

ROOT = Path(__file__).resolve().parents[1]

SEED_YAML = """\
# config.yaml
api:
  host: "127.0.0.1"
  port: 8000
  enable_metrics: true
  metrics_port: 9090

duckdb:
  path: "data/db.duckdb"

compression:
  algorithm: "zstd"
  level: 3

defaults:
  chunk_size: 10000
"""


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARROWPORT_")}
    return env | extra


def model_keys() -> set[str]:
    """Every scalar setting's dotted key, read from the model itself."""
    keys = set()
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= {f"{name}.{sub}" for sub in annotation.model_fields}
        elif name != "streams":
            keys.add(name)
    return keys


def lookup(settings: Settings, key: str) -> Any:
    value: Any = settings
    for part in key.split("."):
        value = getattr(value, part)
    return value


# -- the pure function ---------------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings(None, {}, {})
    assert settings.api.host == "127.0.0.1"
    assert settings.api.port == 8000
    assert settings.api.enable_metrics is True
    assert settings.api.metrics_port is None
    assert settings.duckdb.path == "data/db.duckdb"
    assert settings.streams == {}


def test_seed_yaml_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED_YAML)
    settings = load_settings(path, {}, {})
    assert settings.api.port == 8000
    assert settings.api.metrics_port == 9090
    assert settings.compression.algorithm == "zstd"
    assert settings.compression.level == 3
    assert settings.defaults.chunk_size == 10000


def test_precedence_defaults_yaml_env_flags(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml",
        {"api": {"port": 1111, "host": "127.0.0.5"}, "defaults": {"chunk_size": 5}},
    )
    yaml_only = load_settings(path, {}, {})
    assert (yaml_only.api.port, yaml_only.api.host, yaml_only.defaults.chunk_size) == (
        1111,
        "127.0.0.5",
        5,
    )
    assert yaml_only.duckdb.path == "data/db.duckdb"  # untouched keys keep their defaults

    env = {"ARROWPORT_API_PORT": "2222", "ARROWPORT_DEFAULTS_CHUNK_SIZE": "6"}
    with_env = load_settings(path, {}, env)
    assert (with_env.api.port, with_env.api.host, with_env.defaults.chunk_size) == (
        2222,
        "127.0.0.5",
        6,
    )

    with_flags = load_settings(path, {"api.port": 3333, "api.host": None}, env)
    assert (with_flags.api.port, with_flags.api.host, with_flags.defaults.chunk_size) == (
        3333,
        "127.0.0.5",
        6,
    )


def test_env_beats_yaml_for_every_section(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml",
        {"duckdb": {"path": "yaml.duckdb"}, "limits": {"max_body_bytes": 10}},
    )
    env = {"ARROWPORT_DUCKDB_PATH": "env.duckdb", "ARROWPORT_LIMITS_MAX_BODY_BYTES": "20"}
    settings = load_settings(path, {}, env)
    assert settings.duckdb.path == "env.duckdb"
    assert settings.limits.max_body_bytes == 20
    assert load_settings(path, {"duckdb.path": "flag.duckdb"}, env).duckdb.path == "flag.duckdb"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"api": {"port": 4444}})
    assert load_settings(None, {}, {"ARROWPORT_CONFIG": str(path)}).api.port == 4444
    explicit = write_yaml(tmp_path / "d.yaml", {"api": {"port": 5555}})
    assert load_settings(explicit, {}, {"ARROWPORT_CONFIG": str(path)}).api.port == 5555


def test_seed_variables_exactly_as_written() -> None:
    environ = {
        "ARROWPORT_API_HOST": "0.0.0.0",
        "ARROWPORT_API_PORT": "8888",
        "ARROWPORT_ENABLE_METRICS": "true",
    }
    settings = load_settings(None, {}, environ)
    assert settings.api.host == "0.0.0.0"
    assert settings.api.port == 8888
    assert settings.api.enable_metrics is True
    off = load_settings(None, {}, {"ARROWPORT_ENABLE_METRICS": "false"})
    assert off.api.enable_metrics is False


def test_seed_metrics_variable_beats_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {"api": {"enable_metrics": False}})
    settings = load_settings(path, {}, {"ARROWPORT_ENABLE_METRICS": "true"})
    assert settings.api.enable_metrics is True


def test_streams_from_yaml(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "c.yaml",
        {"streams": {"clicks": {"table": "click_events", "mode": "replace", "chunk_size": 9}}},
    )
    stream = load_settings(path, {}, {}).streams["clicks"]
    assert (stream.table, stream.mode, stream.chunk_size) == ("click_events", "replace", 9)


def test_upsert_options_of_a_stream_locked_to_another_mode_are_refused(tmp_path: Path) -> None:
    locked = {"mode": "append", "key_columns": ["id"], "locked": True}
    path = write_yaml(tmp_path / "c.yaml", {"streams": {"clicks": locked}})
    with pytest.raises(
        ConfigError, match=r"streams\.clicks: .*key_columns .*locked to mode append"
    ):
        load_settings(path, {}, {})
    path = write_yaml(tmp_path / "c.yaml", {"streams": {"c": locked | {"mode": "upsert"}}})
    assert load_settings(path, {}, {}).streams["c"].key_columns == ["id"]
    # Unlocked, they are the keys of a request that asks for mode upsert.
    path = write_yaml(tmp_path / "c.yaml", {"streams": {"c": locked | {"locked": False}}})
    assert load_settings(path, {}, {}).streams["c"].key_columns == ["id"]
    path = write_yaml(
        tmp_path / "c.yaml",
        {"streams": {"c": {"mode": "replace", "duplicate_keys": "last_wins", "locked": True}}},
    )
    with pytest.raises(ConfigError, match=r"duplicate_keys apply to mode upsert only"):
        load_settings(path, {}, {})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"api": {"hots": "x"}}, "api.hots"),
        ({"apii": {"host": "x"}}, "apii"),
        ({"api": {"port": "eighty"}}, "api.port"),
        ({"api": {"port": 70000}}, "api.port"),
        ({"api": {"enable_metrics": "perhaps"}}, "api.enable_metrics"),
        ({"compression": {"algorithm": "brotli"}}, "compression.algorithm"),
        ({"defaults": {"chunk_size": 0}}, "defaults.chunk_size"),
        ({"limits": {"max_body_bytes": -1}}, "limits.max_body_bytes"),
        ({"streams": {"clicks": {"mode": "merge"}}}, "streams.clicks.mode"),
        ({"streams": {"clicks": {"table": "bad;name"}}}, "streams.clicks.table"),
        ({"streams": {"clicks": {"colour": "red"}}}, "streams.clicks.colour"),
        ({"api": "not a section"}, "api"),
    ],
)
def test_invalid_yaml_values_name_the_key(tmp_path: Path, data: dict[str, Any], key: str) -> None:
    path = write_yaml(tmp_path / "c.yaml", data)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {}, {})
    message = str(caught.value)
    assert key in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("ARROWPORT_API_PORT", "abc", "api.port"),
        ("ARROWPORT_ENABLE_METRICS", "maybe", "api.enable_metrics"),
        ("ARROWPORT_DEFAULTS_CHUNK_SIZE", "-3", "defaults.chunk_size"),
    ],
)
def test_invalid_env_values_name_key_and_variable(variable: str, value: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {}, {variable: value})
    assert key in str(caught.value)
    assert variable in str(caught.value)


def test_invalid_flag_value_names_key() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"api.port": -1}, {})
    assert "api.port" in str(caught.value)
    assert "command line" in str(caught.value)


# -- `arrowport settings` and the README ---------------------------------------------------------


def settings_rows() -> list[list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "arrowport", "settings"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_settings_command_lists_every_setting() -> None:
    rows = settings_rows()
    keys = [row[0].strip("`") for row in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == model_keys()
    defaults = Settings()
    for row in rows:
        key = row[0].strip("`")
        variables = re.findall(r"ARROWPORT_[A-Z0-9_]+", row[1])
        assert "ARROWPORT_" + key.replace(".", "_").upper() in variables
        default = lookup(defaults, key)
        shown = row[2].strip("`")
        assert shown == ("unset" if default is None else repr(default))
        assert row[3], f"{key} has no description"


def _try_load(environ: dict[str, str]) -> Settings | ConfigError:
    try:
        return load_settings(None, {}, environ)
    except ConfigError as exc:
        return exc


def test_every_documented_variable_is_honoured() -> None:
    """Each variable the table lists reaches its setting: a junk value is refused naming the
    key, or (for free-text settings) lands verbatim."""
    for row in settings_rows():
        key = row[0].strip("`")
        for variable in re.findall(r"ARROWPORT_[A-Z0-9_]+", row[1]):
            junk = "junk-value-xyz"
            outcome = _try_load({variable: junk})
            if isinstance(outcome, ConfigError):
                assert key in str(outcome), (variable, str(outcome))
            else:
                value = lookup(outcome, key)
                assert value == junk or value == [junk], (variable, value)


def test_readme_configuration_table_matches_settings() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    documented = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in readme.splitlines()
        if re.match(r"^\|\s*`[a-z0-9_]+(\.[a-z0-9_]+)?`\s*\|\s*`?ARROWPORT_", line)
    ]
    assert documented, "README.md has no configuration table"
    assert documented == settings_rows()


# -- end to end ----------------------------------------------------------------------------------


class PlainServe(ArrowportProcess):
    """``arrowport serve`` without the fixture's ``--port 0 --db``: config decides."""

    def start(self, timeout: float = 30.0) -> ArrowportProcess:
        # Only the HTTP side is under test here; never collide on the default Flight port.
        self.extra_env = {"ARROWPORT_FLIGHT_PORT": "0"} | self.extra_env
        return super().start(timeout)

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "arrowport", "serve"]
        if self.config is not None:
            path = self.workdir / "config.yaml"
            path.write_text(yaml.safe_dump(self.config))
            cmd += ["--config", str(path)]
        return cmd + self.extra_args


def refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_end_to_end_env_beats_yaml(tmp_path: Path) -> None:
    yaml_port, env_port = free_port(), free_port()
    config = {
        "api": {"port": yaml_port, "enable_metrics": False},
        "duckdb": {"path": "from_yaml.duckdb"},
    }
    env = {
        "ARROWPORT_API_PORT": str(env_port),
        "ARROWPORT_DUCKDB_PATH": "from_env.duckdb",
        "ARROWPORT_ENABLE_METRICS": "true",
    }
    with PlainServe(tmp_path, config=config, env=env) as server:
        assert server.port == env_port
        assert httpx.get(f"http://127.0.0.1:{env_port}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{env_port}/metrics").status_code == 200
        assert refused(f"http://127.0.0.1:{yaml_port}/health")
        assert server.ready["database"] == "from_env.duckdb"
    assert (tmp_path / "from_env.duckdb").exists()
    assert not (tmp_path / "from_yaml.duckdb").exists()


def test_end_to_end_flags_beat_env(tmp_path: Path) -> None:
    env_port, flag_port = free_port(), free_port()
    config = {"api": {"port": free_port()}, "duckdb": {"path": "from_yaml.duckdb"}}
    env = {"ARROWPORT_API_PORT": str(env_port), "ARROWPORT_DUCKDB_PATH": "from_env.duckdb"}
    flag_db = tmp_path / "from_flag.duckdb"
    args = ["--port", str(flag_port), "--db", str(flag_db)]
    with PlainServe(tmp_path, config=config, env=env, args=args) as server:
        assert server.port == flag_port
        assert httpx.get(f"http://127.0.0.1:{flag_port}/health").status_code == 200
        assert refused(f"http://127.0.0.1:{env_port}/health")
    assert flag_db.exists()
    assert not (tmp_path / "from_env.duckdb").exists()
    assert not (tmp_path / "from_yaml.duckdb").exists()


def test_seed_variables_end_to_end(tmp_path: Path) -> None:
    """The seed's three variables together; no YAML, no flags (the default database path)."""
    port = free_port()
    env = {
        "ARROWPORT_API_HOST": "127.0.0.2",
        "ARROWPORT_API_PORT": str(port),
        "ARROWPORT_ENABLE_METRICS": "false",
    }
    with PlainServe(tmp_path, env=env) as server:
        assert server.port == port
        assert httpx.get(f"http://127.0.0.2:{port}/health").status_code == 200
        assert httpx.get(f"http://127.0.0.2:{port}/metrics").status_code == 404
        assert refused(f"http://127.0.0.1:{port}/health")
    assert (tmp_path / "data" / "db.duckdb").exists()


def run_serve(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "arrowport", "serve", "--db", str(tmp_path / "x.duckdb"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=clean_env(**env),
    )


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("api:\n  hots: 127.0.0.1\n", "api.hots"),
        ("api:\n  port: eighty\n", "api.port"),
        ("api:\n  port: 70000\n", "api.port"),
        ("duckdb:\n  threads: 0\n", "duckdb.threads"),
        ("streams:\n  clicks:\n    mode: merge\n", "streams.clicks.mode"),
        ("api: [unclosed\n", "config.yaml"),
        ("- just\n- a list\n", "config.yaml"),
        ("? [a, b]\n: 1\n", "config.yaml"),  # a complex key: not a setting, no traceback
    ],
)
def test_invalid_config_file_stops_serve(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, needle)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("api:\n  port: 1\n  host: [unclosed\n")
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, "YAML", "line")


TOKEN = "{name: ops, secret_hash: 'sha256:%s', scopes: [admin]}" % ("0" * 64)


@pytest.mark.parametrize(
    ("text", "args", "env", "needles"),
    [
        # A second section of the same name dropped the first's tokens: authentication off.
        (f"auth:\n  tokens: [{TOKEN}]\nauth:\n  public_metrics: true\n", (), {}, ("line 3",)),
        ("streams:\n  a: {table: x}\n  a: {table: y}\n", (), {}, ("line 3", "'a'")),
        # Set but empty (`${VAR}` of an unset one) turned the file's tokens, or TLS, off.
        (f"auth:\n  tokens: [{TOKEN}]\n", (), {"ARROWPORT_AUTH_TOKENS": ""}, ("auth.tokens",)),
        ("", (), {"ARROWPORT_TLS_CERT_FILE": " "}, ("tls.cert_file", "empty")),
        # A section that is not a mapping was replaced by the one setting given over it.
        (
            f"auth:\n- {TOKEN}\n",
            (),
            {"ARROWPORT_AUTH_PUBLIC_METRICS": "true"},
            ("auth", "mapping"),
        ),
        ("api: 5\n", ("--port", "0"), {}, ("api", "mapping")),
    ],
)
def test_a_setting_hidden_or_emptied_stops_serve(
    tmp_path: Path, text: str, args: tuple[str, ...], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    """Mistakes that had started the server with authentication or TLS silently off."""
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_serve(tmp_path, "--config", str(path), *args, **env)
    assert_one_line_refusal(result, *needles)


@pytest.mark.parametrize(
    "text",
    [
        "auth:\n- {name: admin, secret_hash: 'ap_admin_Vq3xSecretValue'}\n",
        "ducklake: 'postgres:dbname=x password=hunter2'\n",
        "tls: '-----BEGIN PRIVATE KEY----- MIIEv'\n",
    ],
)
def test_refusals_of_secret_sections_quote_no_value(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result)
    for secret in ("Vq3x", "hunter2", "MIIEv"):
        assert secret not in result.stderr


@pytest.mark.parametrize("scopes", [["admin"], ["read"], ["ingest", "admin"], []])
def test_a_stream_limit_that_would_hold_nothing_back_is_refused(scopes: list[str]) -> None:
    token = {"name": "t", "secret_hash": "sha256:" + "0" * 64, "scopes": scopes}
    limited = json.dumps([token | {"streams": ["a"]}])
    with pytest.raises(ConfigError, match=r"auth\.tokens\.0\.streams"):
        load_settings(environ={"ARROWPORT_AUTH_TOKENS": limited})
    assert load_settings(environ={"ARROWPORT_AUTH_TOKENS": json.dumps([token])}).auth.tokens
    ingest = json.dumps([token | {"scopes": ["ingest", "read"], "streams": ["a"]}])
    assert load_settings(environ={"ARROWPORT_AUTH_TOKENS": ingest}).auth.tokens[0].streams == ["a"]


def test_missing_config_file_stops_serve(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--config", str(tmp_path / "nowhere.yaml"))
    assert_one_line_refusal(result, "nowhere.yaml")
    result = run_serve(tmp_path, ARROWPORT_CONFIG=str(tmp_path / "gone.yaml"))
    assert_one_line_refusal(result, "gone.yaml")


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_config_file_variable_stops_serve(tmp_path: Path, value: str) -> None:
    """`ARROWPORT_CONFIG=${CONFIG}` with CONFIG unset started the server on its defaults:
    another database, and none of the file's tokens or streams."""
    result = run_serve(tmp_path, "--port", "0", "--flight-port", "0", ARROWPORT_CONFIG=value)
    assert_one_line_refusal(result, "ARROWPORT_CONFIG", "empty")
    assert result.returncode == 2
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("ARROWPORT_API_PORT", "abc", "api.port"),
        ("ARROWPORT_ENABLE_METRICS", "maybe", "api.enable_metrics"),
        ("ARROWPORT_LOGGING_LEVEL", "loud", "logging.level"),
    ],
)
def test_invalid_environment_stops_serve(
    tmp_path: Path, variable: str, value: str, key: str
) -> None:
    result = run_serve(tmp_path, **{variable: value})
    assert_one_line_refusal(result, key, variable)


def test_invalid_flag_stops_serve(tmp_path: Path) -> None:
    result = run_serve(tmp_path, "--port", "99999")
    assert_one_line_refusal(result, "api.port")


# -- start-up refusals: durations, ports, the config file itself, the database path -------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("limits:\n  shutdown_timeout_seconds: .inf\n", "limits.shutdown_timeout_seconds"),
        ("limits:\n  shutdown_timeout_seconds: 1.0e+300\n", "limits.shutdown_timeout_seconds"),
        ("limits:\n  query_timeout_seconds: .inf\n", "limits.query_timeout_seconds"),
        ("limits:\n  query_timeout_seconds: 1.0e+300\n", "limits.query_timeout_seconds"),
        ("limits:\n  body_timeout_seconds: .nan\n", "limits.body_timeout_seconds"),
        ("group_commit:\n  max_wait_ms: .inf\n", "group_commit.max_wait_ms"),
        ("group_commit:\n  max_wait_ms: 1.0e+300\n", "group_commit.max_wait_ms"),
        ("api:\n  header_timeout_seconds: .inf\n", "api.header_timeout_seconds"),
        ("delivery:\n  idempotency_window_hours: 1.0e+300\n", "delivery.idempotency_window_hours"),
        (
            "ducklake:\n  maintenance_interval_seconds: .inf\n",
            "ducklake.maintenance_interval_seconds",
        ),
        ("api:\n  port: true\n", "api.port"),
        ("flight:\n  port: false\n", "flight.port"),
        ("limits:\n  max_columns: true\n", "limits.max_columns"),
    ],
)
def test_unusable_numbers_stop_serve(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert_one_line_refusal(run_serve(tmp_path, "--config", str(path)), key)


def test_an_infinite_duration_from_the_environment_stops_serve(tmp_path: Path) -> None:
    variable = "ARROWPORT_LIMITS_SHUTDOWN_TIMEOUT_SECONDS"
    result = run_serve(tmp_path, **{variable: "inf"})
    assert_one_line_refusal(result, "limits.shutdown_timeout_seconds", variable)


def test_every_float_setting_is_a_bounded_duration() -> None:
    """A float setting is a duration by its name's unit, so the bound above applies to it."""
    for key, _, _, _ in settings_rows_raw():
        section, _, name = key.rpartition(".")
        field = (
            Settings.model_fields[section].annotation.model_fields[name]  # type: ignore[union-attr]
            if section
            else Settings.model_fields[name]
        )
        if "float" in str(field.annotation):
            assert name.endswith(("_seconds", "_ms", "_hours")), key
    year = 365 * 24 * 3600
    assert load_settings(overrides={"limits.shutdown_timeout_seconds": year})
    with pytest.raises(ConfigError, match="one year"):
        load_settings(overrides={"limits.shutdown_timeout_seconds": year + 1})


def settings_rows_raw() -> list[tuple[str, str, str, str]]:
    from arrowport.config import settings_table

    return settings_table()


def test_a_config_file_that_is_not_utf8_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00")
    assert_one_line_refusal(run_serve(tmp_path, "--config", str(path)), "config.yaml", "UTF-8")


def alias_bomb(levels: int, width: int) -> str:
    """A valid YAML document whose every level repeats the one before ``width`` times."""
    nodes = ["&a0 [" + ", ".join(["xxxxxxxxxx"] * width) + "]"]
    for level in range(1, levels):
        nodes.append(f"&a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return f"api:\n  allowed_hosts: [{', '.join(nodes)}]\n  cors_origins: *a{levels - 1}\n"


@pytest.mark.parametrize("levels", [3, 8])
def test_yaml_aliases_stop_serve_at_once(tmp_path: Path, levels: int) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(alias_bomb(levels, 9))
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, "config.yaml", "alias")
    assert len(result.stderr) < 500


def test_an_oversized_or_deeply_nested_config_file_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("# padding\n" * 200_000)
    assert_one_line_refusal(run_serve(tmp_path, "--config", str(path)), "config.yaml", "bytes")
    path.write_text("api: " + "[" * 100_000)
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, "config.yaml")


def test_a_long_refused_value_is_shown_as_an_excerpt(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("api:\n  port: " + "x" * 100_000 + "\n")
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, "api.port")
    assert len(result.stderr) < 500


def test_a_true_port_from_the_environment_still_parses_numbers(tmp_path: Path) -> None:
    assert load_settings(environ={"ARROWPORT_API_PORT": "8123"}).api.port == 8123
    with pytest.raises(ConfigError, match=r"api\.port"):
        load_settings(overrides={"api.port": True})


@pytest.mark.parametrize(
    ("args", "env"),
    [(("--db", ""), {}), (("--db", "   "), {}), ((), {"ARROWPORT_DUCKDB_PATH": ""})],
)
def test_an_empty_database_path_stops_serve(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "arrowport", "serve", "--port", "0", "--flight-port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env=clean_env(**env),
    )
    assert_one_line_refusal(result, "duckdb.path")
    assert result.returncode == 2


def test_memory_is_still_a_database_path() -> None:
    assert load_settings(overrides={"duckdb.path": ":memory:"}).duckdb.path == ":memory:"


def test_a_file_in_place_of_the_database_directory_stops_serve(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    result = run_serve(tmp_path, "--db", str(tmp_path / "afile" / "x.duckdb"))
    assert_one_line_refusal(result, "afile")


def test_a_database_directory_that_cannot_be_made_stops_serve(tmp_path: Path) -> None:
    # Nobody, root included, makes a directory in /proc: the error any user meets when the
    # database's directory cannot be created.
    result = run_serve(tmp_path, "--db", "/proc/arrowport_nowhere/x.duckdb")
    assert_one_line_refusal(result, "arrowport_nowhere")


def test_cors_origins_are_normalised() -> None:
    settings = load_settings(
        overrides={"api.cors_origins": ["http://App.example.com:3000/", "HTTPS://b.example:443"]}
    )
    assert settings.api.cors_origins == ["http://app.example.com:3000", "https://b.example"]
    settings = load_settings(environ={"ARROWPORT_API_CORS_ORIGINS": "http://A.example/, *"})
    assert settings.api.cors_origins == ["http://a.example", "*"]


def test_a_date_yaml_cannot_build_stops_serve(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("streams:\n  s:\n    table: 2024-13-45\n")
    assert_one_line_refusal(run_serve(tmp_path, "--config", str(path)), "config.yaml")


@pytest.mark.parametrize(
    ("setting", "value"),
    [("max_temp_directory_size", "huge"), ("memory_limit", "lots")],
)
def test_a_size_duckdb_cannot_read_stops_serve(tmp_path: Path, setting: str, value: str) -> None:
    """max_temp_directory_size: huge was a traceback; memory_limit: lots "cannot open database
    ...: Parser Error", naming no setting. A bad setting, so exit 2 (it was 1, as for a database
    that cannot be opened)."""
    path = write_yaml(tmp_path / "config.yaml", {"duckdb": {setting: value}})
    result = run_serve(tmp_path, "--config", str(path))
    assert_one_line_refusal(result, f"duckdb.{setting}", repr(value))
    assert result.returncode == 2


def test_a_metrics_port_in_use_stops_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = {"api": {"metrics_port": port, "enable_metrics": True}}
        path = write_yaml(tmp_path / "config.yaml", config)
        result = run_serve(tmp_path, "--config", str(path), "--port", "0", "--flight-port", "0")
    assert_one_line_refusal(result, "cannot serve metrics", str(port))
