from __future__ import annotations

from pathlib import Path

import pytest

from laneway.app import create_app
from laneway.cli import build_parser, exposure_warning, main, parse_settings
from laneway.config import (
    DEFAULTS,
    SETTING_NAMES,
    ConfigError,
    Settings,
    load_settings,
    load_tools,
)
from tests.apiclient import api_client, service


def test_defaults() -> None:
    settings = load_settings({}, {})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.db == ".laneway/laneway.db"
    assert settings.max_body_bytes == 1024 * 1024


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    toml = tmp_path / "laneway.toml"
    toml.write_text('run-lane-size = 3\nio_lane_size = 5\ntool-lane-size = 7\napi_keys = ["t"]\n')
    env = {"LANEWAY_RUN_LANE_SIZE": "4", "LANEWAY_IO_LANE_SIZE": "6", "LANEWAY_API_KEYS": "a, b,"}
    settings = load_settings({"run_lane_size": 2}, env, str(toml))
    assert settings.run_lane_size == 2  # flag
    assert settings.io_lane_size == 6  # environment
    assert settings.tool_lane_size == 7  # file
    assert settings.api_keys == ["a", "b"]


def test_config_file_from_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('backend = "trio"\n')
    assert load_settings({}, {"LANEWAY_CONFIG": str(toml)}).backend == "trio"


def test_environment_values_are_parsed() -> None:
    env = {
        "LANEWAY_METRICS_AUTH": "true",
        "LANEWAY_STEP_TIMEOUT_S": "2.5",
        "LANEWAY_LANES_MODE": "shared",
        "LANEWAY_AGENTS": "pkg.mod:make",
        "LANEWAY_TOOLS": "pkg.mod:search, pkg.other:fetch",
    }
    settings = load_settings({}, env)
    assert settings.metrics_auth is True
    assert settings.step_timeout_s == 2.5
    assert settings.lanes_mode == "shared"
    assert settings.agents == ["pkg.mod:make"]
    assert settings.tools == ["pkg.mod:search", "pkg.other:fetch"]


@pytest.mark.parametrize(
    ("flags", "env", "needle"),
    [
        ({"run_lane_size": 0}, {}, "command line: Expected `int` >= 1 - at `$.run_lane_size`"),
        ({}, {"LANEWAY_PORT": "http"}, "environment"),
        ({}, {"LANEWAY_BACKEND": "gevent"}, "backend"),
        ({}, {"LANEWAY_STEP_TIMEOUT_S": "0"}, "step_timeout_s"),
        ({}, {"LANEWAY_SHUTDOWN_GRACE_S": "inf"}, "shutdown_grace_s"),
        ({"shutdown_grace_s": float("inf")}, {}, "shutdown_grace_s"),
        ({"role": "boss"}, {}, "role"),
        ({"role": "worker"}, {}, "needs a PostgreSQL database"),
        ({}, {"LANEWAY_ROLE": "api", "LANEWAY_DB": "x.db"}, "needs a PostgreSQL database"),
        ({"lease_ttl_s": 0.5}, {}, "lease_ttl_s"),
    ],
)
def test_bad_values_name_source_and_field(
    flags: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env)
    assert needle in str(info.value)


def test_bad_config_files(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_settings({}, {}, str(unknown))
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, {}, str(broken))
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({}, {}, str(tmp_path / "missing.toml"))


def test_every_setting_has_a_flag_with_its_default_in_help() -> None:
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    flags = {"api_keys": "--api-key", "agents": "--agent", "tools": "--tool"}
    for name in SETTING_NAMES:
        flag = flags.get(name, "--" + name.replace("_", "-"))
        assert flag in text, flag
        assert f"LANEWAY_{name.upper()}" in text.replace("\n", " ").replace("  ", ""), name
    for flag in ("--config", "--log-level", "--backend", "--lanes-mode"):
        assert flag in text
    assert f"default: {DEFAULTS.run_lane_size}" in text


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTING_NAMES:
        monkeypatch.delenv(f"LANEWAY_{name.upper()}", raising=False)
    monkeypatch.delenv("LANEWAY_CONFIG", raising=False)


@pytest.mark.usefixtures("clean_environment")
def test_parse_settings_from_argv() -> None:
    settings = parse_settings(
        [
            *("serve", "--port", "9001", "--api-key", "x", "--api-key", "y"),
            *("--lanes-mode", "shared", "--tool", "a.b:c", "--tool", "d:e"),
        ]
    )
    assert settings.port == 9001
    assert settings.api_keys == ["x", "y"]
    assert settings.tools == ["a.b:c", "d:e"]
    assert settings.lanes_mode == "shared"
    assert settings.lanes().mode == "shared"


def test_warns_when_binding_beyond_loopback_without_a_key() -> None:
    assert exposure_warning(Settings()) is None
    assert exposure_warning(Settings(host="::1")) is None
    warning = exposure_warning(Settings(host="0.0.0.0"))
    assert warning is not None
    assert "no API key" in warning
    assert exposure_warning(Settings(host="0.0.0.0", api_keys=["k"])) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("::1234", False),
        ("localhost.example.com", False),
        ("127.example.com", False),
        ("192.168.1.5", False),
    ],
)
def test_only_loopback_addresses_bind_without_a_warning(host: str, loopback: bool) -> None:
    assert (exposure_warning(Settings(host=host)) is None) is loopback


def test_tools_are_loaded_with_the_built_ins() -> None:
    registry = load_tools(Settings(tools=["tests.sample_tools:search"]))
    assert registry.names() == ["current_time", "calculator", "search"]
    assert load_tools(Settings()).names() == ["current_time", "calculator"]


def test_a_tool_that_cannot_be_loaded_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"tools: tool 'tests\.sample_tools:missing'"):
        load_tools(Settings(tools=["tests.sample_tools:search", "tests.sample_tools:missing"]))
    # The app loads its tools as it is made, not when it starts serving.
    with pytest.raises(ConfigError, match=r"nowhere\.at_all"):
        create_app(Settings(db=":memory:", tools=["nowhere.at_all:f"]))


@pytest.mark.usefixtures("clean_environment")
def test_the_server_does_not_start_with_a_bad_tool(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANEWAY_TOOLS", "tests.sample_tools:NOT_CALLABLE")
    assert main(["serve", "--db", ":memory:"]) == 2
    err = capsys.readouterr().err
    assert "laneway: tools: tool 'tests.sample_tools:NOT_CALLABLE'" in err
    assert "is not callable" in err


@pytest.mark.anyio
async def test_the_service_holds_the_enabled_tools() -> None:
    async with api_client(tools=["tests.sample_tools:search"]) as client:
        tools = service(client).agents.tools
        assert tools.names() == ["current_time", "calculator", "search"]
