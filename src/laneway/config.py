"""Server settings from flags, ``LANEWAY_*`` environment variables and a TOML file.

Precedence, highest first: command-line flags, environment, the TOML file given
with ``--config``, then the defaults below. Every setting has a flag
``--name-with-dashes`` and a variable ``LANEWAY_NAME``. The list settings are
repeatable flags (``--api-key``, ``--agent``, ``--tool``) whose variables
(``LANEWAY_API_KEYS``, ``LANEWAY_AGENTS``, ``LANEWAY_TOOLS``) are comma-separated.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from laneway.agents.llm_provider import LLMProvider
from laneway.cluster.settings import DEFAULT_LEASE_TTL_S, ClusterSettings, Role
from laneway.lanes import LanesConfig, LanesMode
from laneway.store import is_postgres
from laneway.tools import ToolLoadError, ToolRegistry

Backend = Literal["asyncio", "trio"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]

Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]

ENV_PREFIX = "LANEWAY_"
_LIST_FIELDS = ("api_keys", "agents", "tools", "llm_models")
# The key of the OpenAI SDK's own convention, taken when laneway's is not set.
OPENAI_KEY_VARIABLE = "OPENAI_API_KEY"


class ConfigError(ValueError):
    """Settings that cannot be used, with the offending source and field named."""


class Settings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Port = 8000
    backend: Backend = "asyncio"
    db: str = ".laneway/laneway.db"
    lanes_mode: LanesMode = "isolated"
    run_lane_size: Positive = 10
    tool_lane_size: Positive = 16
    io_lane_size: Positive = 8
    run_max_waiting: NonNegative = 10_000
    tool_max_waiting: NonNegative = 1_000
    io_max_waiting: NonNegative = 1_000
    step_timeout_s: Seconds = 300.0
    # Bounded: the servers take the grace as a whole number of seconds.
    shutdown_grace_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 10.0
    max_body_bytes: Positive = 1024 * 1024
    max_header_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1024 * 1024)] = 16 * 1024
    api_keys: list[str] = msgspec.field(default_factory=list)
    # Third-party agents ("package.module:factory") clients may name; built-ins
    # are always available. An allowlist, because naming one imports code.
    agents: list[str] = msgspec.field(default_factory=list)
    # Functions ("package.module:function") LLM agents may call, besides the
    # built-in tools; loaded at startup, so a bad one stops the server there.
    tools: list[str] = msgspec.field(default_factory=list)
    metrics_auth: bool = False
    log_level: LogLevel = "info"
    # The OpenAI-compatible server of the `openai` agent; none when empty.
    llm_base_url: str = ""
    llm_api_key: str = ""
    llm_models: list[str] = msgspec.field(default_factory=list)
    llm_timeout_s: Seconds = 60.0
    llm_max_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    # Only with a PostgreSQL database, which several instances share.
    role: Role = "all"
    lease_ttl_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = DEFAULT_LEASE_TTL_S

    def lanes(self) -> LanesConfig:
        return LanesConfig(
            mode=self.lanes_mode,
            run_size=self.run_lane_size,
            tool_size=self.tool_lane_size,
            io_size=self.io_lane_size,
            run_max_waiting=self.run_max_waiting,
            tool_max_waiting=self.tool_max_waiting,
            io_max_waiting=self.io_max_waiting,
        )

    def cluster(self) -> ClusterSettings:
        return ClusterSettings(role=self.role, lease_ttl_s=self.lease_ttl_s)

    def llm(self) -> LLMProvider | None:
        if not self.llm_base_url:
            return None
        return LLMProvider(
            base_url=self.llm_base_url,
            api_key=self.llm_api_key,
            models=tuple(self.llm_models),
            timeout_s=self.llm_timeout_s,
            max_retries=self.llm_max_retries,
        )


SETTING_NAMES: tuple[str, ...] = Settings.__struct_fields__
DEFAULTS = Settings()


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for field in SETTING_NAMES:
        raw = environ.get(env_name(field))
        if raw is None:
            continue
        if field in _LIST_FIELDS:
            found[field] = [key.strip() for key in raw.split(",") if key.strip()]
        else:
            found[field] = raw
    if "llm_api_key" not in found and OPENAI_KEY_VARIABLE in environ:
        found["llm_api_key"] = environ[OPENAI_KEY_VARIABLE]
    return found


def _from_toml(path: str) -> dict[str, Any]:
    try:
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    # Accept both flag spelling (run-lane-size) and field spelling (run_lane_size).
    return {key.replace("-", "_"): value for key, value in data.items()}


def _convert(values: dict[str, Any], source: str, *, strict: bool) -> dict[str, Any]:
    """Validate one source on its own, so an error names where it came from."""
    try:
        checked = msgspec.convert(values, Settings, strict=strict)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    return {key: getattr(checked, key) for key in values}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Merge the sources by precedence; ``flags`` holds only flags given explicitly."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    path = config_file if config_file is not None else env.get(ENV_PREFIX + "CONFIG")
    if path:
        merged.update(_convert(_from_toml(path), f"config file {path}", strict=True))
    # Environment values are strings; non-strict conversion parses "16" and "true".
    merged.update(_convert(_from_env(env), "environment", strict=False))
    merged.update(_convert(dict(flags or {}), "command line", strict=True))
    settings = msgspec.structs.replace(DEFAULTS, **merged)
    if settings.role != "all" and not is_postgres(settings.db):
        raise ConfigError(
            f"role: {settings.role!r} needs a PostgreSQL database (--db postgresql://...) "
            "that other instances share; a SQLite file has one process, of role 'all'"
        )
    return settings


def load_tools(settings: Settings) -> ToolRegistry:
    """The built-in tools and those the settings enable; one that cannot be
    loaded is a :class:`ConfigError` naming it."""
    try:
        return ToolRegistry.with_builtins(settings.tools)
    except ToolLoadError as exc:
        raise ConfigError(f"tools: {exc}") from exc
