"""The client commands' arguments.

Each command names its handler (``module.function`` under
:mod:`laneway.commands`) instead of importing it, so that parsing, and
``--help``, do not pay for httpx and rich.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, get_args

from laneway.lanes import LANE_NAMES
from laneway.models import EVENT_KINDS, EVENT_SOURCES, STATUSES, IfRunning

DEFAULT_URL = "http://127.0.0.1:8000"


def _connection(parser: argparse.ArgumentParser, *, listing: bool = True) -> None:
    # SUPPRESS: a nested command's parser would otherwise overwrite what its
    # parent parsed with its own default (argparse's subparser behaviour).
    # running.connection() supplies the defaults, the environment's included.
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help=f"the server (default: env LANEWAY_URL, else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help="its API key (default: env LANEWAY_API_KEY)",
    )
    if listing:
        parser.add_argument(
            "--json",
            action="store_true",
            default=argparse.SUPPRESS,
            help="print the server's records as JSON (JSON lines when following)",
        )


def _command(
    commands: Any, name: str, handler: str, help_text: str, *, listing: bool = True
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help_text, description=help_text[0].upper() + help_text[1:] + "."
    )
    _connection(parser, listing=listing)
    parser.set_defaults(handler=handler)
    return parser


def json_object(text: str) -> dict[str, Any]:
    """An argparse type: a JSON object, as an agent's config is."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_commands(commands: Any) -> None:
    """Add the client commands to ``laneway``'s subparsers."""
    chat = _command(
        commands,
        "chat",
        "chat.chat",
        "talk to a conversation in the terminal (Ctrl-C stops a run, then leaves)",
        listing=False,
    )
    chat.add_argument("id", nargs="?", help="a conversation to go on with (default: a new one)")
    chat.add_argument("--agent", metavar="KIND", help="a new conversation's agent (default: echo)")
    chat.add_argument(
        "--config", type=json_object, metavar="JSON", help="the agent's config, a JSON object"
    )
    chat.add_argument("--system", metavar="TEXT", help="the openai agent's system_prompt")
    chat.add_argument("--title", help="a new conversation's title")

    conversations = commands.add_parser(
        "conversations", help="list, show or delete conversations", description="Conversations."
    )
    actions = conversations.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _command(
        actions, "list", "conversations.list_conversations", "list conversations, newest first"
    )
    listing.add_argument("--status", choices=STATUSES, help="only those with this status")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="at most N (default 50; 0: all)"
    )
    _command(actions, "show", "conversations.show", "show a conversation").add_argument("id")
    _command(actions, "delete", "conversations.delete", "delete a conversation").add_argument("id")

    events = _command(commands, "events", "events.events", "list a conversation's events")
    events.add_argument("id")
    events.add_argument("--kind", choices=EVENT_KINDS, help="only events of this kind")
    events.add_argument("--source", choices=EVENT_SOURCES, help="only events from this source")
    events.add_argument(
        "--follow", "-f", action="store_true", help="then print new events as they come"
    )

    send = _command(commands, "send", "conversations.send", "send a user message")
    send.add_argument("id")
    send.add_argument("text")
    send.add_argument(
        "--wait", action="store_true", help="print what the run did, once it has ended"
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long --wait waits (default 60, at most 600)",
    )
    send.add_argument(
        "--if-running",
        choices=get_args(IfRunning),
        help="what the message does to a run in flight (server default: enqueue)",
    )
    send.add_argument("--no-run", action="store_true", help="store it without starting a run")

    for name, help_text in (
        ("pause", "pause a conversation's run at its next step"),
        ("interrupt", "stop a conversation's run now"),
        ("run", "start a run of a conversation"),
    ):
        _command(commands, name, f"conversations.{name}", help_text).add_argument("id")

    _command(commands, "instances", "instances.show", "list the instances sharing the database")
    lanes = _command(commands, "lanes", "lanes.show", "show every lane's counters")
    lanes.add_argument("--watch", "-w", action="store_true", help="refresh the table in place")
    lanes.add_argument(
        "--interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often --watch refreshes (default 1)",
    )
    resizing = lanes.add_subparsers(dest="action", metavar="ACTION")
    resize = _command(resizing, "resize", "lanes.resize", "resize a lane live")
    resize.add_argument("name", choices=LANE_NAMES)
    resize.add_argument("size", type=int)
