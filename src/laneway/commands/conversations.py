"""``laneway conversations list|show|delete``, ``send``, ``pause``,
``interrupt`` and ``run``."""

from __future__ import annotations

import argparse
import itertools

from rich import box
from rich.table import Table
from rich.text import Text

from laneway.client import Conversation, MessageOptions, WaitAnswer
from laneway.commands.render import compact, event_line
from laneway.commands.running import EXIT_ERROR, Session

STATUS_STYLES = {
    "idle": "",
    "queued": "cyan",
    "running": "green",
    "paused": "yellow",
    "finished": "",
    "error": "bold red",
    "stuck": "bold red",
}


def list_conversations(args: argparse.Namespace, session: Session) -> int:
    found = session.client.list_conversations(status=args.status)
    conversations = list(itertools.islice(found, args.limit or None))
    if session.json:
        session.print_json(conversations)
        return 0
    table = Table(
        "id", "status", "agent", "steps", "updated", "title", box=box.SIMPLE_HEAD, show_edge=False
    )
    for column in table.columns[:5]:
        column.no_wrap = True
    for conv in conversations:
        table.add_row(
            conv.id,
            status_text(conv),
            conv.agent.kind,
            str(conv.steps_done),
            conv.updated_at[:19].replace("T", " "),
            conv.title,
        )
    session.console.print(table)
    return 0


def show(args: argparse.Namespace, session: Session) -> int:
    conv = session.client.get_conversation(args.id)
    if session.json:
        session.print_json(conv)
        return 0
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    config = f" {compact(conv.agent.config)}" if conv.agent.config else ""
    rows: list[tuple[str, str | Text]] = [
        ("id", conv.id),
        ("title", conv.title),
        ("status", status_text(conv)),
        ("agent", f"{conv.agent.kind}{config}"),
        ("steps", f"{conv.steps_done} of at most {conv.max_steps}"),
        ("created", conv.created_at),
        ("updated", conv.updated_at),
        ("tokens", f"{conv.usage.prompt_tokens} in, {conv.usage.completion_tokens} out"),
    ]
    if conv.last_error:
        rows.append(("last error", conv.last_error))
    for name, value in rows:
        grid.add_row(name, value)
    session.console.print(grid)
    return 0


def status_text(conv: Conversation) -> Text:
    """Its status, coloured, with its place in the queue or a pause to come."""
    text = Text(conv.status, style=STATUS_STYLES[conv.status])
    if conv.queue_position is not None:
        text.append(f" (position {conv.queue_position})")
    if conv.pause_requested:
        text.append(" (pause requested)")
    return text


def delete(args: argparse.Namespace, session: Session) -> int:
    session.client.delete_conversation(args.id)
    if not session.json:
        session.console.print(f"deleted {args.id}")
    return 0


def send(args: argparse.Namespace, session: Session) -> int:
    options: MessageOptions = {"run": not args.no_run}
    if args.if_running:
        options["if_running"] = args.if_running
    if not args.wait:
        accepted = session.client.send_message(args.id, args.text, **options)
        if session.json:
            session.print_json(accepted)
        else:
            _print_status(session, accepted.conversation, f"sent as event {accepted.event.seq}; ")
        return 0
    options["wait_timeout_s"] = args.timeout
    answer = session.client.send_message(args.id, args.text, wait=True, **options)
    if session.json:
        session.print_json(answer)
    else:
        _print_wait(session, answer)
    return EXIT_ERROR if answer.timed_out else 0


def _print_wait(session: Session, answer: WaitAnswer) -> None:
    for event in answer.events:
        session.console.print(event_line(event))
    if answer.next_cursor is not None:
        session.console.print(f"… more: laneway events {answer.conversation.id}", style="dim")
    if answer.timed_out:
        _print_status(session, answer.conversation, "still going after the wait: ")
    else:
        _print_status(session, answer.conversation, "")


def _print_status(session: Session, conv: Conversation, before: str) -> None:
    session.console.print(Text(f"{conv.id}: {before}").append_text(status_text(conv)))


def pause(args: argparse.Namespace, session: Session) -> int:
    return _control(session, session.client.pause(args.id))


def interrupt(args: argparse.Namespace, session: Session) -> int:
    return _control(session, session.client.interrupt(args.id))


def run(args: argparse.Namespace, session: Session) -> int:
    return _control(session, session.client.run(args.id))


def _control(session: Session, conv: Conversation) -> int:
    if session.json:
        session.print_json(conv)
    else:
        _print_status(session, conv, "")
    return 0
