"""A closed-loop HTTP load generator, run in its own process by the hot-path benchmark.

``python -m benchmarks.loadgen --port P --path /health --connections 8 --seconds 2``
keeps every connection busy with back-to-back GETs and prints one JSON line:
the requests answered 200 inside the measured span, the other answers, and the
span's length. Requests finishing during the warm-up are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass

from benchmarks.httpraw import RawConnection

# A request answered this long after the span ended means the server hung.
GUARD_S = 10.0


@dataclass
class LoadCount:
    ok: int = 0
    other: int = 0
    seconds: float = 0.0


async def generate(
    port: int, path: str, connections: int, seconds: float, warmup_s: float
) -> LoadCount:
    count = LoadCount()
    start = time.perf_counter()
    counted_from = start + warmup_s
    end = counted_from + seconds

    async def connection() -> None:
        conn = await RawConnection.connect(port)
        try:
            while True:
                status = await conn.request("GET", path)
                now = time.perf_counter()
                if now >= end:
                    return
                if now >= counted_from:
                    if status == 200:
                        count.ok += 1
                    else:
                        count.other += 1
        finally:
            await conn.close()

    async with asyncio.timeout(warmup_s + seconds + GUARD_S), asyncio.TaskGroup() as tg:
        for _ in range(connections):
            tg.create_task(connection())
    count.seconds = seconds
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=0.3)
    args = parser.parse_args()
    count = asyncio.run(
        generate(args.port, args.path, args.connections, args.seconds, args.warmup_s)
    )
    print(json.dumps(asdict(count)))


if __name__ == "__main__":
    main()
