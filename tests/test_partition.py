"""A laneway instance cut off from PostgreSQL for longer than its leases' TTL.

The instance runs in a network namespace of its own and reaches the database
over a veth pair, which the test cuts (nothing gets through, both ways, as
across a real partition) and later restores. While it is away its runs move to
the instances on the host; once it is back, none of its writes is accepted and
it holds no run it no longer owns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from laneway.cluster.leases import OWNER_LOST, OWNER_LOST_IN_TOOLS
from tests.cluster import sql
from tests.netns import NetworkNamespace
from tests.pgserver import Cluster
from tests.serverproc import ServerProcess, running_server

pytestmark = pytest.mark.cluster

GUARD_S = 60.0
TTL_S = 2.0
RUNS = 8
# Mostly thinking: a run cut off mid-tool is paused, one cut off mid-think goes
# on elsewhere, and the test wants some of the latter.
SIM = {"steps": 20, "think_ms": 150, "tools_per_step": 1, "tool_ms": 15}
C = "/api/conversations"
ALL = {"limit": 500}
FRESH = "heartbeat_at > now() - interval '1 s'"


@contextmanager
def inside(ns: NetworkNamespace, backend: str, url: str, log: Path) -> Iterator[None]:
    """A worker instance inside the namespace, serving on its own loopback
    (nothing here talks to it over HTTP: the database shows what it does)."""
    argv = ns.command(
        sys.executable, "-m", "laneway", "serve", "--backend", backend, "--db", url,
        "--role", "worker", "--lease-ttl-s", str(TTL_S), "--host", "127.0.0.1",
        "--port", "8000", "--shutdown-grace-s", "1",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEWAY_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield
    finally:
        # Its own loopback's port, which nothing here reaches.
        ServerProcess(proc, "", 8000).stop()


def until(what: str, check: Any, guard_s: float = GUARD_S) -> Any:
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def snapshot(url: str) -> list[tuple[Any, ...]]:
    return sql(url, "SELECT conversation_id, seq, id FROM events ORDER BY conversation_id, seq")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_partitioned_instance_loses_its_runs_and_cannot_write_once_back(
    backend: str, namespace: NetworkNamespace, veth_postgres: Cluster, tmp_path: Path
) -> None:
    db = veth_postgres.new_database()
    host_url = veth_postgres.over_tcp(db, "127.0.0.1")
    away_url = veth_postgres.over_tcp(db, namespace.host_address)
    ttl = ["--lease-ttl-s", str(TTL_S)]
    with (
        running_server(backend, ["--db", host_url, "--role", "api", *ttl]) as api,
        httpx.Client(base_url=api.base_url, timeout=GUARD_S) as client,
        inside(namespace, backend, away_url, tmp_path / "inside.log"),
    ):
        [(away,)] = until(
            "the instance inside to register",
            lambda: sql(host_url, "SELECT id FROM instances WHERE role = 'worker'"),
        )
        body = {"agent": {"kind": "sim", "config": SIM}, "max_steps": 100, "initial_message": "go"}
        ids = [client.post(C, json=body).json()["id"] for _ in range(RUNS)]
        until(
            "the instance inside to run them all",
            lambda: (
                sql(
                    host_url,
                    "SELECT count(*) FROM conversations WHERE owner = %s AND status = 'running'",
                    away,
                )
                == [(RUNS,)]
            ),
        )
        namespace.cut()
        cut_at = time.monotonic()
        with running_server(backend, ["--db", host_url, "--role", "worker", *ttl]):
            ended = "status IN ('finished', 'paused') AND owner IS NULL"
            until(
                "every run to end on this side",
                lambda: (
                    sql(host_url, f"SELECT count(*) FROM conversations WHERE {ended}") == [(RUNS,)]
                ),
            )
            before = snapshot(host_url)
            # Well past the TTL on both sides: the instance inside has long
            # given its runs up, and anything it still tries goes nowhere.
            assert time.monotonic() - cut_at > TTL_S
            namespace.restore()
            until(
                "the instance inside to be back",
                lambda: sql(host_url, f"SELECT 1 FROM instances WHERE id = %s AND {FRESH}", away),
            )
            # A few heartbeats of it, back: time for any write it kept to try.
            time.sleep(3 * TTL_S / 3 + 1)
            after = snapshot(host_url)
            held = sql(host_url, "SELECT count(*) FROM conversations WHERE owner = %s", away)
            logs = {
                cid: client.get(f"{C}/{cid}/events", params={"limit": 500}).json() for cid in ids
            }
    assert after == before
    assert held == [(0,)]
    # It stopped its runs itself once it could not renew their leases for a TTL.
    assert "leases expired unrenewed" in (tmp_path / "inside.log").read_text()
    moved = 0
    for cid, page in logs.items():
        events = page["items"]
        owners = [
            (e["data"]["lease"]["fence"], e["data"]["lease"]["owner"])
            for e in events
            if e["kind"] == "status" and "lease" in e["data"]
        ]
        assert owners[0][1] == away, cid
        assert [f for f, _ in owners] == sorted(f for f, _ in owners), cid
        reasons = [e["data"].get("reason") for e in events if e["kind"] == "status"]
        if OWNER_LOST in reasons:
            moved += 1
            assert events[-1]["data"]["status"] == "finished", cid
            assert owners[-1][1] != away, cid
        else:
            assert events[-1]["data"] == {"status": "paused", "reason": OWNER_LOST_IN_TOOLS}, cid
    assert moved > 0
