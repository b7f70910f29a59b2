"""The network namespace the partition tests put a laneway process in: a
process inside reaches PostgreSQL over the veth pair, not while the pair is
cut, and again once it is restored; and the namespace leaves nothing behind."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from typing import IO

import pytest

from tests.netns import IP, NetworkNamespace, network_namespace
from tests.pgserver import Cluster

GUARD_S = 30.0
# Long enough for a packet that would get through to have done so many times.
HANG_S = 1.5
CONNECT = "import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=2).close()"
# One connection, kept: each line of input is answered by a query on it.
QUERY_EACH_LINE = """
import sys, psycopg
conn = psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=2)
print("connected", flush=True)
for _ in sys.stdin:
    print(conn.execute("SELECT 1").fetchone()[0], flush=True)
"""


def connect_inside(ns: NetworkNamespace, url: str) -> subprocess.CompletedProcess[str]:
    argv = ns.command(sys.executable, "-c", CONNECT, url)
    return subprocess.run(argv, capture_output=True, text=True, timeout=GUARD_S, check=False)


def test_a_process_inside_reaches_postgres_over_the_pair_except_while_cut(
    namespace: NetworkNamespace, veth_postgres: Cluster
) -> None:
    url = veth_postgres.over_tcp(veth_postgres.new_database(), namespace.host_address)
    assert connect_inside(namespace, url).returncode == 0
    namespace.cut()
    cut_off = connect_inside(namespace, url)
    # A timeout, not a refusal: across a partition nothing answers at all.
    assert cut_off.returncode != 0
    assert "timeout expired" in cut_off.stderr
    namespace.restore()
    assert connect_inside(namespace, url).returncode == 0


def test_a_query_in_flight_when_cut_waits_and_completes_once_restored(
    namespace: NetworkNamespace, veth_postgres: Cluster
) -> None:
    url = veth_postgres.over_tcp(veth_postgres.new_database(), namespace.host_address)
    argv = namespace.command(sys.executable, "-c", QUERY_EACH_LINE, url)
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            lines = lines_of(proc.stdout)
            assert lines.get(timeout=GUARD_S) == "connected"
            ask(proc.stdin)
            assert lines.get(timeout=GUARD_S) == "1"
            namespace.cut()
            ask(proc.stdin)
            with pytest.raises(queue.Empty):
                lines.get(timeout=HANG_S)
            namespace.restore()
            assert lines.get(timeout=GUARD_S) == "1"
        finally:
            proc.kill()


def ask(stdin: IO[str]) -> None:
    stdin.write("\n")
    stdin.flush()


def lines_of(stream: IO[str]) -> queue.Queue[str]:
    """The lines ``stream`` yields, as they come, to wait for with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return lines


class Boom(Exception):
    pass


@pytest.mark.parametrize("raising", [False, True], ids=["returning", "raising"])
def test_leaving_deletes_the_namespace_and_its_pair(raising: bool) -> None:
    entered: list[NetworkNamespace] = []

    def body() -> None:
        with network_namespace() as ns:
            entered.append(ns)
            assert ns.name in namespaces()
            assert link_exists(ns.host_veth)
            if raising:
                raise Boom

    if raising:
        with pytest.raises(Boom):
            body()
    else:
        body()
    [ns] = entered
    assert ns.name not in namespaces()
    assert not link_exists(ns.host_veth)


def namespaces() -> set[str]:
    listed = subprocess.run(
        [IP, "netns", "list"], capture_output=True, text=True, timeout=GUARD_S, check=True
    )
    # Each line is a name, then maybe "(id: N)".
    return {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}


def link_exists(name: str) -> bool:
    shown = subprocess.run(
        [IP, "link", "show", "dev", name], capture_output=True, timeout=GUARD_S, check=False
    )
    return shown.returncode == 0
