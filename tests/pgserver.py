"""The PostgreSQL server the tests use, and the throwaway cluster they start
when there is no other.

:func:`chosen_server` takes the first of:

1. the server ``LANEWAY_TEST_DATABASE_URL`` names (a ``postgresql://`` URL of a
   database its user can connect to, as a user allowed to create databases);
2. one answering on 127.0.0.1:5432, as the user ``postgres`` (a password, if
   it asks for one, from PGPASSWORD or ~/.pgpass, as libpq reads them);
3. a throwaway cluster (:func:`postgres_server`) from the installed binaries.

Each test gets a database of its own (:meth:`PostgresServer.new_database`);
on a server the tests did not start, the session drops its databases when it
ends. With none of the three, the tests that need PostgreSQL are skipped, or
fail under CI=true (``tests/ci.py``).

The throwaway cluster: Debian's binaries, a cluster in a temporary directory,
reached through a Unix socket, always stopped. ``.ci/run`` installs
PostgreSQL where it is missing. initdb and postgres refuse to run as root, so
under root they run as the ``postgres`` OS user, which owns the cluster's
directory; the tests connect as the database user ``postgres`` over the
socket, with trust authentication. A test that needs it over TCP too (from a
network namespace: tests/netns.py) starts one of its own listening on the
addresses it names, and trusting only clients from their networks.
"""

from __future__ import annotations

import contextlib
import glob
import ipaddress
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

URL_VARIABLE = "LANEWAY_TEST_DATABASE_URL"
# Where a developer's own server, or a CI job's service container, listens.
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Long enough for a server under load, short enough for a filtered port.
PROBE_TIMEOUT_S = 2
START_GUARD_S = 30.0
# Only the socket's file name uses it when the server listens on no TCP port.
PORT = 5432
# A C locale: bytewise text comparison, as the store's own columns ask anyway.
INITDB_ARGS = ("--no-sync", "--encoding=UTF8", "--locale=C.UTF-8")
# Durability is worth nothing for a cluster deleted after the tests, and fsyncs
# would make each test's CREATE DATABASE cost ~100 ms.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresMissing(RuntimeError):
    pass


class PostgresServer:
    """A server the tests make databases on: :meth:`new_database` gives each
    test a database of its own."""

    # Copying template0 file by file is the fastest way to make a database
    # (~10 ms), but only where fsync is off: it checkpoints twice. A server
    # the tests did not start keeps its own default.
    file_copy = False

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        # The pid and a random part: sessions sharing one server (CI jobs, a
        # developer's two terminals) never pick the same name.
        self._prefix = f"laneway_t{os.getpid()}_{secrets.token_hex(3)}_"
        self._names = itertools.count(1)
        self._created: list[str] = []

    def url(self, dbname: str) -> str:
        """The URL of the database ``dbname``: the admin URL with another path."""
        parts = urlsplit(self.admin_url)
        query = f"?{parts.query}" if parts.query else ""
        return f"postgresql://{parts.netloc}/{dbname}{query}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"{self._prefix}{next(self._names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # STRATEGY is new in 15, whose default is no longer FILE_COPY.
            copy = self.file_copy and conn.info.server_version >= 150000
            strategy = " STRATEGY FILE_COPY" if copy else ""
            # template0: empty, whatever an outside server's template1 holds.
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0{strategy}")
        self._created.append(name)
        return self.url(name)

    def drop_databases(self) -> None:
        """Drop the databases made so far, as far as the server lets us: the
        session is over, and a leftover is clutter, not a failure."""
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn,
        ):
            # FORCE (13 and later) ends the sessions a failed test left open.
            force = " WITH (FORCE)" if conn.info.server_version >= 130000 else ""
            for name in self._created:
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f"DROP DATABASE IF EXISTS {name}{force}")


def chosen_server(
    environ: Mapping[str, str] = os.environ, local_url: str = LOCAL_URL
) -> AbstractContextManager[PostgresServer]:
    """The server the tests use (see the module's docstring), to enter once.

    Raises PostgresMissing, saying where it looked, when there is none; and
    RuntimeError when ``LANEWAY_TEST_DATABASE_URL`` names a server that does
    not answer: a server asked for by name is not quietly passed over.
    """
    if named := environ.get(URL_VARIABLE, ""):
        url = _postgresql_url(named)
        if (why := _unanswered(url)) is not None:
            raise RuntimeError(f"{URL_VARIABLE} names a server that does not answer: {why}")
        return outside_server(url)
    if (why_not_local := _unanswered(local_url)) is None:
        return outside_server(local_url)
    try:
        bindir()
    except PostgresMissing as exc:
        raise PostgresMissing(
            f"no PostgreSQL server for the tests: {URL_VARIABLE} is not set, "
            f"none answers at {local_url} ({why_not_local}), and {exc}"
        ) from None
    return postgres_server()


@contextmanager
def outside_server(url: str) -> Iterator[PostgresServer]:
    """A server the tests did not start; leaving drops the databases made on it."""
    server = PostgresServer(url)
    try:
        yield server
    finally:
        server.drop_databases()


def _postgresql_url(url: str) -> str:
    """``url`` under the scheme the tests tell a PostgreSQL URL by
    (``postgres://`` is an alias of it)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise RuntimeError(f"{URL_VARIABLE} is not a postgresql:// URL")
    return f"postgresql://{rest}"


def _unanswered(url: str) -> str | None:
    """Why the server at ``url`` cannot be had; None when it answers."""
    try:
        psycopg.connect(url, connect_timeout=PROBE_TIMEOUT_S).close()
    except psycopg.Error as exc:
        lines = str(exc).strip().splitlines()
        return lines[0] if lines else type(exc).__name__
    return None


def bindir() -> Path:
    """Where initdb and postgres are: pg_config's answer, else Debian's place."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.insert(0, found.stdout.strip())
    for candidate in candidates:
        if candidate and os.access(Path(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    raise PostgresMissing(
        "PostgreSQL's initdb is missing: the PostgreSQL store's tests need a real server "
        "(apt-get install -y postgresql, as .ci/run does)"
    )


def _server_user() -> dict[str, Any]:
    """Popen's arguments that run a command as the ``postgres`` OS user under root.
    Switching user in the child itself, rather than through runuser, keeps
    postgres the process the tests signal."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class Cluster(PostgresServer):
    """The throwaway cluster, reached through its Unix socket, and over TCP at
    the addresses it listens on (:attr:`listen`), on :attr:`port`."""

    file_copy = True

    def __init__(self, root: Path, port: int, listen: Sequence[str]) -> None:
        self.socket_dir = root / "socket"
        self.port = port
        self.listen = tuple(listen)
        super().__init__(f"postgresql://postgres@/postgres?host={self.socket_dir}&port={port}")

    def over_tcp(self, url: str, address: str) -> str:
        """The database ``url`` names, reached over TCP at ``address``, one of
        the addresses the cluster listens on."""
        if address not in self.listen:
            raise ValueError(f"the cluster listens on {self.listen}, not on {address}")
        dbname = urlsplit(url).path.lstrip("/")
        host = f"[{address}]" if ":" in address else address
        return f"postgresql://postgres@{host}:{self.port}/{dbname}"


@contextmanager
def postgres_server(listen: Sequence[str] = ()) -> Iterator[Cluster]:
    """Start a fresh cluster, and stop it and delete its files on leaving.

    It listens on its socket, and over TCP on a free port at each address of
    ``listen``, written with the prefix of its network ("10.213.0.1/30"), or
    bare (127.0.0.1: itself alone). It trusts TCP clients from those networks
    and no others. postgres cannot bind an address no interface has: start
    the cluster after what brings the address (a veth), and stop it before.
    """
    bins = bindir()
    interfaces = [ipaddress.ip_interface(entry) for entry in listen]
    port = _free_port(str(interfaces[0].ip)) if interfaces else PORT
    root = Path(tempfile.mkdtemp(prefix="laneway-pg-"))
    data, sockets, hba = root / "data", root / "socket", root / "pg_hba.conf"
    data.mkdir()
    sockets.mkdir()
    # Not initdb's own file, which trusts 127.0.0.1 and ::1 whatever listen is.
    clients = (f"host all all {interface.network} trust\n" for interface in interfaces)
    hba.write_text("".join(["local all all trust\n", *clients]))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in (data, sockets, hba):
            shutil.chown(path, "postgres", "postgres")
    proc: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [str(bins / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", *INITDB_ARGS],
            check=True,
            capture_output=True,
            cwd=root,
            **_server_user(),
        )
        addresses = ",".join(str(interface.ip) for interface in interfaces)
        settings = [
            f"listen_addresses={addresses}",
            f"unix_socket_directories={sockets}",
            f"port={port}",
            f"hba_file={hba}",
        ]
        cmd = [str(bins / "postgres"), "-D", str(data)]
        for setting in (*settings, *FAST_SETTINGS):
            cmd += ["-c", setting]
        log = open(root / "server.log", "wb")  # noqa: SIM115 -- closed with the server
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, **_server_user()
        )
        log.close()
        server = Cluster(root, port, [str(interface.ip) for interface in interfaces])
        _wait_ready(server, proc, root / "server.log")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _free_port(address: str) -> int:
    """A TCP port free at ``address`` now. postgres binds it an instant later;
    were it taken in between, :func:`_wait_ready` would say so."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def _wait_ready(server: Cluster, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited early:\n{log.read_text(errors='replace')}")
        try:
            psycopg.connect(server.admin_url, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.02)
    else:
        raise RuntimeError("postgres did not accept connections in time")
    # Its TCP sockets were bound before it took any connection; postgres starts
    # with an address it could not bind as long as it bound another.
    for address in server.listen:
        try:
            psycopg.connect(server.over_tcp(server.admin_url, address), connect_timeout=2).close()
        except psycopg.OperationalError as exc:
            text = log.read_text(errors="replace")
            raise RuntimeError(f"postgres does not answer at {address}: {exc}\n{text}") from exc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is a "fast" shutdown: it ends the sessions the tests left open
    # rather than waiting for them.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(START_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
