"""The sim-agent runs the benchmark starts, and starting many of them at once."""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from typing import Any

import httpx

CONVERSATIONS = "/api/conversations"


@dataclass(frozen=True)
class SimWorkload:
    """One run of the ``sim`` agent: per step, ``think_ms`` blocking (an LLM
    call), ``cpu_ms`` of pure-Python CPU, then ``tools_per_step`` parallel tool
    calls of ``tool_ms`` each."""

    steps: int
    think_ms: float
    cpu_ms: float
    tools_per_step: int
    tool_ms: float

    def create_body(self) -> dict[str, Any]:
        return {
            "agent": {"kind": "sim", "config": asdict(self)},
            "initial_message": "go",
            "max_steps": self.steps,
        }

    def describe(self) -> str:
        return (
            f"sim runs of {self.steps} steps; each step {self.think_ms:g} ms blocking think, "
            f"{self.cpu_ms:g} ms CPU, {self.tools_per_step} parallel tool calls of "
            f"{self.tool_ms:g} ms"
        )


@dataclass
class StartedRuns:
    created: int = 0
    # 429: the run queue was full.
    rejected: int = 0
    failed: int = 0


async def start_runs(
    client: httpx.AsyncClient, workload: SimWorkload, count: int, started: StartedRuns
) -> None:
    """Create ``count`` conversations that run at once, all requests in flight
    together, counting the answers into ``started`` as they come (so that the
    counts are there even if this is cancelled)."""
    body = workload.create_body()

    async def create() -> None:
        try:
            response = await client.post(CONVERSATIONS, json=body)
        except httpx.HTTPError:
            started.failed += 1
            return
        if response.status_code == 201:
            started.created += 1
        elif response.status_code == 429:
            started.rejected += 1
        else:
            started.failed += 1

    async with asyncio.TaskGroup() as tg:
        for _ in range(count):
            tg.create_task(create())


async def wait_finished(client: httpx.AsyncClient, conversation_id: str, guard_s: float) -> None:
    """Poll a conversation until its run has finished; fail after ``guard_s``."""
    async with asyncio.timeout(guard_s):
        while True:
            response = await client.get(f"{CONVERSATIONS}/{conversation_id}")
            response.raise_for_status()
            status = response.json()["status"]
            if status == "finished":
                return
            if status in ("error", "stuck", "paused"):
                raise RuntimeError(f"conversation {conversation_id} ended {status}")
            await asyncio.sleep(0.05)
