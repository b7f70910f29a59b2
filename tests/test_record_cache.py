from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import msgspec
import pytest

from laneway.models import AgentSpec, ConversationRecord, ConversationUpdate, NewEvent, utc_now
from laneway.store import SQLiteEventStore
from laneway.store._record_cache import RecordCache
from laneway.store._rows import CONVERSATION_COLUMNS, to_record
from tests.test_store_recovery import recover


def record(cid: str, **fields: Any) -> ConversationRecord:
    now = utc_now()
    base = ConversationRecord(cid, "t", "idle", AgentSpec(), 10, now, now)
    return msgspec.structs.replace(base, **fields)


def test_least_recently_used_record_is_evicted() -> None:
    cache = RecordCache(2)
    cache.put(record("a"))
    cache.put(record("b"))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put(record("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert len(cache) == 2


def test_fill_is_refused_after_a_commit_since_the_read() -> None:
    cache = RecordCache(10)
    generation = cache.generation
    cache.update("other", last_seq=1, updated_at="x", update=None)
    cache.fill(record("a"), generation)
    assert cache.get("a") is None
    cache.fill(record("a"), cache.generation)
    assert cache.get("a") is not None


def test_update_sets_absolute_values_and_leaves_unset_fields() -> None:
    cache = RecordCache(10)
    cache.put(record("a", steps_done=3, last_error="old"))
    change = ConversationUpdate(status="running", last_error=None)
    for _ in range(2):  # applying the same commit twice changes nothing more
        cache.update("a", last_seq=7, updated_at="later", update=change)
    got = cache.get("a")
    assert got is not None
    assert (got.status, got.steps_done, got.last_error) == ("running", 3, None)
    assert (got.last_seq, got.updated_at) == (7, "later")


def test_discard_and_capacity_checks() -> None:
    cache = RecordCache(1)
    cache.put(record("a"))
    cache.discard("a")
    cache.discard("never")
    assert cache.get("a") is None
    with pytest.raises(ValueError, match="capacity"):
        RecordCache(0)


def _fresh(store: SQLiteEventStore, cid: str) -> ConversationRecord | None:
    """The record as the database holds it, read past the cache."""
    conn = sqlite3.connect(store.path)
    try:
        row = conn.execute(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (cid,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None else to_record(row)


def test_store_keeps_cached_records_in_step_with_commits(tmp_path: Path) -> None:
    store = SQLiteEventStore(str(tmp_path / "db.sqlite"))
    try:
        rec = record("c1")
        store.create_conversation(rec, [NewEvent("message", "user", {"text": "hi"})])
        assert store.cached_conversation("c1") == _fresh(store, "c1")
        store.append("c1", [], ConversationUpdate(status="running", steps_done=2))
        assert store.cached_conversation("c1") == _fresh(store, "c1")
        assert recover(store).paused == ["c1"]
        cached = store.cached_conversation("c1")
        assert cached == _fresh(store, "c1")
        assert cached is not None
        assert cached.status == "paused"
        assert store.delete_conversation("c1")
        assert store.cached_conversation("c1") is None
        assert store.get_conversation("c1") is None
    finally:
        store.close()


def test_cache_agrees_with_the_database_after_concurrent_reads_and_writes(
    tmp_path: Path,
) -> None:
    # Small enough that reads keep evicting and refilling while writers commit.
    store = SQLiteEventStore(str(tmp_path / "db.sqlite"), cached_records=3)
    cids = [f"c{i}" for i in range(6)]
    try:
        for cid in cids:
            store.create_conversation(record(cid))
        stop = threading.Event()
        errors: list[BaseException] = []

        def write(index: int) -> None:
            try:
                for step in range(150):
                    cid = cids[(index + step) % len(cids)]
                    update = ConversationUpdate(steps_done=step, read_seq=index)
                    store.append(cid, [NewEvent("message", "agent", {"text": "x"})], update)
            except BaseException as exc:
                errors.append(exc)

        def read() -> None:
            try:
                while not stop.is_set():
                    for cid in cids:
                        store.get_conversation(cid)
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        readers = [threading.Thread(target=read) for _ in range(3)]
        for t in readers + writers:
            t.start()
        for t in writers:
            t.join(timeout=60)
        stop.set()
        for t in readers:
            t.join(timeout=60)
        assert errors == []
        for cid in cids:
            cached = store.cached_conversation(cid)
            if cached is not None:
                assert cached == _fresh(store, cid)
    finally:
        store.close()
