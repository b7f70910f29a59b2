"""What only the SQLite store does: batched commits, its pragmas and WAL, its
query plans, its file lock, and its migrations (the behaviour both stores
share is in test_store.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest

from laneway.models import (
    ConversationRecord,
    Event,
    EventFilter,
    NewEvent,
)
from laneway.store import DatabaseInUse, NotFound, SQLiteEventStore, _sqlite_schema
from laneway.store._append import prepare
from laneway.store._sqlite_query import event_where, search_sql, seq_window
from laneway.store._sqlite_writer import INSERT_EVENT
from tests.stores import all_events, create, msg, new_record, set_clock


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteEventStore]:
    # The file database sits in a directory that does not exist yet.
    path = ":memory:" if request.param == "memory" else str(tmp_path / "sub" / "db.sqlite")
    s = SQLiteEventStore(path)
    try:
        yield s
    finally:
        s.close()


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


def test_a_time_range_is_found_as_a_seq_range_by_bisecting(
    store: SQLiteEventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = iter(
        [f"2026-01-01T00:00:{second:02d}.000000Z" for second in (1, 2, 3, 2, 1, 4, 5, 5, 6)]
    )
    set_clock(monkeypatch, store, lambda: next(stamps))
    cid = create(store, events=[msg("0")])
    for i in range(1, 9):
        store.append(cid, [msg(str(i))])
    # Stamped :01 :02 :03 :03 :03 :04 :05 :05 :06, the clock's steps back ignored.
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
