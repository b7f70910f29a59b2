"""``laneway events ID [--kind K] [--source S] [--follow]``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from laneway.client import Event, EventFilters
from laneway.commands.render import event_line
from laneway.commands.running import Session


def events(args: argparse.Namespace, session: Session) -> int:
    filters: EventFilters = {}
    if args.kind:
        filters["kind"] = args.kind
    if args.source:
        filters["source"] = args.source
    stored = session.client.iter_events(args.id, **filters)
    if not args.follow:
        if session.json:
            session.print_json(list(stored))
        else:
            for event in stored:
                session.console.print(event_line(event))
        return 0
    for event in _followed(session, args.id, stored, filters):
        if session.json:
            session.print_json(event)
        else:
            session.console.print(event_line(event))
    return 0


def _followed(
    session: Session, conversation_id: str, stored: Iterator[Event], filters: EventFilters
) -> Iterator[Event]:
    """The stored events that match, then new ones as they come.

    The stored ones come through the search, filtered by the server; the
    stream has no filters, so new ones are filtered here.
    """
    last_seq = 0
    for event in stored:
        last_seq = event.seq
        yield event
    # The stream begins after the last event that matched, so it replays what
    # the search filtered out between then and now: filtered again here.
    for item in session.client.follow(conversation_id, after_seq=last_seq):
        if isinstance(item, Event) and all(
            getattr(item, name) == value for name, value in filters.items()
        ):
            yield item
