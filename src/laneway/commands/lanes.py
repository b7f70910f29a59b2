"""``laneway lanes [--watch]`` and ``laneway lanes resize NAME SIZE``."""

from __future__ import annotations

import argparse
import time

from rich.live import Live
from rich.table import Table
from rich.text import Text

from laneway.client import LanesView
from laneway.commands.running import Session
from laneway.histogram import HistogramSnapshot


def show(args: argparse.Namespace, session: Session) -> int:
    if not args.watch:
        view = session.client.lanes()
        if session.json:
            session.print_json(view)
        else:
            session.console.print(lanes_table(view))
        return 0
    if session.json or not session.console.is_terminal:
        # Nothing to refresh in place: a table (or a JSON line) a refresh.
        while True:
            view = session.client.lanes()
            if session.json:
                session.print_json(view)
            else:
                session.console.print(lanes_table(view))
            time.sleep(args.interval)
    with Live(lanes_table(session.client.lanes()), console=session.console) as live:
        while True:
            time.sleep(args.interval)
            live.update(lanes_table(session.client.lanes()))


def lanes_table(view: LanesView) -> Table:
    table = Table(title=f"lanes ({view.mode})", title_justify="left")
    table.add_column("lane")
    for name in ("size", "running", "waiting", "rejected", "wait p50", "wait p99"):
        table.add_column(name, justify="right")
    for name, lane in view.lanes.items():
        # Over its size after a shrink, until it drains: worth seeing.
        over = "bold yellow" if lane.running > lane.size else ""
        table.add_row(
            name,
            str(lane.size),
            Text(str(lane.running), style=over),
            str(lane.waiting),
            str(lane.rejected),
            quantile_text(lane.wait_time, 0.5),
            quantile_text(lane.wait_time, 0.99),
        )
    return table


def quantile_text(histogram: HistogramSnapshot, q: float) -> str:
    """The estimate in a readable unit; "-" before anything was observed."""
    seconds = histogram.quantile(q)
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds:.2f} s"


def resize(args: argparse.Namespace, session: Session) -> int:
    lane = session.client.resize_lane(args.name, args.size)
    if session.json:
        session.print_json(lane)
    else:
        session.console.print(f"lane {lane.name}: size {lane.size}, running {lane.running}")
    return 0
