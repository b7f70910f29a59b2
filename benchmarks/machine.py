"""The machine's CPU time from /proc/stat, to report how much of it was stolen.

On a virtual machine the host may run other guests on "our" cores; that time
shows as steal. Figures measured under heavy steal are slower and noisier, so
every configuration and component reports the steal it ran under.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

# Above this share of stolen CPU time, figures say more about the host than about
# laneway: a verdict measured under it is flagged as not to be trusted.
HEAVY_STEAL_PERCENT = 10.0

# Field order of the "cpu" line of /proc/stat, in clock ticks.
_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class CpuTimes:
    ticks: tuple[int, ...]

    @classmethod
    def now(cls) -> CpuTimes:
        try:
            line = Path("/proc/stat").read_text().splitlines()[0]
        except OSError:
            return cls(())
        return cls(tuple(int(v) for v in line.split()[1 : 1 + len(_FIELDS)]))

    def steal_percent_since(self, earlier: CpuTimes) -> float:
        """The share of all CPU time since ``earlier`` that the host took (NaN when
        /proc/stat cannot tell)."""
        if len(self.ticks) < len(_FIELDS) or len(earlier.ticks) < len(_FIELDS):
            return math.nan
        deltas = [a - b for a, b in zip(self.ticks, earlier.ticks, strict=True)]
        total = sum(deltas)
        return 100.0 * deltas[_FIELDS.index("steal")] / total if total else math.nan

    def busy_percent_since(self, earlier: CpuTimes) -> float:
        """The share of all CPU time since ``earlier`` spent working: neither idle,
        nor waiting for I/O, nor taken by the host (NaN when /proc/stat cannot tell)."""
        if len(self.ticks) < len(_FIELDS) or len(earlier.ticks) < len(_FIELDS):
            return math.nan
        spent = [a - b for a, b in zip(self.ticks, earlier.ticks, strict=True)]
        deltas = dict(zip(_FIELDS, spent, strict=True))
        total = sum(deltas.values())
        idle = deltas["idle"] + deltas["iowait"] + deltas["steal"]
        return 100.0 * (total - idle) / total if total else math.nan
