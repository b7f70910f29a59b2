"""``GET /api/lanes/stream`` from the real server under each backend: frames
about once a second, shaped as ``GET /api/lanes``, the key it needs, and a
SIGTERM with the stream open that exits well within the grace period."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import anyio
import httpx
import pytest

from tests.serverproc import running_server

pytestmark = pytest.mark.anyio

GUARD_S = 30
PATH = "/api/lanes/stream"
KEY = "lanes-key"
AUTH = {"X-Session-API-Key": KEY}
# Long enough that an exit this slow or slower would mean the stream held it up.
GRACE_S = 10


async def test_frames_about_once_a_second_shaped_as_the_lanes_view(
    anyio_backend: str, tmp_path: Path
) -> None:
    args = ["--db", str(tmp_path / "lanes.db"), "--api-key", KEY]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            refused = await client.get(PATH)
            assert refused.status_code == 401
            assert refused.json()["error"]["code"] == "unauthorized"
            view = (await client.get("/api/lanes", headers=AUTH)).json()
            frames: list[dict[str, object]] = []
            arrivals: list[float] = []
            with anyio.fail_after(GUARD_S):
                async with client.stream("GET", PATH, headers=AUTH) as response:
                    assert response.status_code == 200
                    assert response.headers["content-type"].startswith("text/event-stream")
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            frames.append(json.loads(line[6:]))
                            arrivals.append(time.monotonic())
                            if len(frames) == 4:
                                break
    for frame in frames:
        assert set(frame) == set(view)
        assert frame["mode"] == view["mode"]
        assert isinstance(frame["lanes"], dict)
        assert set(frame["lanes"]) == set(view["lanes"]) == {"run", "tool", "io"}
    # Three intervals of a second: not much faster, and the upper bound a guard.
    assert 2.5 <= arrivals[-1] - arrivals[0] < GUARD_S


async def test_sigterm_with_an_open_lanes_stream_exits_well_within_the_grace(
    anyio_backend: str, tmp_path: Path
) -> None:
    args = ["--db", str(tmp_path / "stop.db"), "--shutdown-grace-s", str(GRACE_S)]
    with running_server(anyio_backend, args) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            frames = 0
            ended = anyio.Event()

            async def follow() -> None:
                nonlocal frames
                with contextlib.suppress(httpx.TransportError):
                    async with client.stream("GET", PATH) as response:
                        async for line in response.aiter_lines():
                            frames += line.startswith("data: ")
                ended.set()

            with anyio.fail_after(GUARD_S):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(follow)
                    while not frames:
                        await anyio.sleep(0.01)
                    started = time.monotonic()
                    assert await anyio.to_thread.run_sync(server.stop) == 0
                    took = time.monotonic() - started
                    await ended.wait()
    assert took < GRACE_S / 2
    assert "Traceback" not in server.output()
