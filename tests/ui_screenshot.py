"""The README's screenshot of the operator page, made once by hand, not by the
tests (so that the tree stays the same from run to run):

    PYTHONPATH=src python -m tests.ui_screenshot docs/ui.png

It serves laneway with a run lane of two, keeps sim runs coming for half a
minute so that the lanes have waits to chart, and shows one conversation
mid-step, its text streaming.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.browser import PageWatch, chromium
from tests.serverproc import running_server

C = "/api/conversations"
LOAD_S = 75.0


def sim(title: str, run: bool = True, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"title": title, "agent": {"kind": "sim", "config": config}}
    return {**body, "initial_message": "go", "run": run}


def keep_runs_coming(base_url: str, until: float) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        n = 0
        while time.monotonic() < until:
            n += 1
            body = sim(f"batch job {n}", steps=2, think_ms=700, tools_per_step=2, tool_ms=150)
            client.post(C, json=body)
            time.sleep(0.9)


def main(target: Path) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server("asyncio", ["--db", f"{tmp}/shot.db", "--run-lane-size", "2"]) as server,
        httpx.Client(base_url=server.base_url, timeout=10) as client,
        chromium() as browser,
    ):
        client.post(C, json={"title": "support: refund question", "initial_message": "Hi!"})
        paused = client.post(C, json=sim("nightly summary", steps=50, think_ms=60_000)).json()
        client.post(f"{C}/{paused['id']}/interrupt")
        watch = PageWatch(browser)
        page = watch.page
        page.goto(server.base_url + "/ui")
        until = time.monotonic() + LOAD_S
        load = threading.Thread(target=keep_runs_coming, args=(server.base_url, until))
        load.start()
        time.sleep(LOAD_S - 9)
        shown = client.post(C, json=sim("research: lane sizing", steps=6, think_ms=2500, deltas=80))
        page.locator(f'#conversations tr[data-id="{shown.json()["id"]}"]').click()
        page.locator("#events .streaming").wait_for(timeout=30_000)
        time.sleep(8.3)
        page.locator("#events .streaming").wait_for(timeout=30_000)
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=target)
        load.join()
        watch.close()
        if watch.problems:
            raise SystemExit("the page had problems:\n" + "\n".join(watch.problems))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui.png"))
