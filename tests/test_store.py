"""The behaviour every EventStore shares, run against each backend (the
``store`` fixture: SQLite in memory and in a file, and a real PostgreSQL
server); searches are in test_store_search.py."""

from __future__ import annotations

import base64
import threading

import msgspec
import pytest

from laneway.models import (
    STATUSES,
    AgentSpec,
    ConversationUpdate,
    Event,
    EventFilter,
    InvalidCursor,
    NewEvent,
    Status,
)
from laneway.store import EventStore, NotFound
from tests.stores import (
    StoreFactory,
    all_events,
    count_rows,
    create,
    msg,
    new_record,
    refuse_events_where,
    set_clock,
    tool,
)

# -- conversations -------------------------------------------------------------


def test_create_and_get(store: EventStore) -> None:
    record = new_record("idle", title="hello")
    stored = store.create_conversation(record, [msg("a"), NewEvent("status", "system", {})])
    assert [e.seq for e in stored] == [1, 2]
    assert all(e.conversation_id == record.id and len(e.id) == 32 for e in stored)
    got = store.get_conversation(record.id)
    assert got == msgspec.structs.replace(record, last_seq=2)
    assert store.get_conversation("nope") is None
    assert all_events(store, record.id) == stored


def test_create_without_events(store: EventStore) -> None:
    cid = create(store)
    assert store.get_conversation(cid).last_seq == 0  # type: ignore[union-attr]
    assert store.append(cid, [msg("x")])[0].seq == 1


def test_list_newest_first_with_cursor_and_status(store: EventStore) -> None:
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


def test_list_returns_full_records(store: EventStore) -> None:
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
def test_invalid_cursors(store: EventStore, cursor: str) -> None:
    cid = create(store, events=[msg("a")])
    with pytest.raises(InvalidCursor):
        store.list_conversations(status=None, limit=1, cursor=cursor)
    with pytest.raises(InvalidCursor):
        store.search_events(cid, EventFilter(), order="asc", limit=1, cursor=cursor)


def test_cursor_of_one_query_is_refused_by_another(store: EventStore) -> None:
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


def test_counts(store: EventStore) -> None:
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


def test_delete_removes_conversation_and_events(store: EventStore) -> None:
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
    assert count_rows(store, "events") == 1
    assert [e.seq for e in all_events(store, other)] == [1]


# -- appends ---------------------------------------------------------------------


def test_append_assigns_gap_free_seqs(store: EventStore) -> None:
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


def test_concurrent_appends_from_8_threads(store: EventStore) -> None:
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


def test_append_applies_update_with_events(store: EventStore) -> None:
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


def test_failed_append_changes_nothing(store: EventStore) -> None:
    cid = create(store, events=[msg("a")])
    before = store.get_conversation(cid)
    # The second insert of the transaction fails, after the update and first insert.
    refused = refuse_events_where(store, "NEW.data LIKE '%BOOM%'")
    with pytest.raises(refused):
        store.append(cid, [msg("fine"), msg("BOOM")], ConversationUpdate(status="running"))
    assert store.get_conversation(cid) == before
    assert [e.seq for e in all_events(store, cid)] == [1]
    assert store.append(cid, [msg("next")])[0].seq == 2


def test_append_to_unknown_conversation(store: EventStore) -> None:
    with pytest.raises(NotFound):
        store.append("missing", [msg("x")])
    with pytest.raises(NotFound):
        store.append("missing", [], ConversationUpdate(status="running"))
    assert store.count_conversations(status=None) == 0


def test_append_returns_stored_events(store: EventStore) -> None:
    cid = create(store)
    data = {"text": "hi", "nested": {"n": [1, 2.5, None, True]}}
    [event] = store.append(cid, [NewEvent("tool_call", "agent", data)])
    assert event.data == data
    assert event.data is not data
    assert store.get_event(cid, 1) == event


# -- reopening -------------------------------------------------------------------


def test_a_reopened_store_never_stamps_earlier_than_what_it_holds(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_factory()
    cid = create(store, events=[msg("first")])
    store.close()
    store = store_factory()
    set_clock(monkeypatch, store, lambda: "2000-01-01T00:00:00.000000Z")
    [event] = store.append(cid, [msg("after a clock step back")])
    assert event.timestamp == all_events(store, cid)[0].timestamp


def test_a_reopened_store_keeps_the_data_and_the_queue_order(store_factory: StoreFactory) -> None:
    store = store_factory()
    cid = create(store, "queued", [msg("kept")])
    store.close()
    store = store_factory()
    assert store.last_queue_order() == 1
    assert [e.data for e in all_events(store, cid)] == [{"text": "kept"}]
    assert store.append(cid, [msg("more")])[0].seq == 2


# -- recovery ----------------------------------------------------------------------


def test_mark_paused_in_one_call_skips_the_gone(store: EventStore) -> None:
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


@pytest.mark.parametrize("how", ["restart", "shutdown"])
def test_open_tool_calls_are_answered_when_runs_are_paused(store: EventStore, how: str) -> None:
    cid = create(store, "running")
    store.append(cid, [tool("tool_call", c) for c in ("c1", "c2", "c3", "c4")])
    # c1 and c2 found tokens; c3 and c4 waited for one, and only c3 got it.
    store.note_tools_waiting(cid, ["c3", "c4"])
    store.note_tool_begun(cid, "c3")
    store.append(cid, [tool("tool_result", "c1")])
    assert count_rows(store, "tool_waits") == 1
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
    assert count_rows(store, "tool_waits") == 0
    # Nothing is answered twice.
    store.mark_paused([cid], "again", were_running=True)
    assert len([e for e in all_events(store, cid) if e.kind == "tool_result"]) == 4


def test_a_tool_note_for_a_deleted_conversation_is_not_found(store: EventStore) -> None:
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
