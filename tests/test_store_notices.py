"""What a PostgreSQL store announces: one notice per write that adds events, or
deletes a conversation, sent when it commits and never for one rolled back;
and the notice's text, read back."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from laneway.models import ConversationUpdate
from laneway.store import NotFound, PostgresEventStore
from laneway.store.notices import EVENTS_CHANNEL, EventsNotice
from tests.stores import create, msg, refuse_events_where


class Notices:
    """A session listening on the events channel, as another instance would."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute(f"LISTEN {EVENTS_CHANNEL}")

    def take(self) -> list[EventsNotice]:
        """The notices committed so far: every one is delivered by the time the
        commit returns to its writer, on this same server."""
        self.conn.execute("SELECT 1")  # a round trip, which brings them in
        payloads = [n.payload for n in self.conn.notifies(timeout=0)]
        notices = [EventsNotice.parse(p) for p in payloads]
        assert None not in notices, payloads
        return [n for n in notices if n is not None]


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresEventStore]:
    s = PostgresEventStore(pg_url, instance_id="inst-a")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def notices(pg_url: str) -> Iterator[Notices]:
    listening = Notices(pg_url)
    try:
        yield listening
    finally:
        listening.conn.close()


def test_each_write_that_adds_events_announces_its_last_seq(
    store: PostgresEventStore, notices: Notices
) -> None:
    cid = create(store, events=[msg("a"), msg("b")])
    assert notices.take() == [EventsNotice("inst-a", cid, 2)]
    store.append(cid, [msg("c"), msg("d"), msg("e")])
    store.append(cid, [msg("f")], ConversationUpdate(status="running"))
    assert notices.take() == [EventsNotice("inst-a", cid, 5), EventsNotice("inst-a", cid, 6)]
    other = create(store)  # no events: nothing to follow yet
    assert notices.take() == []
    paused = store.mark_paused([cid, other, "gone"], "stop")
    assert sorted(notices.take(), key=lambda n: n.last_seq or 0) == [
        EventsNotice("inst-a", other, 1),
        EventsNotice("inst-a", cid, paused[cid][-1].seq),
    ]


def test_recovery_announces_every_conversation_it_settles(
    store: PostgresEventStore, notices: Notices
) -> None:
    running = create(store, "running", [msg("a")])
    queued = [create(store, "queued") for _ in range(3)]
    notices.take()
    recovery = store.recover_interrupted("r", room=1, requeue_reason="q", full_reason="f")
    got = {n.conversation_id: n for n in notices.take()}
    assert set(got) == {running, *queued}
    assert recovery.paused == [running]
    for cid, notice in got.items():
        record = store.get_conversation(cid)
        assert record is not None
        assert notice == EventsNotice("inst-a", cid, record.last_seq)


def test_a_delete_is_announced_and_writes_without_events_are_not(
    store: PostgresEventStore, notices: Notices
) -> None:
    cid = create(store, events=[msg("a")])
    notices.take()
    store.note_tools_waiting(cid, ["c1"])
    store.note_tool_begun(cid, "c1")
    assert notices.take() == []
    assert store.delete_conversation(cid)
    assert not store.delete_conversation(cid)
    (deleted,) = notices.take()
    assert deleted == EventsNotice("inst-a", cid, None)
    assert deleted.deleted


def test_a_write_rolled_back_announces_nothing(store: PostgresEventStore, notices: Notices) -> None:
    cid = create(store, events=[msg("a")])
    notices.take()
    with pytest.raises(NotFound):
        store.append("gone", [msg("x")])
    refused = refuse_events_where(store, "NEW.data::text LIKE '%refused%'")
    with pytest.raises(refused):
        store.append(cid, [msg("ok"), msg("refused")])
    assert notices.take() == []
    store.append(cid, [msg("b")])
    # The seq the refused append took was given back: no hole, and no notice of it.
    assert notices.take() == [EventsNotice("inst-a", cid, 2)]


def test_stores_have_their_own_instance_ids(pg_url: str) -> None:
    stores = [PostgresEventStore(pg_url), PostgresEventStore(pg_url)]
    try:
        assert stores[0].instance_id != stores[1].instance_id
        for bad in ("", "two words", "tab\there"):
            with pytest.raises(ValueError, match="one word"):
                PostgresEventStore(pg_url, instance_id=bad)
    finally:
        for s in stores:
            s.close()


@pytest.mark.parametrize(
    "notice",
    [
        EventsNotice("a", "c", 1),
        EventsNotice("a", "c", None),
        EventsNotice("6f1c", "with spaces in it", 12345678901),
        EventsNotice("a", "123", 7),
    ],
)
def test_a_notice_reads_back_as_it_was_written(notice: EventsNotice) -> None:
    payload = notice.payload()
    assert EventsNotice.parse(payload) == notice
    assert len(payload.encode()) < 8000


@pytest.mark.parametrize("payload", ["", "a", "a b", "a b -1", "a b 1.5", " b 1", "a  1", "a b x"])
def test_text_that_is_not_a_notice_is_refused(payload: str) -> None:
    assert EventsNotice.parse(payload) is None
