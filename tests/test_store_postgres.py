"""What only the PostgreSQL store does: several stores (as several laneway
processes would open) on one database, migrations applied once under an
advisory lock, and a database that cannot be reached or written (the behaviour
both stores share is in test_store.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from laneway.models import ConversationUpdate
from laneway.store import PostgresEventStore, _postgres_schema, open_store
from laneway.store.base import StoreUnavailable
from tests.stores import all_events, create, msg


@pytest.fixture
def stores(pg_url: str) -> Iterator[list[PostgresEventStore]]:
    """Two stores on one database, each with a pool of its own."""
    opened = [PostgresEventStore(pg_url), PostgresEventStore(pg_url)]
    try:
        yield opened
    finally:
        for store in opened:
            store.close()


def schema_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM laneway_schema").fetchone()
    assert row is not None
    return int(row[0])


def test_two_stores_appending_to_one_conversation_leave_no_gap_or_duplicate(
    stores: list[PostgresEventStore],
) -> None:
    cid = create(stores[0], events=[msg("start")])
    threads_per_store, appends, errors = 4, 25, []
    start = threading.Barrier(threads_per_store * len(stores))

    def work(store: PostgresEventStore, n: int) -> None:
        try:
            start.wait()
            for i in range(appends):
                size = 1 + (n + i) % 3
                stored = store.append(cid, [msg(f"{n}-{i}-{j}") for j in range(size)])
                first = stored[0].seq
                assert [e.seq for e in stored] == list(range(first, first + size))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=(store, n))
        for store in stores
        for n in range(threads_per_store)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = all_events(stores[1], cid)
    per_store = sum(1 + (n + i) % 3 for n in range(threads_per_store) for i in range(appends))
    assert [e.seq for e in events] == list(range(1, 2 + len(stores) * per_store))
    assert len({e.id for e in events}) == len(events)
    # Stamps follow seqs, whichever store wrote them.
    assert [e.timestamp for e in events] == sorted(e.timestamp for e in events)
    for store in stores:
        assert store.get_conversation(cid).last_seq == len(events)  # type: ignore[union-attr]
        # Nothing is cached: each store reads what the other wrote.
        assert store.cached_conversation(cid) is None


def test_stores_starting_together_migrate_once(pg_url: str) -> None:
    opened: list[PostgresEventStore] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait()
            opened.append(PostgresEventStore(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert schema_version(pg_url) == len(_postgres_schema.MIGRATIONS)
        cid = create(opened[0], events=[msg("a")])
        assert [e.data for e in all_events(opened[3], cid)] == [{"text": "a"}]
    finally:
        for store in opened:
            store.close()


def test_reopen_migrates_only_new_versions(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresEventStore(pg_url)
    cid = create(store, events=[msg("kept")])
    store.close()
    # The first migration's CREATE TABLE statements fail if run twice.
    extra = ("CREATE TABLE extra (x INTEGER)",)
    monkeypatch.setattr(_postgres_schema, "MIGRATIONS", [*_postgres_schema.MIGRATIONS, extra])
    for _ in range(2):
        store = PostgresEventStore(pg_url)
        try:
            assert schema_version(pg_url) == len(_postgres_schema.MIGRATIONS)
            assert [e.data for e in all_events(store, cid)] == [{"text": "kept"}]
        finally:
            store.close()


def test_newer_schema_is_refused(pg_url: str) -> None:
    PostgresEventStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE laneway_schema SET version = 99")
    with pytest.raises(RuntimeError, match="newer"):
        PostgresEventStore(pg_url)


def test_both_url_schemes_open_postgres(pg_url: str) -> None:
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url)
        try:
            assert isinstance(store, PostgresEventStore)
        finally:
            store.close()


def test_a_server_that_cannot_be_reached_is_unavailable() -> None:
    # A socket directory that does not exist: refused at once, whichever
    # server the other tests use.
    with pytest.raises(StoreUnavailable, match="cannot open"):
        PostgresEventStore("postgresql://postgres@/laneway?host=/nonexistent")


def _set_read_only(pg_url: str, read_only: bool) -> None:
    """Make the database's new sessions read-only (or not), and end every
    session on it: the stores' pools replace them with ones that see it."""
    value = "on" if read_only else "off"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        conn.execute("SET default_transaction_read_only = off")  # this session may change it
        conn.execute(f"ALTER DATABASE {dbname} SET default_transaction_read_only = {value}")
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def test_a_database_refusing_writes_is_unavailable_until_one_succeeds(pg_url: str) -> None:
    store = PostgresEventStore(pg_url)
    try:
        cid = create(store, events=[msg("a")])
        _set_read_only(pg_url, True)
        # The sessions ended are replaced unseen, by read-only ones.
        with pytest.raises(StoreUnavailable):
            store.append(cid, [msg("refused")])
        problem = store.write_problem()
        assert problem is not None
        assert "read-only" in problem
        with pytest.raises(StoreUnavailable):
            store.probe_write()
        # Reads go on meanwhile.
        assert [e.data for e in all_events(store, cid)] == [{"text": "a"}]
        _set_read_only(pg_url, False)
        store.probe_write()
        assert store.write_problem() is None
        assert store.append(cid, [msg("b")])[0].seq == 2
    finally:
        store.close()


def test_an_error_with_a_nul_is_kept_with_the_nul_replaced(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        cid = create(store)
        store.append(cid, [msg("x")], ConversationUpdate(status="error", last_error="bad\x00byte"))
        record = store.get_conversation(cid)
        assert record is not None
        assert record.last_error == "bad\ufffdbyte"
    finally:
        store.close()
