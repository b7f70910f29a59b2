"""A plain-text progress bar on stderr with an estimate of the time left.

Each task (a sweep configuration, a component) comes with a planned duration.
The estimate scales what is still planned by how long finished tasks really
took against their plan, so it corrects itself as the run goes on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

_BAR_WIDTH = 24


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    def __init__(self, planned_s: Sequence[float], stream: TextIO = sys.stderr) -> None:
        self._planned = list(planned_s)
        self._stream = stream
        # On a terminal the line is redrawn in place; in a log, each update is a line.
        self._inline = stream.isatty()
        self._started = time.monotonic()
        self._index = -1
        self._task_started = self._started
        self._label = ""
        self._done_planned = 0.0
        self._done_actual = 0.0

    def begin(self, label: str) -> None:
        """Close the current task, if any, and start the next one."""
        now = time.monotonic()
        if self._index >= 0:
            self._done_planned += self._planned[self._index]
            self._done_actual += now - self._task_started
        self._index += 1
        self._task_started = now
        self._label = label
        self.note("starting")

    def note(self, detail: str) -> None:
        """Show what the current task is doing now."""
        now = time.monotonic()
        total = len(self._planned)
        done = min(self._index, total)
        filled = round(_BAR_WIDTH * done / total) if total else _BAR_WIDTH
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        line = (
            f"bench [{bar}] {done + 1}/{total} {self._label}: {detail} | "
            f"{clock(now - self._started)} elapsed, ~{clock(self._left(now))} left"
        )
        if self._inline:
            self._stream.write("\r\033[K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._inline:
            self._stream.write("\n")
        self._stream.write(f"bench: finished in {clock(time.monotonic() - self._started)}\n")
        self._stream.flush()

    def _left(self, now: float) -> float:
        speed = self._done_actual / self._done_planned if self._done_planned else 1.0
        if self._index < 0:
            return sum(self._planned) * speed
        current = self._planned[self._index]
        current_left = max(0.0, current * speed - (now - self._task_started))
        return current_left + sum(self._planned[self._index + 1 :]) * speed
