"""The sweep's table, the JSON and CSV files, the plot, and the component lines."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.figures import ComponentResult
from benchmarks.machine import HEAVY_STEAL_PERCENT
from benchmarks.scenario import ScenarioResult
from benchmarks.stats import Summary

COLORS = {"asyncio": "tab:blue", "trio": "tab:orange"}


def _ms(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _triple(summary: Summary) -> str:
    return f"{_ms(summary.p50)} / {_ms(summary.p99)} / {_ms(summary.max)}"


def sweep_table(results: Sequence[ScenarioResult]) -> list[str]:
    header = (
        f"{'configuration':<26}{'runs':>5}{'idle p50/p99/max ms':>24}"
        f"{'loaded p50/p99/max ms':>28}{'p99 ratio':>11}{'steps/s':>9}"
        f"{'wait p50/p99 s':>16}{'429':>5}{'rej':>5}{'threads':>9}{'RSS MiB':>9}{'steal%':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        waits = f"{r.wait_p50_s:.2f} / {r.wait_p99_s:.2f}"
        lines.append(
            f"{r.label:<26}{r.runs:>5}{_triple(r.idle):>24}{_triple(r.loaded):>28}"
            f"{r.isolation_ratio:>11.1f}{r.steps_per_s:>9.1f}{waits:>16}"
            f"{r.rejected_http:>5}{r.rejected_lane:>5}{r.peak_threads:>9}{r.peak_rss_mib:>9.0f}"
            f"{r.steal_percent:>8.0f}"
        )
    for r in results:
        problems = []
        if r.probe_failures:
            problems.append(f"{r.probe_failures} probes failed or timed out")
        if r.failed_creates:
            problems.append(f"{r.failed_creates} creates failed")
        if r.unanswered_creates:
            problems.append(
                f"{r.unanswered_creates} creates still unanswered when the window closed"
            )
        if r.server_killed:
            problems.append("the server ignored SIGTERM and was killed")
        if r.steal_percent >= HEAVY_STEAL_PERCENT:
            problems.append(
                f"measured while the host took {r.steal_percent:.0f}% of the CPU: not to be trusted"
            )
        if problems:
            lines.append(f"  {r.label}: {'; '.join(problems)}")
    return lines


def _flat(result: ScenarioResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "label": result.label,
        "backend": result.backend,
        "mode": result.mode,
        "run_lane_size": result.run_lane_size,
        "runs": result.runs,
        "open_s": result.open_s,
        "run_running_at_open": result.running_at_open,
        "run_waiting_at_open": result.waiting_at_open,
    }
    for phase in ("idle", "loaded"):
        summary: Summary = getattr(result, phase)
        row[f"{phase}_probes"] = summary.count
        for stat in ("p50", "p99", "max"):
            row[f"{phase}_{stat}_ms"] = getattr(summary, stat)
    for kind, phases in result.by_kind.items():
        for phase, summary in phases.items():
            row[f"{kind}_{phase}_p99_ms"] = summary.p99
    row.update(
        isolation_ratio=result.isolation_ratio,
        steps_per_s=result.steps_per_s,
        run_wait_p50_s=result.wait_p50_s,
        run_wait_p99_s=result.wait_p99_s,
        rejected_http=result.rejected_http,
        rejected_lane=result.rejected_lane,
        failed_creates=result.failed_creates,
        unanswered_creates=result.unanswered_creates,
        probe_failures=result.probe_failures,
        peak_threads=result.peak_threads,
        peak_rss_mib=result.peak_rss_mib,
        hwm_mib=result.hwm_mib,
        server_killed=result.server_killed,
        steal_percent=result.steal_percent,
    )
    return row


def _jsonable(value: Any) -> Any:
    """NaN is not JSON; null says "not measured" instead."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    return value


def write_json(
    path: Path,
    meta: dict[str, Any],
    sweep: Sequence[ScenarioResult],
    components: Sequence[ComponentResult],
) -> None:
    document = {
        **meta,
        "sweep": [_flat(r) | {"by_kind": r.by_kind} for r in sweep],
        "components": [c.to_json() for c in components],
    }
    path.write_text(json.dumps(_jsonable(document), indent=2) + "\n")


def write_csv(path: Path, sweep: Sequence[ScenarioResult]) -> None:
    rows = [_flat(r) for r in sweep]
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def plot_sweep(path: Path, sweep: Sequence[ScenarioResult], title: str) -> None:
    """Loaded probe p99 and run throughput against run-lane size, one line per
    backend; each backend's shared pool drawn across as its baseline."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render straight to the file
    import matplotlib.pyplot as plt

    fig, (latency, throughput) = plt.subplots(1, 2, figsize=(13, 5.2))
    sizes = sorted({r.run_lane_size for r in sweep if r.mode == "isolated"})
    for backend in dict.fromkeys(r.backend for r in sweep):
        color = COLORS.get(backend, "tab:gray")
        isolated = sorted(
            (r for r in sweep if r.backend == backend and r.mode == "isolated"),
            key=lambda r: r.run_lane_size,
        )
        xs = [r.run_lane_size for r in isolated]
        latency.plot(
            xs,
            [r.loaded.p99 for r in isolated],
            "o-",
            color=color,
            label=f"{backend}, isolated lanes: p99 under load",
        )
        latency.plot(
            xs,
            [r.idle.p99 for r in isolated],
            ":",
            color=color,
            alpha=0.6,
            label=f"{backend}, isolated lanes: p99 idle",
        )
        throughput.plot(
            xs,
            [r.steps_per_s for r in isolated],
            "o-",
            color=color,
            label=f"{backend}, isolated lanes",
        )
        for shared in (r for r in sweep if r.backend == backend and r.mode == "shared"):
            label = f"{backend}, shared pool of {shared.run_lane_size}"
            latency.axhspan(shared.loaded.p50, shared.loaded.p99, color=color, alpha=0.12)
            latency.axhline(
                shared.loaded.p99,
                color=color,
                linestyle="--",
                label=f"{label}: p99 (band from p50)",
            )
            throughput.axhline(shared.steps_per_s, color=color, linestyle="--", label=label)
    latency.set_yscale("log")
    latency.set_ylabel("probe latency, ms (status read + event search)")
    latency.set_title("Short requests while runs load the server")
    throughput.set_ylabel("run steps / s")
    throughput.set_ylim(bottom=0)
    throughput.set_title("Run throughput")
    for ax in (latency, throughput):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("run-lane size (tokens)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
