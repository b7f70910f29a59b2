"""A step's deltas: sim's pieces of its message over its think, and a run that
crosses into the loop with them only while a subscriber asks for deltas."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence

import anyio
import pytest

from laneway.agents import AgentCatalog, AgentConfigError, Turn
from laneway.agents.sim import SimAgent, make_sim, split_text
from laneway.broker import EventBroker
from laneway.deltas import Delta
from laneway.models import AgentSpec
from laneway.service import ConversationService
from laneway.topics import Frame
from tests.services import GUARD_S, open_service, wait_status

pytestmark = pytest.mark.anyio


def sim(**config: object) -> SimAgent:
    return make_sim(dict(config))


def test_split_text_gives_even_non_empty_pieces() -> None:
    assert split_text("abcdefg", 3) == ["abc", "de", "fg"]
    assert split_text("abc", 10) == ["a", "b", "c"]
    assert split_text("abc", 1) == ["abc"]
    assert split_text("", 4) == []
    for n in range(1, 30):
        pieces = split_text("step 1 of 3 (read 1 new message(s))", n)
        assert "".join(pieces) == "step 1 of 3 (read 1 new message(s))"
        assert all(pieces)
        assert max(map(len, pieces)) - min(map(len, pieces)) <= 1


def test_sim_emits_its_message_in_pieces_over_its_think() -> None:
    pieces: list[str] = []
    agent = sim(steps=2, think_ms=100, deltas=5)
    started = time.monotonic()
    result = agent.step(Turn(1, ["hi"], [], emit_delta=pieces.append))
    assert time.monotonic() - started >= 0.1
    assert len(pieces) == 5
    assert "".join(pieces) == result.messages[0]
    # One a character at most, and none at all with nowhere to send them.
    many: list[str] = []
    text = sim(deltas=10_000).step(Turn(1, [], [], emit_delta=many.append)).messages[0]
    assert many == list(text)
    assert sim(deltas=5).step(Turn(1, [], [])).messages == ["step 1 of 3"]


def test_sim_deltas_are_bounded() -> None:
    for bad in (-1, 10_001, "5"):
        with pytest.raises(AgentConfigError, match="deltas"):
            AgentCatalog().make(AgentSpec("sim", {"deltas": bad}))


def test_a_cancel_ends_a_think_that_emits_deltas_at_once() -> None:
    agent = sim(think_ms=60_000, deltas=100)
    pieces: list[str] = []
    timer = threading.Timer(0.2, agent.cancel)
    timer.start()
    started = time.monotonic()
    result = agent.step(Turn(1, [], [], emit_delta=pieces.append))
    assert time.monotonic() - started < 5
    assert result.messages == ["step 1 of 3 interrupted"]
    assert "step 1 of 3".startswith("".join(pieces))


class CountingBroker(EventBroker):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def publish_delta_from_thread(self, conversation_id: str, step: int, text: str) -> None:
        self.calls += 1
        super().publish_delta_from_thread(conversation_id, step, text)


SPEC = AgentSpec("sim", {"steps": 3, "think_ms": 30, "deltas": 4})


async def follow_run(
    service: ConversationService, *, deltas: bool
) -> tuple[list[Frame | Delta], str]:
    """Follow a new conversation's first run from before it starts."""
    conv = await service.create(agent=SPEC)
    taken: list[Frame | Delta] = []
    with anyio.fail_after(GUARD_S):
        async with service.follow(conv.id, deltas=deltas) as follower:
            batches = aiter(follower)
            taken += await anext(batches)  # subscribed, and replayed
            await service.run(conv.id)
            while not any(
                isinstance(f, Frame) and f.event.data.get("status") == "finished" for f in taken
            ):
                taken += await anext(batches)
    return taken, conv.id


def deltas_then_messages(taken: Sequence[Frame | Delta]) -> list[str]:
    """Each step's deltas joined, then its agent message, in the order sent."""
    out: list[str] = []
    for item in taken:
        if isinstance(item, Delta):
            body = json.loads(item.json)
            key = f"delta {body['step']}: "
            if out and out[-1].startswith(key):
                out[-1] += body["text"]
            else:
                out.append(key + body["text"])
        elif item.event.kind == "message" and item.event.source == "agent":
            out.append(f"message: {item.event.data['text']}")
    return out


async def test_a_run_crosses_with_deltas_only_while_a_subscriber_asks() -> None:
    broker = CountingBroker()
    async with open_service(broker=broker) as service:
        conv = await service.create(agent=SPEC, initial_message="go")
        await wait_status(service, conv.id, "finished")
        assert broker.calls == 0  # nobody followed
        taken, _ = await follow_run(service, deltas=False)
        assert not any(isinstance(f, Delta) for f in taken)
        assert broker.calls == 0  # followed, but nobody asked for deltas
        taken, cid = await follow_run(service, deltas=True)
        assert broker.calls == 12
        assert not broker.wants_deltas(cid)  # the follower has left
    assert deltas_then_messages(taken) == [
        part for n in (1, 2, 3) for part in (f"delta {n}: step {n} of 3", f"message: step {n} of 3")
    ]
