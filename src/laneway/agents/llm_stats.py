"""Token and latency figures of the LLM steps, for /metrics.

Observed from run threads, so every update takes the lock; a scrape copies
them out under it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import msgspec

from laneway.agents.base import Usage
from laneway.histogram import Histogram, HistogramSnapshot


class LLMStatsSnapshot(msgspec.Struct, frozen=True):
    # (model, "prompt" | "completion") -> tokens
    tokens: dict[tuple[str, str], int]
    time_to_first_token: dict[str, HistogramSnapshot]
    step_time: dict[str, HistogramSnapshot]


class LLMStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._first_token: defaultdict[str, Histogram] = defaultdict(Histogram)
        self._step: defaultdict[str, Histogram] = defaultdict(Histogram)

    def observe_step(
        self, model: str, started: float, first_token_at: float | None, usage: Usage | None
    ) -> None:
        """One step that began at ``started`` (``time.perf_counter()``) and ends now."""
        ended = time.perf_counter()
        with self._lock:
            self._step[model].observe(ended - started)
            if first_token_at is not None:
                self._first_token[model].observe(first_token_at - started)
            if usage is not None:
                self._tokens[model, "prompt"] += usage.prompt_tokens
                self._tokens[model, "completion"] += usage.completion_tokens

    def snapshot(self) -> LLMStatsSnapshot:
        with self._lock:
            return LLMStatsSnapshot(
                tokens=dict(self._tokens),
                time_to_first_token={m: h.snapshot() for m, h in self._first_token.items()},
                step_time={m: h.snapshot() for m, h in self._step.items()},
            )
