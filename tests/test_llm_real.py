"""The openai agent against a real model: SmolLM2-135M-Instruct on llama.cpp's
own server (:mod:`laneway.localmodel`), with laneway as a real server process
under each backend. Run these alone with ``pytest -m llm``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from laneway.localmodel import MODEL_NAME, running
from tests.serverproc import ServerProcess, running_server
from tests.test_e2e import GUARD_S, C

pytestmark = [pytest.mark.anyio, pytest.mark.llm]

# Short, greedy answers: the tests are about laneway, not the model's prose.
AGENT = {"kind": "openai", "config": {"temperature": 0, "max_tokens": 24}}


@pytest.fixture(scope="session")
def model_url() -> Iterator[str]:
    """One model server for the whole test run: loading takes about a second."""
    with running("--parallel", "2") as url:
        yield url


def serve(backend: str, model_url: str, db: Path) -> AbstractContextManager[ServerProcess]:
    args = ["--db", str(db), "--llm-base-url", model_url, "--llm-models", MODEL_NAME]
    return running_server(backend, args)


async def ask(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json={**body, "wait": True, "wait_timeout_s": GUARD_S})
    assert response.status_code in (200, 201), response.text
    answer: dict[str, Any] = response.json()
    assert answer["conversation"]["status"] == "finished", answer
    return answer


def agent_messages(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["data"] for e in answer["events"] if e["kind"] == "message" and e["source"] == "agent"
    ]


async def test_tokens_stream_before_the_stored_answer_and_add_up_to_it(
    anyio_backend: str, model_url: str, tmp_path: Path
) -> None:
    with serve(anyio_backend, model_url, tmp_path / "real.db") as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            created = await client.post(C, json={"agent": AGENT})
            cid = created.json()["id"]
            deltas: list[str] = []
            stored: dict[str, Any] = {}
            stream = f"{C}/{cid}/events/stream"
            async with aconnect_sse(client, "GET", stream, params={"deltas": "true"}) as sse:
                sent = await client.post(f"{C}/{cid}/messages", json={"content": "Say hello."})
                assert sent.status_code == 202, sent.text
                async for frame in sse.aiter_sse():
                    if not frame.data:
                        # A keepalive: httpx-sse gives one as a frame once an id was seen.
                        continue
                    data = json.loads(frame.data)
                    if frame.event == "delta":
                        deltas.append(data["text"])
                    elif data["kind"] == "message" and data["source"] == "agent":
                        stored = data["data"]
                        break
    assert len(deltas) > 1, "the answer came in one piece"
    assert "".join(deltas) == stored["text"]
    assert stored["usage"]["prompt_tokens"] > 0
    assert stored["usage"]["completion_tokens"] > 0


async def test_after_a_restart_the_conversation_goes_on_with_its_history(
    anyio_backend: str, model_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "real.db"
    with serve(anyio_backend, model_url, db) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            first = await ask(client, C, {"agent": AGENT, "initial_message": "My name is Ada."})
    cid = first["conversation"]["id"]
    [before] = agent_messages(first)
    with serve(anyio_backend, model_url, db) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=GUARD_S) as client:
            second = await ask(client, f"{C}/{cid}/messages", {"content": "What is my name?"})
            view = (await client.get(f"{C}/{cid}")).json()
    [after] = agent_messages(second)
    # The second prompt holds the first question and answer besides the new one.
    grown = before["usage"]["prompt_tokens"] + before["usage"]["completion_tokens"]
    assert after["usage"]["prompt_tokens"] > grown
    assert view["usage"] == {
        "prompt_tokens": before["usage"]["prompt_tokens"] + after["usage"]["prompt_tokens"],
        "completion_tokens": before["usage"]["completion_tokens"]
        + after["usage"]["completion_tokens"],
    }
    assert view["steps_done"] == 2


def test_the_metrics_count_tokens_and_time_steps(model_url: str, tmp_path: Path) -> None:
    with (
        serve("asyncio", model_url, tmp_path / "real.db") as server,
        httpx.Client(base_url=server.base_url, timeout=GUARD_S) as client,
    ):
        body = {"agent": AGENT, "initial_message": "Hi.", "wait": True}
        answer = client.post(C, json=body).json()
        [message] = agent_messages(answer)
        metrics = client.get("/metrics").text
    assert _sample(metrics, "laneway_llm_tokens_total", kind="prompt") == float(
        message["usage"]["prompt_tokens"]
    )
    assert _sample(metrics, "laneway_llm_tokens_total", kind="completion") == float(
        message["usage"]["completion_tokens"]
    )
    assert _sample(metrics, "laneway_llm_step_seconds_count") == 1.0
    assert _sample(metrics, "laneway_llm_time_to_first_token_seconds_count") == 1.0


def _sample(metrics: str, name: str, **labels: str) -> float:
    wanted = {"model": MODEL_NAME, **labels}
    for line in metrics.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text = line[len(name) + 1 : line.index("}")]
        found = dict(part.split("=", 1) for part in label_text.split(","))
        if {k: v.strip('"') for k, v in found.items()} == wanted:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {wanted} in the metrics")
