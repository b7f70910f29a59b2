"""Deltas through the broker: encoded once, only for subscribers that asked,
in publish order among the frames, batched from a run thread, and dropped
(never an event) by a subscriber that falls behind or reads the store."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

import anyio
import pytest

from laneway.broker import EventBroker, Subscriber
from laneway.deltas import Delta, coalesce
from laneway.lanes import Lanes
from laneway.models import AgentSpec, ConversationRecord, NewEvent, utc_now
from laneway.store import SQLiteEventStore
from laneway.subscriptions import following
from laneway.topics import DELTAS_KEPT, Frame
from tests.test_broker import GUARD_S, event

pytestmark = pytest.mark.anyio


def described(items: Sequence[Frame | Delta]) -> list[str]:
    """Frames as their seq, deltas as ``step:text``."""
    out: list[str] = []
    for item in items:
        if isinstance(item, Frame):
            out.append(str(item.seq))
        else:
            body = json.loads(item.json)
            out.append(f"{body['step']}:{body['text']}")
    return out


async def take(sub: Subscriber, upto: int, after: int = 0) -> list[Frame | Delta]:
    """What a live follower sends until it has sent seq ``upto``."""
    taken: list[Frame | Delta] = []
    last = after
    with anyio.fail_after(GUARD_S):
        while last < upto:
            frames = sub.frames_after(last)
            assert frames is not None, f"a gap after {last}"
            if batch := sub.with_deltas(frames):
                taken += batch
                last = frames[-1].seq if frames else last
            else:
                await sub.wait()
    return taken


def joined(items: Sequence[Frame | Delta]) -> list[str]:
    """Consecutive deltas of one step as one, so that how they were batched
    does not matter."""
    out: list[str] = []
    for text in described(items):
        step, _, piece = text.partition(":")
        if out and piece and out[-1].startswith(step + ":"):
            out[-1] += piece
        else:
            out.append(text)
    return out


def test_a_delta_is_encoded_once_as_sse_without_id_and_as_websocket_text() -> None:
    delta = Delta("c1", 3, 'say "hi"\n')
    body = {"conversation_id": "c1", "step": 3, "text": 'say "hi"\n'}
    assert json.loads(delta.json) == body
    assert delta.sse == b"event: delta\ndata: " + delta.json + b"\n\n"
    assert b"id:" not in delta.sse
    assert json.loads(delta.text) == {"type": "delta", **body}
    assert delta.text.startswith('{"type":"delta",')


def test_consecutive_pieces_of_a_step_are_joined() -> None:
    deltas = coalesce("c", [(1, "a"), (1, "b"), (2, "c"), (1, "d"), (1, "e")])
    assert described(deltas) == ["1:ab", "2:c", "1:de"]


async def test_wants_deltas_only_while_a_subscriber_asks_for_them() -> None:
    broker = EventBroker()
    assert not broker.wants_deltas("c")
    plain = broker.subscribe("c")
    assert broker.has_subscribers("c")
    assert not broker.wants_deltas("c")
    first, second = broker.subscribe("c", deltas=True), broker.subscribe("c", deltas=True)
    assert broker.wants_deltas("c")
    assert not broker.wants_deltas("other")
    broker.unsubscribe(first)
    broker.unsubscribe(first)  # twice: counted once
    assert broker.wants_deltas("c")
    broker.unsubscribe(second)
    assert not broker.wants_deltas("c")
    assert broker.has_subscribers("c")
    broker.unsubscribe(plain)
    again = broker.subscribe("c", deltas=True)
    broker.close_conversation("c")
    assert again.closed
    assert not broker.wants_deltas("c")


async def test_deltas_reach_only_those_that_asked_in_order_among_frames() -> None:
    broker = EventBroker()
    plain, wanting = broker.subscribe("c"), broker.subscribe("c", deltas=True)
    broker.publish("c", [event(1)])
    broker.publish_deltas("c", [(1, "a"), (1, "b")])
    broker.publish("c", [event(2), event(3)])
    broker.publish_deltas("c", [(2, "c")])
    broker.publish("c", [event(4)])
    assert described(await take(plain, 4)) == ["1", "2", "3", "4"]
    assert described(await take(wanting, 4)) == ["1", "1:ab", "2", "3", "2:c", "4"]
    # Deltas after the last frame go out without waiting for another.
    async with anyio.create_task_group() as tg:
        tg.start_soon(wanting.wait)
        await anyio.sleep(0.01)
        broker.publish_deltas("c", [(3, "d")])
    assert described(wanting.with_deltas(wanting.frames_after(4) or [])) == ["3:d"]


async def test_a_wave_of_deltas_wakes_no_subscriber_that_did_not_ask() -> None:
    broker = EventBroker()
    plain, wanting = broker.subscribe("c"), broker.subscribe("c", deltas=True)
    woken: list[str] = []

    async def wait_on(name: str, sub: Subscriber) -> None:
        await sub.wait()
        woken.append(name)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_on, "plain", plain)
        tg.start_soon(wait_on, "wanting", wanting)
        await anyio.sleep(0.01)
        broker.publish_deltas("c", [(1, "a")])
        await anyio.sleep(0.05)
        assert woken == ["wanting"]
        broker.publish("c", [event(1)])
    assert woken == ["wanting", "plain"]
    assert plain.with_deltas(plain.frames_after(0) or []) == plain.frames_after(0)


async def test_deltas_from_a_thread_keep_their_place_among_its_events() -> None:
    broker = EventBroker()
    sub = broker.subscribe("c", deltas=True)

    def run_thread() -> None:
        for step in (1, 2, 3):
            for piece in ("x", "y", "z"):
                broker.publish_delta_from_thread("c", step, piece)
            broker.publish_from_thread("c", [event(step)])

    thread = threading.Thread(target=run_thread)
    thread.start()
    # The loop is blocked here: a publish that waited for it could not return.
    thread.join(GUARD_S)
    assert not thread.is_alive()
    taken = await take(sub, 3)
    assert joined(taken) == ["1:xyz", "1", "2:xyz", "2", "3:xyz", "3"]
    # All of a step's pieces came before its crossing ran: one delta each.
    assert len(taken) == 6


async def test_a_subscriber_behind_loses_old_deltas_but_no_event() -> None:
    broker = EventBroker()
    sub = broker.subscribe("c", deltas=True)
    pieces = [(1, str(i % 10)) for i in range(3 * DELTAS_KEPT)]
    for piece in pieces:
        broker.publish_deltas("c", [piece])
    broker.publish("c", [event(1)])
    taken = await take(sub, 1)
    assert described(taken)[-1] == "1"
    kept = taken[:-1]
    assert DELTAS_KEPT <= len(kept) <= 2 * DELTAS_KEPT
    # The newest are kept, in order.
    assert described(kept) == [f"1:{text}" for _, text in pieces[-len(kept) :]]


async def test_a_follower_drops_the_deltas_published_before_it_reads_the_store() -> None:
    store = SQLiteEventStore(":memory:")
    try:
        lanes = Lanes.create()
        now = utc_now()
        store.create_conversation(ConversationRecord("c", "", "idle", AgentSpec(), 5, now, now))
        broker = EventBroker(kept=2)
        messages = [NewEvent("message", "agent", {"text": str(i)}) for i in range(3)]
        store.append("c", messages)
        seen: list[str] = []
        async with following(store, lanes.io, broker, "c", 0, deltas=True) as follower:
            batches = aiter(follower)
            with anyio.fail_after(GUARD_S):
                seen += described(await anext(batches))  # replayed
                broker.publish_deltas("c", [(1, "live")])
                seen += described(await anext(batches))
                # Deltas, then more than the topic keeps: those events come
                # from the store, and the deltas before them go.
                broker.publish_deltas("c", [(2, "lost")])
                broker.publish("c", store.append("c", messages * 3))
                while seen[-1] != "12":
                    seen += described(await anext(batches))
        assert seen == ["1", "2", "3", "1:live", *map(str, range(4, 13))]
    finally:
        store.close()
