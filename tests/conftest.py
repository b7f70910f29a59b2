"""Every async test runs on both asyncio and trio; every store test on both
SQLite and a real PostgreSQL server (found, or started, once per session when
a test first asks for it: see tests/pgserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from laneway.store import EventStore, open_store
from tests.ci import missing
from tests.netns import NetworkNamespace, network_namespace
from tests.pgserver import (
    Cluster,
    PostgresMissing,
    PostgresServer,
    bindir,
    chosen_server,
    postgres_server,
)
from tests.stores import StoreFactory


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # pytest keeps a session fixture's skip or failure: the search runs once.
    try:
        chosen = chosen_server()
    except PostgresMissing as exc:
        missing(str(exc))
    with chosen as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """A fresh, empty database of its own for the test."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new database of either kind, as ``--db`` names it."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "laneway.db")


@pytest.fixture
def store_factory(store_db: str) -> Iterator[StoreFactory]:
    """Opens stores on one new database (each a "process" of its own); closes
    whatever the test left open."""
    factory = StoreFactory(store_db)
    try:
        yield factory
    finally:
        factory.close_all()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """A new store of each kind, for the behaviour every store shares."""
    # The file database sits in a directory that does not exist yet.
    if request.param == "postgres":
        db = request.getfixturevalue("pg_url")
    else:
        db = ":memory:" if request.param == "memory" else str(tmp_path / "sub" / "db.sqlite")
    s = open_store(db)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def namespace() -> Iterator[NetworkNamespace]:
    """A network namespace of the test's own (see tests/netns.py)."""
    with network_namespace() as ns:
        yield ns


@pytest.fixture
def veth_postgres(namespace: NetworkNamespace) -> Iterator[Cluster]:
    """A cluster of the test's own, listening on the host's end of the
    namespace's pair (and on 127.0.0.1, as a process on the host reaches it)."""
    try:
        bindir()
    except PostgresMissing as exc:
        missing(str(exc))
    with postgres_server(listen=["127.0.0.1", namespace.host_interface]) as server:
        yield server
