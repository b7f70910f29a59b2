"""``python -m benchmarks [--quick]``: the limiter-size sweep, then the component
benchmarks; a table on stdout, and JSON, CSV, text and a plot under results/."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import report, sweep
from benchmarks.components import (
    appends,
    cluster,
    fanout,
    hotpath,
    interrupt,
    isolation,
    llm,
    queued,
    search,
)
from benchmarks.figures import ComponentResult
from benchmarks.machine import CpuTimes
from benchmarks.progress import Progress, clock
from benchmarks.scenario import Scenario, ScenarioResult, run_scenario
from benchmarks.workload import SimWorkload

RESULTS_DIR = Path(__file__).resolve().parent / "results"
QUICK_BACKENDS = ("asyncio",)
FULL_BACKENDS = ("asyncio", "trio")
# What building the search database adds to the plan, when it is not cached yet.
SEARCH_BUILD_S = 15.0


@dataclass(frozen=True)
class Component:
    label: str
    planned_s: float
    # Takes the progress bar's note, to show which phase it is in.
    run: Callable[[Callable[[str], None]], ComponentResult]


def components(quick: bool) -> list[Component]:
    backends = QUICK_BACKENDS if quick else FULL_BACKENDS
    size = search.QUICK if quick else search.FULL
    build_s = 0.0 if search.ensure_database_cached(size) else SEARCH_BUILD_S
    found = [
        Component("appends", 7 if quick else 19, lambda _: appends.run(quick)),
        Component("search", 3 + build_s, lambda _: search.run(quick)),
        Component(
            f"queued runs, {queued.BACKEND}", 8 if quick else 52, lambda _: queued.run(quick)
        ),
    ]
    found += [_hotpath(quick, backend) for backend in backends]
    found += [_fanout(quick, backend) for backend in backends]
    found += [
        Component(f"interrupt, {b}", 3, lambda _, b=b: interrupt.run(quick, b)) for b in backends
    ]
    found += [
        Component(f"llm step, {b}", 12 if quick else 30, lambda _, b=b: llm.run(quick, b))
        for b in backends
    ]
    found += [
        _isolation(quick, backend, workload)
        for backend in backends
        for workload in isolation.WORKLOADS
    ]
    found.append(
        Component(cluster.LABEL, cluster.planned_s(quick), lambda note: cluster.run(quick, note))
    )
    return found


def _hotpath(quick: bool, backend: str) -> Component:
    return Component(
        f"hot path, {backend}", 6 if quick else 13, lambda _: hotpath.run(quick, backend)
    )


def _fanout(quick: bool, backend: str) -> Component:
    return Component(
        f"fan-out, {backend}",
        fanout.planned_s(quick),
        lambda note: fanout.run(quick, backend, note),
    )


def _isolation(quick: bool, backend: str, workload: SimWorkload) -> Component:
    planned = isolation.scenario(quick, backend, workload).planned_s
    return Component(
        isolation.label(backend, workload),
        planned,
        lambda note: isolation.run(quick, backend, workload, note),
    )


def _failure(label: str, exc: Exception) -> str:
    traceback.print_exc(file=sys.stderr)
    return f"{label}: FAILED, {type(exc).__name__}: {exc}"


@dataclass
class Outcome:
    sweep: list[ScenarioResult]
    components: list[ComponentResult]
    failures: list[str]


def measure(scenarios: Sequence[Scenario], parts: Sequence[Component]) -> Outcome:
    """Run everything in turn. A part that fails is reported, not fatal, so one
    broken measurement does not throw the others away."""
    progress = Progress([s.planned_s for s in scenarios] + [c.planned_s for c in parts])
    outcome = Outcome([], [], [])
    for scenario in scenarios:
        progress.begin(f"sweep {scenario.label}")
        try:
            outcome.sweep.append(run_scenario(scenario, progress.note))
        except Exception as exc:
            outcome.failures.append(_failure(f"sweep {scenario.label}", exc))
    for part in parts:
        progress.begin(part.label)
        cpu = CpuTimes.now()
        try:
            result = part.run(progress.note)
        except Exception as exc:
            outcome.failures.append(_failure(part.label, exc))
            continue
        result.steal_percent = CpuTimes.now().steal_percent_since(cpu)
        outcome.components.append(result)
    progress.close()
    return outcome


def summary(
    title: str, plan: sweep.SweepPlan, outcome: Outcome, wall_s: float, steal: float
) -> list[str]:
    lines = [title]
    if outcome.sweep:
        lines += [
            "",
            f"Limiter-size sweep: {sweep.WORKLOAD.describe()}.",
            f"Runs started: {sweep.RUNS_PER_TOKEN} per run-lane token; shared mode "
            f"{sweep.SHARED_RUNS} (as isolated run=32). Probes: {sweep.PROBE_RATE_HZ:g}/s, "
            "GET /api/conversations/{id} and GET .../events?kind=message&limit=50 in turn, "
            f"{plan.idle_s:g} s idle then {plan.loaded_s:g} s loaded.",
            "Latency in ms of both probe kinds; p99 ratio = loaded p99 / idle p99; steps/s over "
            "the loaded window; wait = run queue wait from lanes.run.wait_time; 429 = creates "
            "refused, rej = lanes.run.rejected; threads and RSS are the server's peaks; steal% "
            "= CPU time the virtual machine's host took meanwhile.",
            "",
            *report.sweep_table(outcome.sweep),
        ]
    if outcome.components:
        lines += ["", "Components:"]
        for result in outcome.components:
            lines += result.lines()
        judged = [f for r in outcome.components for f in r.figures if f.meets is not None]
        met = sum(bool(f.meets) for f in judged)
        lines += ["", f"Targets: {met} of {len(judged)} met."]
    if outcome.failures:
        lines += ["", *outcome.failures]
    lines += [
        "",
        f"Wall time: {clock(wall_s)}. CPU steal over the whole run: {steal:.0f}% (high steal "
        "slows and scatters every figure).",
    ]
    return lines


def write_files(base: Path, meta: dict[str, Any], outcome: Outcome, title: str) -> list[Path]:
    base.parent.mkdir(exist_ok=True)
    written = [base.with_suffix(".json")]
    report.write_json(written[0], meta, outcome.sweep, outcome.components)
    if outcome.sweep:
        report.write_csv(base.with_suffix(".csv"), outcome.sweep)
        report.plot_sweep(base.with_suffix(".png"), outcome.sweep, title)
        written += [base.with_suffix(".csv"), base.with_suffix(".png")]
    return written


def _shown(path: Path) -> str:
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="one backend, fewer sizes, shorter phases (~3.5 min)"
    )
    parser.add_argument(
        "--only", choices=("sweep", "components"), help="run only the sweep or the components"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    cpu = CpuTimes.now()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    plan = sweep.QUICK if args.quick else sweep.FULL
    scenarios = plan.scenarios() if args.only != "components" else []
    parts = components(args.quick) if args.only != "sweep" else []

    outcome = measure(scenarios, parts)

    wall_s = time.monotonic() - started
    steal = CpuTimes.now().steal_percent_since(cpu)
    title = (
        f"laneway benchmark {stamp}{' (quick)' if args.quick else ''}: {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {platform.machine()}"
    )
    meta = {
        "stamp": stamp,
        "quick": args.quick,
        "wall_s": wall_s,
        "steal_percent": steal,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "sweep_workload": asdict(sweep.WORKLOAD),
        "sweep_plan": asdict(plan),
        "failures": outcome.failures,
    }
    base = RESULTS_DIR / stamp
    plot_title = f"{title}\n{sweep.WORKLOAD.describe()}; {sweep.RUNS_PER_TOKEN} runs per token"
    written = write_files(base, meta, outcome, plot_title)
    lines = summary(title, plan, outcome, wall_s, steal)
    written.append(base.with_suffix(".txt"))
    lines.append("Written: " + ", ".join(_shown(p) for p in written))
    text = "\n".join(lines) + "\n"
    base.with_suffix(".txt").write_text(text)
    sys.stdout.write(text)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
