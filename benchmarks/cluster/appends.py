"""Event appends per second from ten concurrent runs into PostgreSQL, beside
SQLite's in the same run: :mod:`benchmarks.components.appends`'s two writer
shapes, each store on a fresh database every round, the order of the stores
alternating round after round."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.components import appends
from benchmarks.figures import Figure
from laneway.store import EventStore, PostgresEventStore

if TYPE_CHECKING:
    from tests.pgserver import PostgresServer

ROUNDS = 3
QUICK_ROUNDS = 1
SECONDS = 2.0
QUICK_SECONDS = 1.0
SHAPES: dict[str, appends.Writer] = {"batched": appends.as_run, "single": appends.one_at_a_time}
_LABELS = {
    "batched": f"{appends.RUNS} concurrent runs",
    "single": f"{appends.RUNS} threads, one event per append",
}
STORES = ("postgres", "sqlite")


def planned_s(quick: bool) -> float:
    rounds, seconds = (QUICK_ROUNDS, QUICK_SECONDS) if quick else (ROUNDS, SECONDS)
    return rounds * seconds * len(SHAPES) * len(STORES)


@dataclass
class Appended:
    seconds: float
    # Events per second by shape, then store, one per round.
    rates: dict[str, dict[str, list[float]]]

    def median(self, shape: str, store: str) -> float:
        return statistics.median(self.rates[shape][store])

    def figures(self) -> list[Figure]:
        found = []
        for shape, label in _LABELS.items():
            pg, lite = self.median(shape, "postgres"), self.median(shape, "sqlite")
            found += [
                Figure(
                    f"event appends/s, {label}, PostgreSQL",
                    pg,
                    "events/s",
                    note=appends.spread(self.rates[shape]["postgres"]),
                ),
                Figure(
                    f"event appends/s, {label}, SQLite",
                    lite,
                    "events/s",
                    note=appends.spread(self.rates[shape]["sqlite"]),
                ),
                Figure(
                    f"event appends/s, {label}, PostgreSQL / SQLite",
                    pg / lite,
                    "",
                    note="side by side, in alternating rounds; for information, no target",
                ),
            ]
        return found

    def describe(self) -> str:
        rounds = len(self.rates["batched"]["postgres"])
        return (
            f"{appends.RUNS} threads in-process writing as runs do (the appends component's "
            f"two shapes), {self.seconds:g} s each, {rounds} round(s), into PostgreSQL and into "
            "a SQLite file"
        )

    def details(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "rates": self.rates}


@contextmanager
def _postgres(pg: PostgresServer) -> Iterator[EventStore]:
    store = PostgresEventStore(pg.new_database())
    try:
        yield store
    finally:
        store.close()


def measure(pg: PostgresServer, quick: bool, note: Callable[[str], None]) -> Appended:
    rounds, seconds = (QUICK_ROUNDS, QUICK_SECONDS) if quick else (ROUNDS, SECONDS)
    rates: dict[str, dict[str, list[float]]] = {s: {k: [] for k in STORES} for s in SHAPES}
    for index in range(rounds):
        order = STORES if index % 2 == 0 else tuple(reversed(STORES))
        for shape, writer in SHAPES.items():
            for kind in order:
                note(f"appends round {index + 1}/{rounds}: {shape}, {kind}")
                opened = _postgres(pg) if kind == "postgres" else appends.sqlite_store()
                with opened as store:
                    rates[shape][kind].append(appends.measure(writer, seconds, store))
    return Appended(seconds, rates)
