"""What a start makes, in either store, of the runs a stopped process left:
running ones paused, queued ones kept queued in the order they were queued."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from laneway.models import STATUSES, ConversationUpdate, Event, NewEvent, Status, status_event
from laneway.restart import NOT_REQUEUED_REASON, REQUEUE_REASON, RESTART_REASON
from laneway.store import EventStore, SQLiteEventStore, _sqlite_schema
from laneway.store.base import Recovery
from laneway.store.sqlite import _QUEUED
from tests.stores import StoreFactory, all_events, create, msg, new_record, refuse_events_where
from tests.test_store_sqlite import database_at_version, read_pragma

ROOM = 10_000


@pytest.fixture
def store(store_factory: StoreFactory) -> EventStore:
    return store_factory()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    s = SQLiteEventStore(str(tmp_path / "recovery.db"))
    try:
        yield s
    finally:
        s.close()


def recover(store: EventStore, room: int = ROOM) -> Recovery:
    return store.recover_interrupted(
        RESTART_REASON, room=room, requeue_reason=REQUEUE_REASON, full_reason=NOT_REQUEUED_REASON
    )


def queue(store: EventStore, cid: str, place: int | None = None) -> None:
    """Queue ``cid`` at ``place`` in the queue order; by default after all."""
    place = store.last_queue_order() + 1 if place is None else place
    update = ConversationUpdate(status="queued", queue_order=place)
    store.append(cid, [status_event("queued")], update)


def queue_in_one_batch(store: EventStore, places: list[tuple[str, int]]) -> None:
    """Queue each conversation at its place, in this order. In SQLite, from
    threads whose appends one commit takes together: each thread joins the
    writer's queue before the next starts."""
    if not isinstance(store, SQLiteEventStore):
        for place in places:
            queue(store, *place)
        return
    writer = store._writer
    threads = [threading.Thread(target=queue, args=(store, *place)) for place in places]
    with writer.lock:
        for count, thread in enumerate(threads, 1):
            thread.start()
            for _ in range(10_000):
                with writer._queue_lock:
                    if len(writer._queue) == count:
                        break
                threading.Event().wait(0.001)
            assert len(writer._queue) == count
    for thread in threads:
        thread.join(timeout=30)
    for cid, place in places:
        assert store.get_conversation(cid).queue_order == place  # type: ignore[union-attr]


def last_event(store: EventStore, cid: str) -> Event:
    return all_events(store, cid)[-1]


def test_running_runs_are_paused_and_queued_ones_kept_in_the_order_they_were_queued(
    store: EventStore,
) -> None:
    by_status = {status: create(store, status, [msg("a")]) for status in STATUSES}
    later = [create(store, events=[msg(f"q{i}")]) for i in range(5)]
    queue(store, later[4])
    # The places given order them, not the order one commit took them in.
    n = store.last_queue_order()
    queue_in_one_batch(store, [(later[3], n + 3), (later[0], n + 2), (later[2], n + 1)])
    queue(store, later[1])
    recovery = recover(store)
    assert recovery.paused == [by_status["running"]]
    order = [by_status["queued"], later[4], later[2], later[0], later[3], later[1]]
    assert [r.id for r in recovery.requeued] == order
    assert recovery.not_requeued == []
    for record in recovery.requeued:
        # The records as they now are, ready to run from.
        assert record == store.get_conversation(record.id)
        assert record.status == "queued"
        last = last_event(store, record.id)
        assert last.data == {"status": "queued", "reason": REQUEUE_REASON}
        assert (record.last_seq, record.updated_at) == (last.seq, last.timestamp)
    for cid in later:
        # A client reading the log sees it queued, then queued again.
        assert [e.data for e in all_events(store, cid)[1:]] == [
            {"status": "queued"},
            {"status": "queued", "reason": REQUEUE_REASON},
        ]
    paused = last_event(store, by_status["running"])
    assert paused.data == {"status": "paused", "reason": RESTART_REASON}
    for status in ("idle", "paused", "finished", "error", "stuck"):
        assert store.get_conversation(by_status[status]).status == status  # type: ignore[union-attr]
        assert len(all_events(store, by_status[status])) == 1
    # A start that stopped before its runs did anything finds them as it left them.
    again = recover(store)
    assert (again.paused, [r.id for r in again.requeued]) == ([], order)


def test_a_run_queued_again_goes_to_the_back_and_the_order_survives_a_reopen(
    store_factory: StoreFactory,
) -> None:
    store = store_factory()
    first, second, third = (create(store, events=[msg(c)]) for c in "abc")
    for cid in (first, second, third):
        queue(store, cid)
    store.mark_paused([first], "paused while queued")
    store.close()
    store = store_factory()
    # Numbering goes on from what the reopened database holds queued.
    assert store.last_queue_order() == 3
    queue(store, first)
    fourth = create(store, "queued")
    assert [r.id for r in recover(store).requeued] == [second, third, first, fourth]


@pytest.mark.parametrize("room", [0, 2])
def test_queued_runs_past_the_room_are_paused_oldest_kept(store: EventStore, room: int) -> None:
    cids = [create(store, "queued", [msg(str(i))]) for i in range(5)]
    recovery = recover(store, room)
    assert [r.id for r in recovery.requeued] == cids[:room]
    assert recovery.not_requeued == cids[room:]
    for cid in cids[room:]:
        assert store.get_conversation(cid).status == "paused"  # type: ignore[union-attr]
        assert last_event(store, cid).data == {"status": "paused", "reason": NOT_REQUEUED_REASON}
    assert [r.id for r in recover(store, room).requeued] == cids[:room]


def test_recovery_is_one_transaction(store: EventStore) -> None:
    running, queued = create(store, "running"), create(store, "queued")
    refused = refuse_events_where(store, "NEW.data LIKE '%requeued%'")
    with pytest.raises(refused):
        recover(store)
    # The pause written before the failure was rolled back with it.
    assert store.get_conversation(running).status == "running"  # type: ignore[union-attr]
    assert all_events(store, running) == []
    assert all_events(store, queued) == []


def test_the_startup_query_reads_only_the_queued_rows(sqlite_store: SQLiteEventStore) -> None:
    with sqlite_store._read() as conn:
        plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {_QUEUED}"))
    assert "conversations_status" in plan, plan


def test_queued_runs_of_the_previous_schema_keep_their_data_and_the_order_of_their_writes(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "recovery.db")
    # What a server of that version left, written in this order, with no queue
    # order: the time of each conversation's last write is all there is.
    left: list[tuple[int, Status]] = [(2, "queued"), (0, "queued"), (3, "running"), (1, "queued")]
    records = [new_record() for _ in range(4)]
    for n, (index, status) in enumerate(left):
        stamp = f"2030-01-01T00:00:0{n}.000000Z"
        records[index] = msgspec.structs.replace(records[index], status=status, updated_at=stamp)
    database_at_version(db, 5, [(r, [msg(f"m{i}")]) for i, r in enumerate(records)])
    cids = [r.id for r in records]
    store = SQLiteEventStore(db)
    try:
        assert read_pragma(store, "user_version") == len(_sqlite_schema.MIGRATIONS)
        # Numbered second, by the time of its last write.
        expected = msgspec.structs.replace(records[0], last_seq=1, queue_order=2)
        assert store.get_conversation(cids[0]) == expected
        queue(store, later := create(store, events=[msg("later")]))
        recovery = recover(store)
        assert recovery.paused == [cids[3]]
        assert [r.id for r in recovery.requeued] == [cids[2], cids[0], cids[1], later]
        assert [e.data for e in all_events(store, cids[1])] == [
            {"text": "m1"},
            {"status": "queued", "reason": REQUEUE_REASON},
        ]
    finally:
        store.close()


def test_a_status_event_alone_takes_no_place_in_the_queue(store: EventStore) -> None:
    first, second = create(store, events=[msg("a")]), create(store, events=[msg("b")])
    queue(store, first)
    queue(store, second)
    # A "queued" event without the status change (as a restart writes) keeps the place.
    store.append(first, [NewEvent("status", "system", {"status": "queued"})])
    assert [r.id for r in recover(store).requeued] == [first, second]


def test_a_queued_status_without_its_place_is_refused_and_nothing_written(
    store: EventStore,
) -> None:
    cid = create(store, events=[msg("a")])
    with pytest.raises(ValueError, match="queue order"):
        store.append(cid, [status_event("queued")], ConversationUpdate(status="queued"))
    with pytest.raises(ValueError, match="queue order"):
        store.create_conversation(new_record("queued"), [msg("b")])
    assert [e.data for e in all_events(store, cid)] == [{"text": "a"}]
    assert store.count_conversations(status=None) == 1
    assert store.last_queue_order() == 0
