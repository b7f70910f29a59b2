"""Isolation: how much slower status reads and event searches get while the run
lane is saturated, at the default lane sizes.

The same measurement as a sweep configuration (see :mod:`benchmarks.scenario`),
with runs whose steps block for a second, ten times the run lane's size of them
waiting, and four times as many probes: at the sweep's rate a p99 is little
more than the second-slowest probe, which is mostly the machine's own jitter.

It runs twice: with the sweep's 2 ms of pure-Python CPU per step, and with none
(the issue's "long think_ms" taken literally). A run thread's CPU holds the GIL
that the event loop needs to answer, so the gap between the two shows what CPU
inside runs, rather than the lanes, costs short requests.

The idle p99 the target is judged by is a twin server's, probed in the same
window, alternating with the loaded one (see :mod:`benchmarks.scenario`), so that
the ratio is taken side by side. The ratio to the loaded server's own idle
window, seconds earlier, is reported beside it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from benchmarks.figures import ComponentResult, Figure
from benchmarks.scenario import Scenario, ScenarioResult, run_scenario
from benchmarks.server import ServerOptions
from benchmarks.workload import SimWorkload

TARGET_RATIO = 1.5
RUN_LANE = ServerOptions().run_lane_size
WORKLOAD = SimWorkload(steps=20, think_ms=1000, cpu_ms=2, tools_per_step=2, tool_ms=20)
THINK_ONLY = dataclasses.replace(WORKLOAD, cpu_ms=0)
WORKLOADS = (WORKLOAD, THINK_ONLY)
PROBE_RATE_HZ = 200.0
# 1,000 probes of each kind a window: a p99 is then the tenth-slowest probe.
# The window closes before the first runs end (20 steps of a second).
WINDOW_S = 10.0
# A twin p99 above this multiple of the own idle window's p99 is flagged.
STALL_FACTOR = 2.0


def label(backend: str, workload: SimWorkload) -> str:
    return f"isolation, {backend}, {workload.cpu_ms:g} ms CPU per step"


def scenario(quick: bool, backend: str, workload: SimWorkload) -> Scenario:
    return Scenario(
        label=label(backend, workload),
        server=ServerOptions(backend=backend),
        workload=workload,
        # The lane's own runs, and ten times its size waiting behind them.
        runs=RUN_LANE + 10 * RUN_LANE,
        idle_s=2.0 if quick else WINDOW_S,
        loaded_s=2.0 if quick else WINDOW_S,
        probe_rate_hz=PROBE_RATE_HZ,
        twin=True,
    )


def _twin_stalled(twin_p99: float, idle_p99: float) -> str:
    """A warning when the idle twin was itself much slower than an idle server.

    Then something stalled the whole machine during the window, and a ratio near
    1 says only that both servers waited through it; the load on the same two
    cores may also have slowed the twin."""
    if twin_p99 <= STALL_FACTOR * idle_p99:
        return ""
    return (
        f"the idle twin's p99 was {twin_p99 / idle_p99:.1f}x the loaded server's own idle "
        "window's: the machine stalled during the window; not to be trusted"
    )


def summarise(result: ScenarioResult, workload: SimWorkload) -> ComponentResult:
    figures = []
    for kind, label in (("status", "status read"), ("search", "event search")):
        phases = result.by_kind[kind]
        loaded, twin, idle = phases["loaded"], phases["twin"], phases["idle"]
        figures.append(
            Figure(
                f"{label} loaded p99 / idle twin's p99, side by side ({loaded.p99:.2f} / "
                f"{twin.p99:.2f} ms; p50 {loaded.p50:.2f} / {twin.p50:.2f} ms; "
                f"{loaded.count}/{twin.count} probes)",
                loaded.p99 / twin.p99,
                "",
                TARGET_RATIO,
                "lower",
                note=_twin_stalled(twin.p99, idle.p99),
            )
        )
        figures.append(
            Figure(
                f"{label} loaded p99 / its own idle window's p99 ({idle.p99:.2f} ms, "
                f"p50 {idle.p50:.2f} ms, {idle.count} probes)",
                loaded.p99 / idle.p99,
                "",
                note="windows seconds apart; for comparison",
            )
        )
    return ComponentResult(
        name=result.label,
        method=(
            f"default lanes; {workload.describe()}; {result.runs} started, run lane at window "
            f"open {result.running_at_open} running, {result.waiting_at_open} waiting; "
            f"{PROBE_RATE_HZ:g} probes/s; {result.steps_per_s:.1f} steps/s under load"
            + (f"; {result.probe_failures} probes FAILED" if result.probe_failures else "")
        ),
        figures=figures,
        details={"scenario": result.label, "probe_failures": result.probe_failures},
    )


def run(
    quick: bool, backend: str, workload: SimWorkload, note: Callable[[str], None]
) -> ComponentResult:
    return summarise(run_scenario(scenario(quick, backend, workload), note), workload)
