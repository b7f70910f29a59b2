"""A measured figure beside its target, with a plain "meets" or "MISSES"."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from benchmarks.machine import HEAVY_STEAL_PERCENT


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    # None: reported for information, with nothing to meet.
    target: float | None = None
    better: Literal["higher", "lower"] = "higher"
    # True: the value must be strictly beyond the target, not equal to it.
    strict: bool = False
    note: str = ""

    @property
    def meets(self) -> bool | None:
        if self.target is None:
            return None
        if math.isnan(self.value):
            return False
        if self.value == self.target:
            return not self.strict
        return self.value > self.target if self.better == "higher" else self.value < self.target

    def line(self) -> str:
        text = f"{self.name}: {_number(self.value)} {self.unit}"
        if self.target is not None:
            op = {"higher": ">", "lower": "<"}[self.better] + ("" if self.strict else "=")
            verdict = "meets" if self.meets else "MISSES"
            text += f"  [target {op} {_number(self.target)} {self.unit}: {verdict}]"
        if self.note:
            text += f"  ({self.note})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": None if math.isnan(self.value) else self.value,
            "unit": self.unit,
            "target": self.target,
            "better": self.better,
            "strict": self.strict,
            "meets": self.meets,
            "note": self.note,
        }


def _number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    # Three places below 1, so that a ratio just under its target never prints as equal.
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


@dataclass
class ComponentResult:
    """What one component benchmark found: its figures, how it was measured, and
    its raw details for the JSON report."""

    name: str
    figures: list[Figure]
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    # Share of the machine's CPU time taken by the host while this ran.
    steal_percent: float = math.nan

    def lines(self) -> list[str]:
        steal = "" if math.isnan(self.steal_percent) else f" [CPU steal {self.steal_percent:.0f}%]"
        lines = [f"[{self.name}]{steal} {self.method}", *(f"  {f.line()}" for f in self.figures)]
        if self.steal_percent >= HEAVY_STEAL_PERCENT:
            lines.append(
                f"  ! measured while the host took {self.steal_percent:.0f}% of the CPU: these "
                "figures and verdicts are not to be trusted; rerun on a quieter machine"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "figures": [f.to_json() for f in self.figures],
            "steal_percent": None if math.isnan(self.steal_percent) else self.steal_percent,
            "details": self.details,
        }
