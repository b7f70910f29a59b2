"""``laneway instances``: the instances sharing the server's database."""

from __future__ import annotations

import argparse

from rich.table import Table

from laneway.client import InstancesView
from laneway.commands.running import Session


def show(args: argparse.Namespace, session: Session) -> int:
    view = session.client.instances()
    if session.json:
        session.print_json(view)
    else:
        session.console.print(instances_table(view))
    return 0


def instances_table(view: InstancesView) -> Table:
    table = Table(title="instances", title_justify="left")
    for name in ("id", "role", "started", "heartbeat"):
        table.add_column(name)
    for name in ("runs", "run lane", "io waiting"):
        table.add_column(name, justify="right")
    for instance in view.items:
        run = instance.lanes.get("run", {})
        io = instance.lanes.get("io", {})
        table.add_row(
            instance.id,
            instance.role,
            instance.started_at,
            instance.heartbeat_at,
            str(instance.runs),
            f"{run.get('running', 0)}/{run.get('size', '?')}",
            str(io.get("waiting", 0)),
        )
    return table
