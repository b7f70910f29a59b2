"""Running one client command: its connection, its console, and what its
failures print and exit with.

Exit statuses: 0 done; 1 the server answered an error, or could not be
reached; 2 a usage error (argparse's own); 130 stopped by Ctrl-C (128 +
SIGINT, as a shell reports it), which ``laneway chat`` documents for itself.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import msgspec
from rich.console import Console

from laneway.client import Client, LanewayError
from laneway.commands.parsers import DEFAULT_URL

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PIPED_WIDTH = 200


@dataclass(frozen=True)
class Session:
    """What a command works with: the server, a client of it, and the console."""

    url: str
    api_key: str | None
    client: Client
    console: Console
    json: bool

    def open_client(self) -> Client:
        """Another client of the same server, for another thread."""
        return Client(self.url, self.api_key)

    def print_json(self, record: object) -> None:
        """One JSON document (a line, for a stream) of the server's records."""
        # Straight to the file: rich would wrap it, and colour it on a terminal.
        self.console.file.write(msgspec.json.encode(record).decode() + "\n")
        self.console.file.flush()


Handler = Callable[[argparse.Namespace, Session], int]


def handler_of(name: str) -> Handler:
    module, function = name.rsplit(".", 1)
    found: Handler = getattr(importlib.import_module(f"laneway.commands.{module}"), function)
    return found


def run_command(args: argparse.Namespace) -> int:
    """Run the command ``args`` were parsed for; its exit status."""
    handler = handler_of(args.handler)
    url = getattr(args, "url", None) or os.environ.get("LANEWAY_URL") or DEFAULT_URL
    api_key = getattr(args, "api_key", None)
    # rich leaves out colour when NO_COLOR is set, and every escape when the
    # output is not a terminal. No markup: what the server sends (titles,
    # messages) is printed as it is, styled only through Text.
    console = Console(highlight=False, markup=False, width=_piped_width())
    try:
        with Client(url, api_key) as client:
            session = Session(url, api_key, client, console, getattr(args, "json", False))
            return handler(args, session)
    except LanewayError as exc:
        fail(error_line(exc))
    except httpx.TransportError as exc:
        fail(f"cannot reach the server at {url}: {exc or type(exc).__name__}")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python from
        # failing again as it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_ERROR


def _piped_width() -> int | None:
    """Piped, rich assumes 80 columns, which squashes a table of 32-character
    ids; a file or a pipe has no width to keep to, so tables get room."""
    if sys.stdout.isatty() or "COLUMNS" in os.environ:
        return None
    return PIPED_WIDTH


def error_line(exc: LanewayError) -> str:
    """The server's message, then its status and code, as in
    "no conversation 'x' (404 not_found)"."""
    return f"{exc.message} ({exc.status} {exc.code})"


def fail(message: str) -> None:
    print(f"laneway: {message}", file=sys.stderr)
