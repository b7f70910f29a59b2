from __future__ import annotations

import base64
import itertools
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from laneway.models import (
    STATUSES,
    AgentSpec,
    ConversationRecord,
    ConversationUpdate,
    Event,
    EventFilter,
    InvalidCursor,
    NewEvent,
    Order,
    Status,
    utc_now,
)
from laneway.store import DatabaseInUse, NotFound, SQLiteEventStore, _sqlite_schema
from laneway.store._append import prepare
from laneway.store._sqlite_query import event_where, search_sql, seq_window
from laneway.store._sqlite_writer import INSERT_EVENT


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteEventStore]:
    # The file database sits in a directory that does not exist yet.
    path = ":memory:" if request.param == "memory" else str(tmp_path / "sub" / "db.sqlite")
    s = SQLiteEventStore(path)
    try:
        yield s
    finally:
        s.close()


def new_record(status: Status = "idle", title: str = "t") -> ConversationRecord:
    now = utc_now()
    return ConversationRecord(
        id=uuid.uuid4().hex,
        title=title,
        status=status,
        agent=AgentSpec("echo", {"n": 1}),
        max_steps=10,
        created_at=now,
        updated_at=now,
    )


def create(
    store: SQLiteEventStore, status: Status = "idle", events: Sequence[NewEvent] = ()
) -> str:
    record = new_record(status)
    if status == "queued":
        record = msgspec.structs.replace(record, queue_order=store.last_queue_order() + 1)
    store.create_conversation(record, events)
    return record.id


def msg(text: str, source: str = "user") -> NewEvent:
    return msgspec.convert({"kind": "message", "source": source, "data": {"text": text}}, NewEvent)


def all_events(store: SQLiteEventStore, cid: str) -> list[Event]:
    return store.events_after(cid, 0, 10_000)


def read_pragma(store: SQLiteEventStore, pragma: str) -> object:
    with store._read() as conn:
        return conn.execute(f"PRAGMA {pragma}").fetchone()[0]


def database_at_version(
    path: str, version: int, conversations: Sequence[tuple[ConversationRecord, Sequence[NewEvent]]]
) -> None:
    """Leave at ``path`` a database as a laneway of schema ``version`` wrote it;
    in plain SQL, since this store writes the columns later versions added."""
    conn = _sqlite_schema.connect(path, reader=False)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_sqlite_schema, "MIGRATIONS", _sqlite_schema.MIGRATIONS[:version])
            _sqlite_schema.migrate(conn)
        for r, events in conversations:
            conn.execute(
                "INSERT INTO conversations (id, title, status, agent, max_steps, created_at,"
                " updated_at, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.id,
                    r.title,
                    r.status,
                    msgspec.json.encode(r.agent).decode(),
                    r.max_steps,
                    r.created_at,
                    r.updated_at,
                    len(events),
                ),
            )
            rows = [
                (r.id, seq, eid, r.updated_at, *fields)
                for seq, (eid, *fields) in enumerate(prepare(events), 1)
            ]
            conn.executemany(INSERT_EVENT, rows)
    finally:
        conn.close()


# -- conversations -------------------------------------------------------------


def test_create_and_get(store: SQLiteEventStore) -> None:
    record = new_record("idle", title="hello")
    stored = store.create_conversation(record, [msg("a"), NewEvent("status", "system", {})])
    assert [e.seq for e in stored] == [1, 2]
    assert all(e.conversation_id == record.id and len(e.id) == 32 for e in stored)
    got = store.get_conversation(record.id)
    assert got == msgspec.structs.replace(record, last_seq=2)
    assert store.get_conversation("nope") is None
    assert all_events(store, record.id) == stored


def test_create_without_events(store: SQLiteEventStore) -> None:
    cid = create(store)
    assert store.get_conversation(cid).last_seq == 0  # type: ignore[union-attr]
    assert store.append(cid, [msg("x")])[0].seq == 1


def test_list_newest_first_with_cursor_and_status(store: SQLiteEventStore) -> None:
    statuses: list[Status] = ["idle", "running", "idle", "paused", "idle", "running", "idle"]
    ids = [create(store, status) for status in statuses]

    def collect(status: Status | None, limit: int) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            page, cursor = store.list_conversations(status=status, limit=limit, cursor=cursor)
            assert len(page) <= limit
            seen += [r.id for r in page]
            if cursor is None:
                return seen

    for limit in (1, 2, 3, 7, 50):
        assert collect(None, limit) == ids[::-1]
        expected = [cid for cid, s in zip(ids, statuses, strict=True) if s == "idle"][::-1]
        assert collect("idle", limit) == expected
    assert collect("error", 3) == []
    # Exactly `limit` rows left: no cursor for an empty next page.
    page, cursor = store.list_conversations(status="idle", limit=4, cursor=None)
    assert len(page) == 4
    assert cursor is None


def test_list_returns_full_records(store: SQLiteEventStore) -> None:
    record = new_record("paused")
    store.create_conversation(record, [msg("a")])
    store.append(record.id, [], ConversationUpdate(steps_done=3, last_error="oops"))
    [got], _ = store.list_conversations(status=None, limit=5, cursor=None)
    assert got == store.get_conversation(record.id)
    assert (got.steps_done, got.last_error, got.last_seq) == (3, "oops", 1)
    assert got.agent == AgentSpec("echo", {"n": 1})


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE_CURSORS = [
    "",
    "garbage",
    "!!!!",
    "é",
    b64(b"not json"),
    b64(b"[]"),
    b64(b'{"r": "x"}'),
    b64(b'{"r": 1, "extra": 2}'),
    b64(b'{"s": 1, "o": "sideways"}'),
    b64(b'{"r": true}'),
]


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
def test_invalid_cursors(store: SQLiteEventStore, cursor: str) -> None:
    cid = create(store, events=[msg("a")])
    with pytest.raises(InvalidCursor):
        store.list_conversations(status=None, limit=1, cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.search_events(cid, EventFilter(), order="asc", limit=1, cursor=cursor)


def test_cursor_of_one_query_is_refused_by_another(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg("a"), msg("b"), msg("c")])
    create(store)
    _, list_cursor = store.list_conversations(status=None, limit=1, cursor=None)
    _, asc_cursor = store.search_events(cid, EventFilter(), order="asc", limit=1, cursor=None)
    assert list_cursor is not None
    assert asc_cursor is not None
    with pytest.raises(InvalidCursor):
        store.search_events(cid, EventFilter(), order="asc", limit=1, cursor=list_cursor)
    with pytest.raises(InvalidCursor):
        store.list_conversations(status=None, limit=1, cursor=asc_cursor)
    with pytest.raises(InvalidCursor):
        store.search_events(cid, EventFilter(), order="desc", limit=1, cursor=asc_cursor)


def test_counts(store: SQLiteEventStore) -> None:
    assert store.count_conversations(status=None) == 0
    assert store.count_by_status() == dict.fromkeys(STATUSES, 0)
    for status in ["idle", "idle", "running", "error"]:
        create(store, status)  # type: ignore[arg-type]
    assert store.count_conversations(status=None) == 4
    assert store.count_conversations(status="idle") == 2
    assert store.count_conversations(status="stuck") == 0
    counts = store.count_by_status()
    assert list(counts) == list(STATUSES)
    assert counts == {**dict.fromkeys(STATUSES, 0), "idle": 2, "running": 1, "error": 1}


def test_delete_removes_conversation_and_events(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg("a"), msg("b")])
    other = create(store, events=[msg("c")])
    assert store.delete_conversation(cid) is True
    assert store.get_conversation(cid) is None
    assert store.get_event(cid, 1) is None
    assert store.count_events(cid, EventFilter()) == 0
    assert all_events(store, cid) == []
    assert store.delete_conversation(cid) is False
    with pytest.raises(NotFound):
        store.append(cid, [msg("late")])
    with store._read() as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert [e.seq for e in all_events(store, other)] == [1]


# -- appends ---------------------------------------------------------------------


def test_append_assigns_gap_free_seqs(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg("first")])
    returned: list[Event] = []
    for size in [1, 3, 1, 0, 5, 2] * 5:
        returned += store.append(cid, [msg(f"m{i}") for i in range(size)])
    stored = all_events(store, cid)
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert stored[1:] == returned
    assert len({e.id for e in stored}) == len(stored)
    assert store.get_conversation(cid).last_seq == len(stored)  # type: ignore[union-attr]
    # Timestamps are in the stored fixed-width form and never go backwards.
    timestamps = [e.timestamp for e in stored]
    assert timestamps == sorted(timestamps)
    assert all(len(t) == len("2025-01-01T00:00:00.000000Z") for t in timestamps)


def test_concurrent_appends_from_8_threads(store: SQLiteEventStore) -> None:
    cids = [create(store, events=[msg("start")]) for _ in range(3)]
    appended = dict.fromkeys(cids, 1)
    count_lock = threading.Lock()
    start = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(60):
                cid = cids[(n + i) % len(cids)]
                size = 1 + (n + i) % 3
                stored = store.append(cid, [msg(f"{n}-{i}-{j}") for j in range(size)])
                first = stored[0].seq
                assert [e.seq for e in stored] == list(range(first, first + size))
                with count_lock:
                    appended[cid] += size
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for cid in cids:
        seqs = [e.seq for e in all_events(store, cid)]
        assert seqs == list(range(1, appended[cid] + 1))
        assert store.get_conversation(cid).last_seq == appended[cid]  # type: ignore[union-attr]


def _queued_appends(
    store: SQLiteEventStore, appends: list[tuple[str, list[NewEvent]]]
) -> list[list[Event] | BaseException]:
    """Run ``appends`` from threads that all queue while the test holds the write
    lock, so that one of them commits the whole batch in one transaction."""
    outcomes: list[list[Event] | BaseException] = [[] for _ in appends]

    def work(index: int, cid: str, events: list[NewEvent]) -> None:
        try:
            outcomes[index] = store.append(cid, events)
        except BaseException as exc:
            outcomes[index] = exc

    threads = [
        threading.Thread(target=work, args=(i, cid, events))
        for i, (cid, events) in enumerate(appends)
    ]
    with store._writer.lock:
        for t in threads:
            t.start()
        for _ in range(10_000):
            with store._writer._queue_lock:
                if len(store._writer._queue) == len(appends):
                    break
            threading.Event().wait(0.001)
        assert len(store._writer._queue) == len(appends)
    for t in threads:
        t.join(timeout=30)
    return outcomes


def test_queued_appends_commit_together_and_keep_their_own_outcome(
    store: SQLiteEventStore,
) -> None:
    a, b = create(store, events=[msg("a")]), create(store, events=[msg("b")])
    outcomes = _queued_appends(
        store, [(a, [msg("a2"), msg("a3")]), ("missing", [msg("x")]), (b, [msg("b2")])]
    )
    first, missing, second = outcomes
    assert isinstance(missing, NotFound)
    assert isinstance(first, list)
    assert [e.seq for e in first] == [2, 3]
    assert isinstance(second, list)
    assert [e.seq for e in second] == [2]
    assert all_events(store, a)[1:] == first
    assert all_events(store, b)[1:] == second


def test_a_failing_queued_append_fails_its_whole_batch(store: SQLiteEventStore) -> None:
    a, b = create(store, events=[msg("a")]), create(store, events=[msg("b")])
    store._writer.conn.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON events WHEN NEW.text_cf = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    outcomes = _queued_appends(store, [(a, [msg("fine")]), (b, [msg("BOOM")])])
    # One transaction: neither append is kept, and both callers are told.
    assert all(isinstance(o, sqlite3.IntegrityError) for o in outcomes)
    assert [len(all_events(store, cid)) for cid in (a, b)] == [1, 1]
    assert store.append(a, [msg("next")])[0].seq == 2


def test_append_applies_update_with_events(store: SQLiteEventStore) -> None:
    record = new_record("idle")
    store.create_conversation(record)
    [event] = store.append(
        record.id,
        [NewEvent("status", "system", {"status": "running"})],
        ConversationUpdate(status="running", steps_done=2, last_error="bad"),
    )
    got = store.get_conversation(record.id)
    assert got is not None
    assert (got.status, got.steps_done, got.last_error, got.last_seq) == ("running", 2, "bad", 1)
    assert got.updated_at == event.timestamp
    assert (got.title, got.created_at, got.agent) == (record.title, record.created_at, record.agent)
    # UNSET fields are left alone; last_error=None clears.
    store.append(record.id, [], ConversationUpdate(steps_done=5))
    got = store.get_conversation(record.id)
    assert got is not None
    assert (got.status, got.steps_done, got.last_error, got.last_seq) == ("running", 5, "bad", 1)
    store.append(record.id, [msg("x")], ConversationUpdate(last_error=None))
    got = store.get_conversation(record.id)
    assert got is not None
    assert (got.status, got.steps_done, got.last_error, got.last_seq) == ("running", 5, None, 2)


def test_failed_append_changes_nothing(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg("a")])
    before = store.get_conversation(cid)
    # Make the second insert of the transaction fail, after the update and first insert.
    store._writer.conn.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON events WHEN NEW.text_cf = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        store.append(cid, [msg("fine"), msg("BOOM")], ConversationUpdate(status="running"))
    assert store.get_conversation(cid) == before
    assert [e.seq for e in all_events(store, cid)] == [1]
    assert store.append(cid, [msg("next")])[0].seq == 2


def test_append_to_unknown_conversation(store: SQLiteEventStore) -> None:
    with pytest.raises(NotFound):
        store.append("missing", [msg("x")])
    with pytest.raises(NotFound):
        store.append("missing", [], ConversationUpdate(status="running"))
    assert store.count_conversations(status=None) == 0


def test_append_returns_stored_events(store: SQLiteEventStore) -> None:
    cid = create(store)
    data = {"text": "hi", "nested": {"n": [1, 2.5, None, True]}}
    [event] = store.append(cid, [NewEvent("tool_call", "agent", data)])
    assert event.data == data
    assert event.data is not data
    assert store.get_event(cid, 1) == event


# -- event reads -----------------------------------------------------------------


def test_get_event(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg("a"), msg("b")])
    event = store.get_event(cid, 2)
    assert event is not None
    assert (event.seq, event.kind, event.source) == (2, "message", "user")
    assert event.data == {"text": "b"}
    assert store.get_event(cid, 3) is None
    assert store.get_event(cid, 0) is None
    assert store.get_event("missing", 1) is None


def test_events_after(store: SQLiteEventStore) -> None:
    cid = create(store, events=[msg(str(i)) for i in range(10)])
    assert [e.seq for e in store.events_after(cid, 0, 3)] == [1, 2, 3]
    assert [e.seq for e in store.events_after(cid, 7, 100)] == [8, 9, 10]
    assert store.events_after(cid, 10, 5) == []
    assert store.events_after("missing", 0, 5) == []


def test_text_search_is_case_insensitive(store: SQLiteEventStore) -> None:
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


def build_mixed(store: SQLiteEventStore) -> tuple[str, list[Event]]:
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
    store: SQLiteEventStore, cid: str, flt: EventFilter, order: Order, limit: int
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
    store: SQLiteEventStore,
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


def test_search_full_pages_and_edges(store: SQLiteEventStore) -> None:
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
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = iter(
        [f"2026-01-01T00:00:{second:02d}.000000Z" for second in (1, 2, 3, 2, 1, 4, 5, 5, 6)]
    )
    monkeypatch.setattr("laneway.store._sqlite_writer.utc_now", lambda: next(stamps))
    cid = create(store, events=[msg("0")])
    for i in range(1, 9):
        store.append(cid, [msg(str(i))])
    events = all_events(store, cid)
    # The clock went back from :03 to :02 and :01; the store kept :03.
    assert [e.timestamp[17:19] for e in events] == [
        "01",
        "02",
        "03",
        "03",
        "03",
        "04",
        "05",
        "05",
        "06",
    ]
    with store._read() as conn:
        window = seq_window(
            conn,
            cid,
            EventFilter(since="2026-01-01T00:00:03.000000Z", until="2026-01-01T00:00:05.000000Z"),
        )
        assert (window.after_seq, window.before_seq) == (2, 9)
        later = seq_window(conn, cid, EventFilter(since="2027-01-01T00:00:00.000000Z", after_seq=1))
        assert (later.after_seq, later.before_seq) == (9, None)
        earlier = seq_window(conn, cid, EventFilter(until="2025-01-01T00:00:00.000000Z"))
        assert (earlier.after_seq, earlier.before_seq) == (None, 1)
        assert seq_window(conn, "missing", EventFilter(since="x")).after_seq == 0
    flt = EventFilter(since="2026-01-01T00:00:03.000000Z", until="2026-01-01T00:00:05.000000Z")
    assert [e.seq for e in page_through(store, cid, flt, "desc", 2)] == [8, 7, 6, 5, 4, 3]
    assert store.count_events(cid, flt) == 6


def test_a_reopened_store_never_stamps_earlier_than_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "db.sqlite")
    store = SQLiteEventStore(path)
    cid = create(store, events=[msg("first")])
    store.close()
    monkeypatch.setattr(
        "laneway.store._sqlite_writer.utc_now", lambda: "2000-01-01T00:00:00.000000Z"
    )
    store = SQLiteEventStore(path)
    try:
        [event] = store.append(cid, [msg("after a clock step back")])
        assert event.timestamp == all_events(store, cid)[0].timestamp
    finally:
        store.close()


@pytest.mark.parametrize("version", [1, 2, 4, 5])
def test_older_schemas_migrate_to_one_kind_source_index_and_keep_the_data(
    tmp_path: Path, version: int
) -> None:
    path = str(tmp_path / f"v{version}.db")
    record = new_record()
    cid = record.id
    database_at_version(
        path, version, [(record, [msg("kept"), NewEvent("tool_result", "tool", {})])]
    )
    store = SQLiteEventStore(path)
    try:
        assert read_pragma(store, "user_version") == len(_sqlite_schema.MIGRATIONS)
        with store._read() as conn:
            names = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            }
        assert {"events_kind_source", "conversations_status"} <= names
        assert not names & {"events_timestamp", "events_kind", "events_source"}
        first, second = all_events(store, cid)
        assert store.count_events(cid, EventFilter(since=second.timestamp)) == 2
        assert store.count_events(cid, EventFilter(source="tool")) == 1
        found, _ = store.search_events(
            cid, EventFilter(kind="message"), order="asc", limit=5, cursor=None
        )
        assert found == [first]
    finally:
        store.close()


# -- recovery ----------------------------------------------------------------------


def test_mark_paused_in_one_call_skips_the_gone(store: SQLiteEventStore) -> None:
    first, second = create(store, "queued", [msg("a")]), create(store, "queued")
    stored = store.mark_paused([first, "gone", second], "paused while queued")
    assert sorted(stored) == sorted([first, second])
    expected = {"status": "paused", "reason": "paused while queued"}
    for cid, seq in ((first, 2), (second, 1)):
        [event] = stored[cid]
        assert (event.seq, event.kind, event.data) == (seq, "status", expected)
        assert store.get_event(cid, seq) == event
        got = store.get_conversation(cid)
        assert got is not None
        assert (got.status, got.last_seq, got.updated_at) == ("paused", seq, event.timestamp)
    assert store.mark_paused([], "nothing") == {}


def tool(kind: str, call_id: str) -> NewEvent:
    data: dict[str, object] = {"call_id": call_id, "name": "probe"}
    if kind == "tool_result":
        data["output"] = 1
    return msgspec.convert({"kind": kind, "source": "tool", "data": data}, NewEvent)


def tool_waits(store: SQLiteEventStore) -> int:
    with store._read() as conn:
        return int(conn.execute("SELECT count(*) FROM tool_waits").fetchone()[0])


@pytest.mark.parametrize("how", ["restart", "shutdown"])
def test_open_tool_calls_are_answered_when_runs_are_paused(
    store: SQLiteEventStore, how: str
) -> None:
    cid = create(store, "running")
    store.append(cid, [tool("tool_call", c) for c in ("c1", "c2", "c3", "c4")])
    # c1 and c2 found tokens; c3 and c4 waited for one, and only c3 got it.
    store.note_tools_waiting(cid, ["c3", "c4"])
    store.note_tool_begun(cid, "c3")
    store.append(cid, [tool("tool_result", "c1")])
    assert tool_waits(store) == 1
    if how == "restart":
        reason = "interrupted by restart"
        recovery = store.recover_interrupted(reason, room=0, requeue_reason="", full_reason="")
        assert recovery.paused == [cid]
    else:
        store.mark_paused([cid], reason := "interrupted by shutdown", were_running=True)
    events = all_events(store, cid)
    answers = [(e.data["call_id"], e.data.get("error")) for e in events if e.kind == "tool_result"]
    assert answers == [
        ("c1", None),
        ("c2", f"lost: {reason}"),
        ("c3", f"lost: {reason}"),
        ("c4", f"not run: {reason}"),
    ]
    assert events[-1].data == {"status": "paused", "reason": reason}
    assert tool_waits(store) == 0
    # Nothing is answered twice.
    store.mark_paused([cid], "again", were_running=True)
    assert len([e for e in all_events(store, cid) if e.kind == "tool_result"]) == 4


def test_a_tool_note_for_a_deleted_conversation_is_not_found(store: SQLiteEventStore) -> None:
    cid = create(store)
    store.delete_conversation(cid)
    with pytest.raises(NotFound):
        store.note_tools_waiting(cid, ["c1"])
    other = create(store, events=[msg("a")])
    store.note_tools_waiting(other, ["c1"])
    store.note_tool_begun(other, "c1")
    # Noting a start changes nothing a client sees.
    got = store.get_conversation(other)
    assert got is not None
    assert got.last_seq == 1
    assert all_events(store, other) == store.events_after(other, 0, 10)


# -- schema and connections --------------------------------------------------------


def test_schema_version_is_set(store: SQLiteEventStore) -> None:
    assert read_pragma(store, "user_version") == len(_sqlite_schema.MIGRATIONS)
    assert read_pragma(store, "foreign_keys") == 1


def test_file_database_uses_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "wal.db")
    store = SQLiteEventStore(path)
    try:
        assert read_pragma(store, "journal_mode") == "wal"
        assert read_pragma(store, "busy_timeout") == _sqlite_schema.BUSY_TIMEOUT_MS
        assert store._writer.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    finally:
        store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopen_keeps_data_and_migrates_only_new_versions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = str(tmp_path / "reopen.db")
    store = SQLiteEventStore(path)
    cid = create(store, "running", [msg("kept")])
    store.close()

    # The first migration's CREATE TABLE statements fail if run twice, so reopening
    # succeeds only if just the new migration runs.
    extra = ("CREATE TABLE extra (x INTEGER)",)
    monkeypatch.setattr(_sqlite_schema, "MIGRATIONS", [*_sqlite_schema.MIGRATIONS, extra])
    for round_ in range(2):
        store = SQLiteEventStore(path)
        try:
            assert read_pragma(store, "user_version") == len(_sqlite_schema.MIGRATIONS)
            assert store.get_conversation(cid) is not None
            texts = [e.data["text"] for e in all_events(store, cid)]
            assert texts == ["kept"] + ["more"] * round_
            assert store.append(cid, [msg("more")])[0].seq == 2 + round_
        finally:
            store.close()


def test_one_store_per_database_file(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite")
    first = SQLiteEventStore(path)
    try:
        with pytest.raises(DatabaseInUse, match="in use by another laneway process"):
            SQLiteEventStore(path)
        SQLiteEventStore(":memory:").close()  # private databases share nothing
    finally:
        first.close()
    SQLiteEventStore(path).close()  # closing gave the file back


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "newer.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteEventStore(path)


def test_searches_use_indexes(store: SQLiteEventStore) -> None:
    def plan(sql: str, params: Sequence[object]) -> list[str]:
        with store._read() as conn:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return [row[-1] for row in rows]

    cid = create(store)
    for flt, order in [
        (EventFilter(kind="message"), "asc"),
        (EventFilter(source="user"), "desc"),
        (EventFilter(kind="tool_call", source="agent"), "asc"),
        (EventFilter(text="x", after_seq=2), "desc"),
    ]:
        sql, params = search_sql("seq", cid, flt, order, 10, None)
        details = plan(sql, params)
        assert any("events_kind_source" in d for d in details), (flt, details)
        assert not any(d.startswith("SCAN") for d in details), (flt, details)
        # Each page is merged from index runs already in seq order, never sorted.
        assert not any("TEMP B-TREE" in d for d in details), (flt, details)
        where, params = event_where(cid, flt)
        details = plan(f"SELECT count(*) FROM events WHERE {where}", params)
        assert not any(d.startswith("SCAN") for d in details), (flt, details)
        if flt.text is None:
            # Kind and source alone are counted in the index, never reading a row.
            assert any("COVERING INDEX events_kind_source" in d for d in details), details

    for flt in [
        EventFilter(),
        EventFilter(text="x"),
        EventFilter(since="2020-01-01T00:00:00.000000Z"),
        EventFilter(after_seq=3, before_seq=9),
    ]:
        sql, params = search_sql("seq", cid, flt, "asc", 10, None)
        details = plan(sql, params)
        assert not any(d.startswith("SCAN") for d in details), (flt, details)

    sql = "SELECT pk FROM conversations WHERE status = ? AND pk < ? ORDER BY pk DESC LIMIT ?"
    details = plan(sql, ["idle", 10, 5])
    assert any("conversations_status" in d for d in details), details
    assert not any("TEMP B-TREE" in d for d in details), details


def test_wal_is_copied_into_the_database_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "checkpointed.db"
    store = SQLiteEventStore(str(path), checkpoint_every=5)
    try:
        cid = create(store)
        before = path.stat().st_size
        # Far below the writer's own checkpoint threshold, but past checkpoint_every.
        for _ in range(3):
            store.append(cid, [msg("a"), msg("b")])
        deadline = time.monotonic() + 30  # a guard against a hang, not a timing
        while path.stat().st_size == before:
            assert time.monotonic() < deadline, "no checkpoint copied the WAL"
            time.sleep(0.01)
        assert len(all_events(store, cid)) == 6
        assert store._checkpointer is not None
        thread = store._checkpointer._thread
    finally:
        store.close()
    assert not thread.is_alive()
    memory = SQLiteEventStore(":memory:")
    assert memory._checkpointer is None  # no WAL to copy
    memory.close()


def test_readers_per_thread_and_close(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "readers.db"))
    cid = create(store, events=[msg("a")])

    def read() -> None:
        assert store.get_event(cid, 1) is not None

    for _ in range(3):
        t = threading.Thread(target=read)
        t.start()
        t.join()
    read()
    # Connections of threads that have ended are closed when the next one opens.
    assert len(store._readers) <= 2
    store.close()
    store.close()
    assert store._readers == []
    with pytest.raises(sqlite3.ProgrammingError):
        store.append(cid, [msg("b")])
