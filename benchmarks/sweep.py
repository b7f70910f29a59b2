"""The limiter-size sweep: shared against isolated run lanes of 1..32, on both backends."""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.scenario import Scenario
from benchmarks.server import ServerOptions
from benchmarks.workload import SimWorkload

# A run takes ~1.3 s: long enough to span many probes, short enough that about
# four generations of runs pass through a lane in one window, so the run queue
# wait has a spread to measure. 2 ms of CPU per step makes the GIL, not the
# lane, the limit once the lane is large.
WORKLOAD = SimWorkload(steps=10, think_ms=100, cpu_ms=2, tools_per_step=2, tool_ms=20)
# Runs started per run-lane token: six keep the lane full for ~8 s, past the
# end of the loaded window.
RUNS_PER_TOKEN = 6
# Shared mode starts as many runs as the largest isolated lane does.
SHARED_RUNS = RUNS_PER_TOKEN * 32
PROBE_RATE_HZ = 50.0


@dataclass(frozen=True)
class SweepPlan:
    backends: tuple[str, ...]
    sizes: tuple[int, ...]
    idle_s: float
    loaded_s: float

    def scenarios(self) -> list[Scenario]:
        found: list[Scenario] = []
        for backend in self.backends:
            found.append(
                Scenario(
                    label=f"{backend} shared",
                    server=ServerOptions(backend=backend, lanes_mode="shared"),
                    workload=WORKLOAD,
                    runs=SHARED_RUNS,
                    idle_s=self.idle_s,
                    loaded_s=self.loaded_s,
                    probe_rate_hz=PROBE_RATE_HZ,
                )
            )
            found.extend(
                Scenario(
                    label=f"{backend} isolated run={size}",
                    server=ServerOptions(backend=backend, run_lane_size=size),
                    workload=WORKLOAD,
                    runs=RUNS_PER_TOKEN * size,
                    idle_s=self.idle_s,
                    loaded_s=self.loaded_s,
                    probe_rate_hz=PROBE_RATE_HZ,
                )
                for size in self.sizes
            )
        return found


FULL = SweepPlan(("asyncio", "trio"), (1, 2, 4, 8, 16, 32), idle_s=2.0, loaded_s=5.0)
QUICK = SweepPlan(("asyncio",), (1, 4, 16), idle_s=1.5, loaded_s=3.0)
