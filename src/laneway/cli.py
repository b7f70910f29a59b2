"""The ``laneway`` command line."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from laneway.commands.parsers import add_commands
from laneway.config import ConfigError, Settings, env_name, load_settings, load_tools

log = logging.getLogger("laneway")

# What each setting is for; the flag, its type, choices, default and variable
# are all derived from the Settings field of the same name.
_DESCRIPTIONS: dict[str, str] = {
    "host": "address to bind",
    "port": "port to bind",
    "backend": "event loop: asyncio (uvicorn) or trio (hypercorn)",
    "db": "SQLite database path (or :memory:), or a postgresql:// URL",
    "lanes_mode": "isolated lanes, or the old single shared pool",
    "run_lane_size": "concurrent runs",
    "tool_lane_size": "concurrent tool calls",
    "io_lane_size": "concurrent short blocking calls",
    "run_max_waiting": "runs allowed to queue",
    "tool_max_waiting": "tool calls allowed to queue",
    "io_max_waiting": "io calls allowed to queue",
    "step_timeout_s": "a step longer than this marks the run stuck",
    "shutdown_grace_s": "how long shutdown waits for runs to pause",
    "max_body_bytes": "largest request body accepted",
    "max_header_bytes": "largest request line and headers accepted",
    "api_keys": "accepted API key; repeat for several",
    "agents": "enable a third-party agent (module:factory); repeat for several",
    "tools": "enable a tool for LLM agents (module:function); repeat for several",
    "metrics_auth": "require an API key for /metrics",
    "log_level": "logging level",
    "llm_base_url": "OpenAI-compatible API of the openai agent, e.g. http://127.0.0.1:8080/v1",
    "llm_api_key": "its API key (prefer the variable; else OPENAI_API_KEY is used)",
    "llm_models": "a model conversations may name; repeat; the first is the default",
    "llm_timeout_s": "seconds to wait for the provider, per request and between chunks",
    "llm_max_retries": "retries of a failed provider call (429, 5xx, connection), by the SDK",
    "role": "with PostgreSQL: all, api (HTTP, takes no runs) or worker (runs; health only)",
    "lease_ttl_s": "with PostgreSQL: how long a silent instance keeps its runs",
}
# List settings take one value per flag, so their flags are singular.
_FLAG_NAMES = {
    "api_keys": "--api-key",
    "agents": "--agent",
    "tools": "--tool",
    "llm_models": "--llm-models",
}
_METAVARS = {
    "db": "PATH|URL",
    "api_keys": "KEY",
    "agents": "MODULE:FACTORY",
    "tools": "MODULE:FUNCTION",
    "host": "HOST",
    "llm_base_url": "URL",
    "llm_api_key": "KEY",
    "llm_models": "MODEL",
}


def _add_setting(parser: argparse.ArgumentParser, field: msgspec.structs.FieldInfo) -> None:
    default = field.default
    listed = isinstance(default, list) or field.default_factory is list
    shown = "none" if listed or default == "" else default
    env = env_name(field.name) + (", comma-separated" if listed else "")
    options: dict[str, Any] = {
        "dest": field.name,
        # SUPPRESS keeps flags that were not given out of the namespace, so that
        # the environment and the config file can supply them.
        "default": argparse.SUPPRESS,
        "help": f"{_DESCRIPTIONS[field.name]} (default: {shown}; env {env})",
    }
    kind = get_args(field.type)[0] if get_origin(field.type) is Annotated else field.type
    if listed:
        options["action"] = "append"
    elif kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif get_origin(kind) is Literal:
        options["choices"] = list(get_args(kind))
    elif kind in (int, float):
        options["type"] = kind
        options["metavar"] = "N" if kind is int else "SECONDS"
    if field.name in _METAVARS:
        options["metavar"] = _METAVARS[field.name]
    flag = _FLAG_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
    parser.add_argument(flag, **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laneway",
        description="An agent-conversation server with isolated lanes, and its client.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the HTTP server. Flags beat LANEWAY_* variables, which beat --config.",
    )
    for field in msgspec.structs.fields(Settings):
        _add_setting(serve, field)
    serve.add_argument(
        "--config", default=None, metavar="FILE", help="TOML file of settings (env LANEWAY_CONFIG)"
    )
    add_commands(commands)
    return parser


def is_loopback(host: str) -> bool:
    """Only an address that is loopback, or the name "localhost": any other name
    may resolve beyond this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_warning(settings: Settings) -> str | None:
    """The warning to print when the API is reachable beyond this machine unguarded."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    return (
        f"binding {settings.host} with no API key: anyone who can reach this address can "
        "use the API; set --api-key or LANEWAY_API_KEYS"
    )


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    return settings_from(build_parser().parse_args(argv))


def settings_from(parsed: argparse.Namespace) -> Settings:
    """The settings of ``laneway serve``, from its parsed flags."""
    args = dict(vars(parsed))
    args.pop("command")
    config_file: str | None = args.pop("config")
    flags: dict[str, Any] = args
    return load_settings(flags, config_file=config_file)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":
        # Imported here: the client and rich, which serve does not need.
        from laneway.commands.running import run_command

        return run_command(args)
    try:
        settings = settings_from(args)
        tools = load_tools(settings)
    except ConfigError as exc:
        print(f"laneway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    warning = exposure_warning(settings)
    if warning is not None:
        log.warning(warning)
    # Imported here so that `laneway --help` does not pay for the server imports.
    from laneway.serving import serve

    return serve(settings, tools)


if __name__ == "__main__":
    sys.exit(main())
