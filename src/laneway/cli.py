"""The ``laneway`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any, get_args

from laneway.config import (
    DEFAULTS,
    ConfigError,
    LogLevel,
    Settings,
    env_name,
    load_settings,
)

log = logging.getLogger("laneway")

_LOOPBACK = ("127.", "::1", "localhost")


def _help(field: str, text: str) -> str:
    default = getattr(DEFAULTS, field)
    shown = ",".join(default) if isinstance(default, list) else default
    env = env_name(field) + (", comma-separated" if isinstance(default, list) else "")
    return f"{text} (default: {shown or 'none'}; env {env})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="laneway", description="An agent-conversation server with isolated lanes."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the HTTP server. Flags beat LANEWAY_* variables, which beat --config.",
    )
    # SUPPRESS keeps flags that were not given out of the namespace, so that the
    # environment and the config file can supply them.
    add = serve.add_argument
    quiet = argparse.SUPPRESS
    add("--host", default=quiet, help=_help("host", "address to bind"))
    add("--port", type=int, default=quiet, help=_help("port", "port to bind"))
    add(
        "--backend",
        choices=["asyncio", "trio"],
        default=quiet,
        help=_help("backend", "event loop: asyncio (uvicorn) or trio (hypercorn)"),
    )
    add(
        "--db", default=quiet, metavar="PATH", help=_help("db", "SQLite database path, or :memory:")
    )
    add(
        "--lanes-mode",
        choices=["isolated", "shared"],
        default=quiet,
        help=_help("lanes_mode", "isolated lanes, or the old single shared pool"),
    )
    add("--run-lane-size", type=int, default=quiet, help=_help("run_lane_size", "concurrent runs"))
    add(
        "--tool-lane-size",
        type=int,
        default=quiet,
        help=_help("tool_lane_size", "concurrent tool calls"),
    )
    add(
        "--io-lane-size",
        type=int,
        default=quiet,
        help=_help("io_lane_size", "concurrent short blocking calls"),
    )
    add(
        "--run-max-waiting",
        type=int,
        default=quiet,
        help=_help("run_max_waiting", "runs allowed to queue"),
    )
    add(
        "--tool-max-waiting",
        type=int,
        default=quiet,
        help=_help("tool_max_waiting", "tool calls allowed to queue"),
    )
    add(
        "--io-max-waiting",
        type=int,
        default=quiet,
        help=_help("io_max_waiting", "io calls allowed to queue"),
    )
    add(
        "--step-timeout-s",
        type=float,
        default=quiet,
        help=_help("step_timeout_s", "a step longer than this marks the run stuck"),
    )
    add(
        "--shutdown-grace-s",
        type=float,
        default=quiet,
        help=_help("shutdown_grace_s", "how long shutdown waits for runs to pause"),
    )
    add(
        "--max-body-bytes",
        type=int,
        default=quiet,
        help=_help("max_body_bytes", "largest request body accepted"),
    )
    add(
        "--api-key",
        dest="api_keys",
        action="append",
        default=quiet,
        help=_help("api_keys", "accepted API key; repeat for several"),
    )
    add(
        "--agent",
        dest="agents",
        action="append",
        default=quiet,
        metavar="MODULE:FACTORY",
        help=_help("agents", "enable a third-party agent by import path; repeat for several"),
    )
    add(
        "--metrics-auth",
        action=argparse.BooleanOptionalAction,
        default=quiet,
        help=_help("metrics_auth", "require an API key for /metrics"),
    )
    add("--config", default=None, metavar="FILE", help="TOML file of settings (env LANEWAY_CONFIG)")
    add(
        "--log-level",
        choices=list(get_args(LogLevel)),
        default=quiet,
        help=_help("log_level", "logging level"),
    )
    return parser


def is_loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK)


def exposure_warning(settings: Settings) -> str | None:
    """The warning to print when the API is reachable beyond this machine unguarded."""
    if settings.api_keys or is_loopback(settings.host):
        return None
    return (
        f"binding {settings.host} with no API key: anyone who can reach this address can "
        "use the API; set --api-key or LANEWAY_API_KEYS"
    )


def parse_settings(argv: Sequence[str] | None = None) -> Settings:
    args = vars(build_parser().parse_args(argv))
    args.pop("command")
    config_file: str | None = args.pop("config")
    flags: dict[str, Any] = args
    return load_settings(flags, config_file=config_file)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
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

    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
