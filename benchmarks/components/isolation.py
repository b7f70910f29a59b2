"""Isolation: how much slower status reads and event searches get while the run
lane is saturated, at the default lane sizes.

The same measurement as a sweep configuration (see :mod:`benchmarks.scenario`),
with runs whose steps block for a second, ten times the run lane's size of them
waiting, and four times as many probes: at the sweep's rate a p99 is little
more than the second-slowest probe, which is mostly the machine's own jitter.

It runs three workloads. The first is the issue's, taken literally: steps that
only block ("sim runs with long think_ms"). The other two are harder, and are
judged against the same target: each step also fans two tool calls out on the
tool lane, as the design prescribes (``anyio.from_thread`` into the loop, then
``to_thread``), which costs the event loop 0.6 to 0.8 ms a step; and the last
adds the sweep's 2 ms of pure-Python CPU, whose GIL the event loop needs to
answer. The gaps between the three show what tool fan-out and CPU inside runs,
rather than the lanes, cost short requests.

The idle p99 the target is judged by is a twin server's, probed in the same
window, alternating with the loaded one (see :mod:`benchmarks.scenario`), so that
the ratio is taken side by side. The ratio to the loaded server's own idle
window, seconds earlier and shorter, is reported beside it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

from benchmarks.figures import ComponentResult, Figure
from benchmarks.scenario import Scenario, ScenarioResult, run_scenario
from benchmarks.server import ServerOptions
from benchmarks.stats import Summary
from benchmarks.workload import SimWorkload

TARGET_RATIO = 1.5
RUN_LANE = ServerOptions().run_lane_size
THINK_ONLY = SimWorkload(steps=20, think_ms=1000, cpu_ms=0, tools_per_step=0, tool_ms=0)
WITH_TOOLS = dataclasses.replace(THINK_ONLY, tools_per_step=2, tool_ms=20)
WITH_TOOLS_AND_CPU = dataclasses.replace(WITH_TOOLS, cpu_ms=2)
WORKLOADS = (THINK_ONLY, WITH_TOOLS, WITH_TOOLS_AND_CPU)
PROBE_RATE_HZ = 200.0
# 1,000 probes of each kind a window: a p99 is then the tenth-slowest probe.
# The window closes before the first runs end (20 steps of a second).
WINDOW_S = 10.0
# The loaded server's own idle window is only compared with, and a stall check
# for the twin; kept short so that three workloads fit in make bench's budget.
OWN_IDLE_S = 3.0
# A twin p99 above this multiple of the own idle window's p99 is flagged.
STALL_FACTOR = 2.0


def label(backend: str, workload: SimWorkload) -> str:
    return (
        f"isolation, {backend}, {workload.tools_per_step} tool calls and "
        f"{workload.cpu_ms:g} ms CPU per step"
    )


def scenario(quick: bool, backend: str, workload: SimWorkload) -> Scenario:
    return Scenario(
        label=label(backend, workload),
        server=ServerOptions(backend=backend),
        workload=workload,
        # The lane's own runs, and ten times its size waiting behind them.
        runs=RUN_LANE + 10 * RUN_LANE,
        idle_s=2.0 if quick else OWN_IDLE_S,
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


def _throughput(steps_per_s: float) -> str:
    # Steps are counted by their tool calls (see benchmarks.scenario).
    if math.isnan(steps_per_s):
        return "steps/s not measured (no tool calls to count them by)"
    return f"{steps_per_s:.1f} steps/s under load"


def probe_figures(
    by_kind: Mapping[str, Mapping[str, Summary]],
    subject: str = "",
    stalled: Callable[[float, float], str] | None = None,
    note: str = "",
) -> list[Figure]:
    """For each kind of probe, the loaded p99 against its idle twin's, side by
    side (the target), and against its own idle window's (for comparison).
    ``subject`` begins each name; ``stalled`` words the warning for a twin much
    slower than an idle server (see _twin_stalled), else ``note`` is said."""
    warn = stalled if stalled is not None else _twin_stalled
    figures = []
    for kind, label in (("status", "status read"), ("search", "event search")):
        phases = by_kind[kind]
        loaded, twin, idle = phases["loaded"], phases["twin"], phases["idle"]
        figures.append(
            Figure(
                f"{subject}{label} loaded p99 / idle twin's p99, side by side ({loaded.p99:.2f} / "
                f"{twin.p99:.2f} ms; p50 {loaded.p50:.2f} / {twin.p50:.2f} ms; "
                f"{loaded.count}/{twin.count} probes)",
                loaded.p99 / twin.p99,
                "",
                TARGET_RATIO,
                "lower",
                note=warn(twin.p99, idle.p99) or note,
            )
        )
        figures.append(
            Figure(
                f"{subject}{label} loaded p99 / its own idle window's p99 ({idle.p99:.2f} ms, "
                f"p50 {idle.p50:.2f} ms, {idle.count} probes)",
                loaded.p99 / idle.p99,
                "",
                note="windows seconds apart; for comparison",
            )
        )
    return figures


def summarise(result: ScenarioResult, workload: SimWorkload) -> ComponentResult:
    figures = probe_figures(result.by_kind)
    return ComponentResult(
        name=result.label,
        method=(
            f"default lanes; {workload.describe()}; {result.runs} started, run lane at window "
            f"open {result.running_at_open} running, {result.waiting_at_open} waiting; "
            f"{PROBE_RATE_HZ:g} probes/s; {_throughput(result.steps_per_s)}"
            + (f"; {result.probe_failures} probes FAILED" if result.probe_failures else "")
        ),
        figures=figures,
        details={"scenario": result.label, "probe_failures": result.probe_failures},
    )


def run(
    quick: bool, backend: str, workload: SimWorkload, note: Callable[[str], None]
) -> ComponentResult:
    return summarise(run_scenario(scenario(quick, backend, workload), note), workload)
