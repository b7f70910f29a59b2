"""Event reads and searches, the same in every EventStore: filters, counts,
orders and cursors, run against each backend (the ``store`` fixture)."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from laneway.models import (
    Event,
    EventFilter,
    NewEvent,
    Order,
)
from laneway.store import EventStore
from tests.stores import (
    all_events,
    create,
    msg,
    set_clock,
)

# -- event reads -----------------------------------------------------------------


def test_get_event(store: EventStore) -> None:
    cid = create(store, events=[msg("a"), msg("b")])
    event = store.get_event(cid, 2)
    assert event is not None
    assert (event.seq, event.kind, event.source) == (2, "message", "user")
    assert event.data == {"text": "b"}
    assert store.get_event(cid, 3) is None
    assert store.get_event(cid, 0) is None
    assert store.get_event("missing", 1) is None


def test_events_after(store: EventStore) -> None:
    cid = create(store, events=[msg(str(i)) for i in range(10)])
    assert [e.seq for e in store.events_after(cid, 0, 3)] == [1, 2, 3]
    assert [e.seq for e in store.events_after(cid, 7, 100)] == [8, 9, 10]
    assert store.events_after(cid, 10, 5) == []
    assert store.events_after("missing", 0, 5) == []


def test_text_search_is_case_insensitive(store: EventStore) -> None:
    cid = create(
        store,
        events=[
            msg("hello World"),
            msg("Die straße ist lang"),
            msg("ΣΊΣΥΦΟΣ"),
            msg("nothing here"),
            NewEvent("tool_result", "tool", {"text": "hello from a tool"}),
            NewEvent("message", "agent", {"text": 42}),
            NewEvent("message", "agent", {"content": "hello"}),
        ],
    )

    def texts(query: str) -> list[object]:
        page, _ = store.search_events(
            cid, EventFilter(text=query), order="asc", limit=50, cursor=None
        )
        return [e.data["text"] for e in page]

    assert texts("HeLLo") == ["hello World"]
    assert texts("STRASSE") == ["Die straße ist lang"]
    assert texts("Straße") == ["Die straße ist lang"]
    assert texts("σίσυφος") == ["ΣΊΣΥΦΟΣ"]
    assert texts("42") == []
    assert texts("absent") == []
    assert store.count_events(cid, EventFilter(text="hello")) == 1


def build_mixed(store: EventStore) -> tuple[str, list[Event]]:
    cid = create(store, events=[msg("Hello there")])
    specs = [
        ("message", "agent", {"text": "HELLO back"}),
        ("tool_call", "agent", {"name": "hello"}),
        ("tool_result", "tool", {"text": "hello tool"}),
        ("status", "system", {"status": "running"}),
        ("message", "user", {"text": "Straße"}),
        ("error", "system", {"message": "boom"}),
        ("message", "agent", {"text": "strasse"}),
    ]
    for i in range(3):
        for kind, source, data in specs:
            event = msgspec.convert({"kind": kind, "source": source, "data": data}, NewEvent)
            store.append(cid, [event])
        store.append(cid, [msg(f"round {i} hello", source="user"), msg("bye", source="agent")])
    return cid, all_events(store, cid)


def matches(event: Event, flt: EventFilter) -> bool:
    text = event.data.get("text")
    return (
        (flt.kind is None or event.kind == flt.kind)
        and (flt.source is None or event.source == flt.source)
        and (
            flt.text is None
            or (
                event.kind == "message"
                and isinstance(text, str)
                and flt.text.casefold() in text.casefold()
            )
        )
        and (flt.after_seq is None or event.seq > flt.after_seq)
        and (flt.before_seq is None or event.seq < flt.before_seq)
        and (flt.since is None or event.timestamp >= flt.since)
        and (flt.until is None or event.timestamp <= flt.until)
    )


def page_through(
    store: EventStore, cid: str, flt: EventFilter, order: Order, limit: int
) -> list[Event]:
    seen: list[Event] = []
    cursor = None
    while True:
        page, cursor = store.search_events(cid, flt, order=order, limit=limit, cursor=cursor)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            return seen
        assert len(page) == limit


def test_every_filter_combination_pages_without_gaps_or_duplicates(
    store: EventStore,
) -> None:
    cid, events = build_mixed(store)
    since, until = events[5].timestamp, events[-6].timestamp
    for kind, source, text, after, before, lo, hi in itertools.product(
        [None, "message", "status"],
        [None, "user", "agent"],
        [None, "hello", "STRASSE"],
        [None, 3],
        [None, 25],
        [None, since],
        [None, until],
    ):
        flt = EventFilter(
            kind=kind,  # type: ignore[arg-type]
            source=source,  # type: ignore[arg-type]
            text=text,
            after_seq=after,
            before_seq=before,
            since=lo,
            until=hi,
        )
        expected = [e for e in events if matches(e, flt)]
        assert store.count_events(cid, flt) == len(expected), flt
        assert page_through(store, cid, flt, "asc", 4) == expected, flt
        assert page_through(store, cid, flt, "desc", 3) == expected[::-1], flt


def test_search_full_pages_and_edges(store: EventStore) -> None:
    cid, events = build_mixed(store)
    flt = EventFilter()
    full, cursor = store.search_events(cid, flt, order="asc", limit=len(events), cursor=None)
    assert full == events
    assert cursor is None
    assert store.count_events(cid, flt) == len(events)
    page, _ = store.search_events(cid, flt, order="desc", limit=2, cursor=None)
    assert [e.seq for e in page] == [len(events), len(events) - 1]
    # Inclusive timestamp bounds: an exact timestamp finds its own event.
    at = events[7].timestamp
    exact = EventFilter(since=at, until=at)
    page, _ = store.search_events(cid, exact, order="asc", limit=50, cursor=None)
    assert events[7] in page
    assert all(e.timestamp == at for e in page)
    assert store.search_events("missing", flt, order="asc", limit=5, cursor=None) == ([], None)
    assert store.count_events("missing", flt) == 0
    with pytest.raises(ValueError, match="limit"):
        store.search_events(cid, flt, order="asc", limit=0, cursor=None)


def test_time_ranges_are_seq_ranges_even_when_the_clock_steps_back(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = iter(
        [f"2026-01-01T00:00:{second:02d}.000000Z" for second in (1, 2, 3, 2, 1, 4, 5, 5, 6)]
    )
    set_clock(monkeypatch, store, lambda: next(stamps))
    cid = create(store, events=[msg("0")])
    for i in range(1, 9):
        store.append(cid, [msg(str(i))])
    events = all_events(store, cid)
    # The clock went back from :03 to :02 and :01; the store kept :03.
    seconds = [e.timestamp[17:19] for e in events]
    assert seconds == ["01", "02", "03", "03", "03", "04", "05", "05", "06"]
    flt = EventFilter(since="2026-01-01T00:00:03.000000Z", until="2026-01-01T00:00:05.000000Z")
    assert [e.seq for e in page_through(store, cid, flt, "desc", 2)] == [8, 7, 6, 5, 4, 3]
    assert store.count_events(cid, flt) == 6
