"""laneway's overhead on an LLM step, against the same model server called directly.

A real model (SmolLM2-135M on llama.cpp, :mod:`laneway.localmodel`) answers the
same one-message prompt, greedily and at the same length, two ways in
alternating rounds: straight from a streaming client, and through laneway (a
message to an ``openai`` conversation, followed on its SSE stream with
``?deltas=true``). Time to first token is from the request to the first text
(the first delta, through laneway); step time is to the end of the answer (the
stored message frame, through laneway). Ratios are of the medians, laneway over
direct, with 1 and with 8 conversations at once.

Also: from ``POST /interrupt`` to the provider seeing its connection closed, on
a scripted provider whose stream stalls (``tests.scripted_llm``).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from benchmarks.figures import ComponentResult, Figure
from benchmarks.server import ServerOptions, running_server
from laneway.localmodel import MODEL_NAME, running

TARGET_RATIO = 1.10
INTERRUPT_TARGET_MS = 100.0
PROMPT = "Name three colours."
MAX_TOKENS = 32
CONCURRENCY = (1, 8)
ROUNDS = 12
QUICK_ROUNDS = 4
INTERRUPTS = 10
C = "/api/conversations"
AGENT = {"kind": "openai", "config": {"temperature": 0, "max_tokens": MAX_TOKENS}}

# (time to first token, step time), seconds
Timing = tuple[float, float]


def direct(client: httpx.Client, model_url: str) -> Timing:
    body = {"model": MODEL_NAME, "messages": [{"role": "user", "content": PROMPT}],
            "stream": True, "temperature": 0, "max_tokens": MAX_TOKENS}  # fmt: skip
    started = time.perf_counter()
    first = float("nan")
    with client.stream("POST", model_url + "/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first != first and any(c["delta"].get("content") for c in chunk["choices"]):
                first = time.perf_counter() - started
    return first, time.perf_counter() - started


def through_laneway(client: httpx.Client) -> Timing:
    cid = client.post(C, json={"agent": AGENT}).raise_for_status().json()["id"]
    stream = f"{C}/{cid}/events/stream"
    first = float("nan")
    with client.stream("GET", stream, params={"deltas": "true"}) as response:
        started = time.perf_counter()
        client.post(f"{C}/{cid}/messages", json={"content": PROMPT}).raise_for_status()
        event = ""
        for line in response.iter_lines():
            if not line:
                event = ""  # a frame ends; the next names its own kind, or none
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "delta" and first != first:
                    first = time.perf_counter() - started
                elif event != "delta" and '"kind":"message","source":"agent"' in line:
                    return first, time.perf_counter() - started
    raise RuntimeError("the stream ended before the answer")


def _round(way: Callable[[httpx.Client], Timing], clients: list[httpx.Client]) -> list[Timing]:
    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(way, clients))


def _overhead(model_url: str, base_url: str, rounds: int) -> dict[int, dict[str, list[Timing]]]:
    found: dict[int, dict[str, list[Timing]]] = {}
    for n in CONCURRENCY:
        direct_clients = [httpx.Client(timeout=60) for _ in range(n)]
        laneway_clients = [httpx.Client(base_url=base_url, timeout=60) for _ in range(n)]
        try:
            ways: dict[str, Callable[[httpx.Client], Timing]] = {
                "direct": lambda c: direct(c, model_url),
                "laneway": through_laneway,
            }
            # A first round of each, not counted: connections, the prompt cache.
            for name, way in ways.items():
                _round(way, direct_clients if name == "direct" else laneway_clients)
            found[n] = {"direct": [], "laneway": []}
            for _ in range(rounds):
                found[n]["direct"] += _round(ways["direct"], direct_clients)
                found[n]["laneway"] += _round(ways["laneway"], laneway_clients)
        finally:
            for client in direct_clients + laneway_clients:
                client.close()
    return found


def _interrupts(backend: str) -> list[float]:
    """Seconds from POST /interrupt to the scripted provider seeing the close."""
    from tests.scripted_llm import Reply, scripted_llm

    times = []
    with scripted_llm() as llm:
        options = ServerOptions(backend=backend, extra=("--llm-base-url", llm.base_url))
        with running_server(options) as server, httpx.Client(base_url=server.base_url) as client:
            for _ in range(INTERRUPTS):
                llm.stream_started.clear()
                llm.script(Reply(text="a b c d", stall_after=2))
                body = {"agent": {"kind": "openai", "config": {"model": "x"}},
                        "initial_message": "go"}  # fmt: skip
                cid = client.post(C, json=body).raise_for_status().json()["id"]
                if not llm.stream_started.wait(10):
                    raise RuntimeError("the provider was never called")
                time.sleep(0.05)  # the first chunks are read
                seen = len(llm.disconnects)
                asked = time.monotonic()
                client.post(f"{C}/{cid}/interrupt").raise_for_status()
                deadline = asked + 10
                while len(llm.disconnects) == seen:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the provider never saw the close")
                    time.sleep(0.0005)
                times.append(llm.disconnects[-1] - asked)
    return times


def run(quick: bool, backend: str) -> ComponentResult:
    rounds = QUICK_ROUNDS if quick else ROUNDS
    # No prompt cache: the same prompt, asked again and again, would otherwise
    # skip its evaluation, which a real conversation's new turn never does.
    with running("--parallel", str(max(CONCURRENCY)), "--no-prompt-cache") as model_url:
        options = ServerOptions(
            backend=backend,
            run_lane_size=max(CONCURRENCY),
            extra=("--llm-base-url", model_url, "--llm-models", MODEL_NAME),
        )
        with running_server(options) as server:
            timings = _overhead(model_url, server.base_url, rounds)
    interrupts = sorted(s * 1000 for s in _interrupts(backend))
    figures = []
    details: dict[str, object] = {"interrupt_to_close_ms": interrupts}
    for n, ways in timings.items():
        for index, what in enumerate(("time to first token", "step time")):
            med = {way: statistics.median(t[index] for t in ts) for way, ts in ways.items()}
            details[f"{what}, {n} at once, median s"] = med
            figures.append(
                Figure(
                    f"{what}, {n} at once, laneway / direct",
                    med["laneway"] / med["direct"],
                    "x",
                    TARGET_RATIO,
                    "lower",
                    note=f"medians {med['laneway'] * 1000:.1f} vs {med['direct'] * 1000:.1f} ms",
                )
            )
    figures.append(
        Figure(
            "interrupt to provider close, worst",
            interrupts[-1],
            "ms",
            INTERRUPT_TARGET_MS,
            "lower",
            note=f"median {statistics.median(interrupts):.1f} ms",
        )
    )
    return ComponentResult(
        name=f"llm step, {backend}",
        method=(
            f"{MODEL_NAME} on llama.cpp, {MAX_TOKENS} tokens greedy; {rounds} rounds of each "
            f"way, alternating, at {' and '.join(map(str, CONCURRENCY))} at once; "
            f"{INTERRUPTS} interrupts of a stalled scripted stream"
        ),
        figures=figures,
        details=details,
    )
