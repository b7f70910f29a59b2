"""Several laneway instances on one PostgreSQL database: what adding instances
buys, and what sharing a database costs.

One throwaway PostgreSQL cluster serves the whole component, the one the tests
use (:mod:`tests.pgserver`: Debian's binaries, a Unix socket, fsync and
synchronous commit off); each measurement has a database of its own, and every
instance is a ``laneway serve`` process on a free loopback port. The
measurements, one module each under :mod:`benchmarks.cluster`:

- :mod:`~benchmarks.cluster.throughput`: runs per second of 1, 2 and 3
  instances of 8 run tokens each, with I/O-bound steps;
- :mod:`~benchmarks.cluster.api_probes`: status reads and event searches on an
  ``api`` instance while two ``worker`` instances run steps with CPU and tool
  calls, against an idle twin;
- :mod:`~benchmarks.cluster.stream`: from an append on one instance to its SSE
  frame on another;
- :mod:`~benchmarks.cluster.controls`: from a create on an ``api`` instance to
  its run running on a ``worker``, and from an interrupt on the api to that
  run's paused status on the api's stream;
- :mod:`~benchmarks.cluster.appends`: appends from ten concurrent runs into
  PostgreSQL beside SQLite.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.cluster import api_probes, appends, controls, stream, throughput
from benchmarks.cluster.shared import BACKEND, fetch_one
from benchmarks.figures import ComponentResult

LABEL = f"cluster, {BACKEND}"
# Seconds beyond the measured spans: PostgreSQL and 15 servers starting and
# stopping, probe conversations run, creates answered. Measured: 10 s quick,
# 13 s full (29 s and 109 s in all, on 2 cores).
OVERHEAD_S = 12.0


def planned_s(quick: bool) -> float:
    measured = (
        throughput.planned_s(quick)
        + api_probes.planned_s(quick)
        + stream.planned_s(quick)
        + controls.planned_s(quick)
        + appends.planned_s(quick)
    )
    return OVERHEAD_S + measured


def run(quick: bool, note: Callable[[str], None]) -> ComponentResult:
    # Imported here: the tests' helpers are wanted only when this runs.
    from tests.pgserver import postgres_server

    note("starting PostgreSQL")
    with postgres_server() as pg:
        (version,) = fetch_one(pg.new_database(), "SHOW server_version")
        runs = throughput.measure(pg, quick, note)
        probed = api_probes.measure(pg, quick, note)
        followed = stream.measure(pg, quick, note)
        controlled = controls.measure(pg, quick, note)
        appended = appends.measure(pg, quick, note)
    return ComponentResult(
        name=LABEL,
        method=(
            f"laneway instances on one throwaway PostgreSQL {version.split()[0]} (as the tests "
            "start it: Unix socket, fsync and synchronous_commit off), a database per measurement. "
            f"Throughput: {runs.describe()}. Isolation: {probed.describe()}. "
            f"Stream: {followed.describe()}. Controls: {controlled.describe()}. "
            f"Appends: {appended.describe()}"
        ),
        figures=[
            *runs.figures(),
            *probed.figures(),
            *followed.figures(),
            *controlled.figures(),
            *appended.figures(),
        ],
        details={
            "throughput": runs.details(),
            "isolation": probed.details(),
            "stream": followed.details(),
            "controls": controlled.details(),
            "appends": appended.details(),
        },
    )
