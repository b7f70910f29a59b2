"""HTTP hot path: requests/s of GET /api/conversations/{id} against GET /health,
a bare Starlette JSON route of the same app, on the same server in the same run.

The load comes from a second process: wrk when it is installed, otherwise
:mod:`benchmarks.loadgen`. The two routes alternate (A, B, A, B) so that any
drift over the run (CPU frequency, other work on the machine) falls on both.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from statistics import mean

import httpx

from benchmarks.figures import ComponentResult, Figure
from benchmarks.server import HOST, Server, ServerOptions, running_server

TARGET_RATIO = 0.5
CONNECTIONS = 8
# Under CPU steal, single spans of either route vary by a third; more
# alternations average that out.
ROUNDS = 3
QUICK_ROUNDS = 2
# Over the measured span, for the process to start and for wrk/loadgen to finish.
PROCESS_GUARD_S = 20.0


def _loadgen(server: Server, path: str, seconds: float) -> float:
    wrk = shutil.which("wrk")
    if wrk is not None:
        url = f"http://{HOST}:{server.port}{path}"
        # wrk takes whole seconds only.
        cmd = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s", url]
        out = subprocess.run(
            cmd, capture_output=True, text=True, check=True, timeout=seconds + PROCESS_GUARD_S
        ).stdout
        found = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if found is None:
            raise RuntimeError(f"cannot read wrk's output:\n{out}")
        return float(found.group(1))
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(server.port),
        "--path",
        path,
        "--connections",
        str(CONNECTIONS),
        "--seconds",
        str(seconds),
    ]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=seconds + PROCESS_GUARD_S
    ).stdout
    count = json.loads(out)
    if count["other"]:
        raise RuntimeError(f"{path} answered {count['other']} requests with a non-200 status")
    return float(count["ok"]) / float(count["seconds"])


def generator_name() -> str:
    if shutil.which("wrk"):
        return f"wrk, 1 thread, {CONNECTIONS} connections"
    return f"python -m benchmarks.loadgen (wrk not found), {CONNECTIONS} keep-alive connections"


def run(quick: bool, backend: str) -> ComponentResult:
    seconds = 1.0 if quick else 2.0
    rounds = QUICK_ROUNDS if quick else ROUNDS
    with running_server(ServerOptions(backend=backend)) as server:
        response = httpx.post(
            server.base_url + "/api/conversations", json={"initial_message": "hi"}, timeout=10.0
        )
        response.raise_for_status()
        route = f"/api/conversations/{response.json()['id']}"
        rates: dict[str, list[float]] = {route: [], "/health": []}
        for _ in range(rounds):
            for path in rates:
                rates[path].append(_loadgen(server, path, seconds))
    conversation, health = mean(rates[route]), mean(rates["/health"])
    return ComponentResult(
        name=f"hot path, {backend}",
        method=(
            f"{generator_name()} in a second process; GET {route.rsplit('/', 1)[0]}/{{id}} "
            f"and GET /health alternated {rounds}x, {seconds:g} s each"
        ),
        figures=[
            Figure(
                "GET /api/conversations/{id}",
                conversation,
                "req/s",
                note="runs: " + ", ".join(f"{r:,.0f}" for r in rates[route]),
            ),
            Figure(
                "GET /health (bare Starlette JSON route)",
                health,
                "req/s",
                note="runs: " + ", ".join(f"{r:,.0f}" for r in rates["/health"]),
            ),
            Figure("ratio conversation/health", conversation / health, "", TARGET_RATIO, "higher"),
        ],
        details={"rates": rates, "seconds": seconds, "generator": generator_name()},
    )
