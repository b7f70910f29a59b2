"""A throwaway PostgreSQL server for the tests: Debian's binaries, a cluster in
a temporary directory, reached through a Unix socket only, always stopped.

``.ci/run`` installs PostgreSQL where it is missing. initdb and postgres refuse
to run as root, so under root they run as the ``postgres`` OS user, which owns
the cluster's directory; the tests connect as the database user ``postgres``
over the socket, with trust authentication.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

START_GUARD_S = 30.0
# Only the socket's file name uses it: the server listens on no TCP port.
PORT = 5432
# A C locale: bytewise text comparison, as the store's own columns ask anyway.
INITDB_ARGS = ("--no-sync", "--encoding=UTF8", "--locale=C.UTF-8")
# Durability is worth nothing for a cluster deleted after the tests, and fsyncs
# would make each test's CREATE DATABASE cost ~100 ms.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


class PostgresMissing(RuntimeError):
    pass


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


class PostgresServer:
    """A running cluster; :meth:`new_database` gives each test a database of its own."""

    def __init__(self, root: Path) -> None:
        self.socket_dir = root / "socket"
        self._names = itertools.count(1)

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={PORT}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            # template0 and FILE_COPY: an empty database copied file by file, the
            # fastest way to make one (~10 ms here).
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return self.url(name)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a fresh cluster, and stop it and delete its files on leaving."""
    bins = bindir()
    root = Path(tempfile.mkdtemp(prefix="laneway-pg-"))
    data, sockets = root / "data", root / "socket"
    data.mkdir()
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        for path in (data, sockets):
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
        settings = ["listen_addresses=", f"unix_socket_directories={sockets}", f"port={PORT}"]
        cmd = [str(bins / "postgres"), "-D", str(data)]
        for setting in (*settings, *FAST_SETTINGS):
            cmd += ["-c", setting]
        log = open(root / "server.log", "wb")  # noqa: SIM115 -- closed with the server
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, **_server_user()
        )
        log.close()
        server = PostgresServer(root)
        _wait_ready(server, proc, root / "server.log")
        yield server
    finally:
        if proc is not None:
            _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PostgresServer, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited early:\n{log.read_text(errors='replace')}")
        try:
            psycopg.connect(server.url("postgres"), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            time.sleep(0.02)
    raise RuntimeError("postgres did not accept connections in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT is a "fast" shutdown: it ends the sessions the tests left open
    # rather than waiting for them.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(START_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
