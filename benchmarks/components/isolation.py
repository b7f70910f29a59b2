"""Isolation: how much slower status reads and event searches get while the run
lane is saturated, at the default lane sizes.

The same measurement as a sweep configuration (see :mod:`benchmarks.scenario`),
with runs whose steps block for a second, ten times the run lane's size of them
waiting, and four times as many probes: at the sweep's rate a p99 is little
more than the second-slowest probe, which is mostly the machine's own jitter.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.figures import ComponentResult, Figure
from benchmarks.scenario import Scenario, ScenarioResult, run_scenario
from benchmarks.server import ServerOptions
from benchmarks.workload import SimWorkload

TARGET_RATIO = 1.5
RUN_LANE = ServerOptions().run_lane_size
WORKLOAD = SimWorkload(steps=20, think_ms=1000, cpu_ms=2, tools_per_step=2, tool_ms=20)
PROBE_RATE_HZ = 200.0


def scenario(quick: bool, backend: str) -> Scenario:
    return Scenario(
        label=f"{backend} isolated defaults",
        server=ServerOptions(backend=backend),
        workload=WORKLOAD,
        # The lane's own runs, and ten times its size waiting behind them.
        runs=RUN_LANE + 10 * RUN_LANE,
        idle_s=2.0 if quick else 5.0,
        loaded_s=2.0 if quick else 5.0,
        probe_rate_hz=PROBE_RATE_HZ,
    )


def summarise(result: ScenarioResult) -> ComponentResult:
    figures = []
    for kind, label in (("status", "status read"), ("search", "event search")):
        idle, loaded = result.by_kind[kind]["idle"], result.by_kind[kind]["loaded"]
        figures.append(
            Figure(
                f"{label} loaded p99 / idle p99 ({loaded.p99:.2f} / {idle.p99:.2f} ms; "
                f"p50 {loaded.p50:.2f} / {idle.p50:.2f} ms; {loaded.count}/{idle.count} probes)",
                loaded.p99 / idle.p99,
                "",
                TARGET_RATIO,
                "lower",
            )
        )
    return ComponentResult(
        name=f"isolation, {result.backend}",
        method=(
            f"default lanes; {WORKLOAD.describe()}; {result.runs} started, run lane at window "
            f"open {result.running_at_open} running, {result.waiting_at_open} waiting; "
            f"{PROBE_RATE_HZ:g} probes/s; {result.steps_per_s:.1f} steps/s under load"
            + (f"; {result.probe_failures} probes FAILED" if result.probe_failures else "")
        ),
        figures=figures,
        details={"scenario": result.label, "probe_failures": result.probe_failures},
    )


def run(quick: bool, backend: str, note: Callable[[str], None]) -> ComponentResult:
    return summarise(run_scenario(scenario(quick, backend), note))
