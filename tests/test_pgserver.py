"""Which PostgreSQL server the tests use: the one named, else one answering on
the usual local port, else a throwaway cluster; and why, when none. The
session's own server stands in for a named or a local one."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from tests import pgserver
from tests.pgserver import URL_VARIABLE, PostgresMissing, PostgresServer, chosen_server


@pytest.fixture
def closed_url() -> Iterator[str]:
    """A URL nothing answers at: its port is bound, so no one else takes it,
    and not listened on, so a connect is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"postgresql://postgres@127.0.0.1:{held.getsockname()[1]}/postgres"


def database_exists(server: PostgresServer, url: str) -> bool:
    name = url.split("?")[0].rsplit("/", 1)[1]
    with psycopg.connect(server.admin_url) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return found is not None


def test_the_named_server_gives_databases_apart_and_drops_them_after(
    postgres: PostgresServer, closed_url: str
) -> None:
    # postgres:// is an alias the tests must still know as PostgreSQL.
    named = postgres.admin_url.replace("postgresql://", "postgres://", 1)
    environ = {URL_VARIABLE: named}
    with chosen_server(environ, closed_url) as one, chosen_server(environ, closed_url) as two:
        urls = [one.new_database(), one.new_database(), two.new_database()]
        assert len(set(urls)) == 3
        for url in urls:
            assert url.startswith("postgresql://")
            psycopg.connect(url).close()
    assert not any(database_exists(postgres, url) for url in urls)


def test_a_named_server_that_does_not_answer_is_an_error_not_a_skip(closed_url: str) -> None:
    with pytest.raises(RuntimeError, match=URL_VARIABLE) as caught:
        chosen_server({URL_VARIABLE: closed_url})
    assert not isinstance(caught.value, PostgresMissing)


def test_a_server_answering_locally_is_used_when_none_is_named(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgserver, "postgres_server", lambda: pytest.fail("started a cluster"))
    with chosen_server({}, postgres.admin_url) as server:
        url = server.new_database()
        assert database_exists(postgres, url)


def test_with_nothing_answering_a_throwaway_cluster_is_started(
    closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []

    @contextmanager
    def fake_cluster() -> Iterator[PostgresServer]:
        started.append("cluster")
        yield PostgresServer("postgresql://nowhere/postgres")

    monkeypatch.setattr(pgserver, "bindir", lambda: Path("/usr/bin"))
    monkeypatch.setattr(pgserver, "postgres_server", fake_cluster)
    with chosen_server({}, closed_url):
        assert started == ["cluster"]


def test_with_no_server_at_all_the_reason_names_every_place_looked(
    closed_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_initdb() -> Path:
        raise PostgresMissing("PostgreSQL's initdb is missing")

    monkeypatch.setattr(pgserver, "bindir", no_initdb)
    with pytest.raises(PostgresMissing) as caught:
        chosen_server({}, closed_url)
    reason = str(caught.value)
    assert f"{URL_VARIABLE} is not set" in reason
    assert closed_url in reason
    assert "refused" in reason
    assert "initdb is missing" in reason
