"""The real service under random interleavings of what clients do, on both
backends: hypothesis drives create, messages (with every if_running), run,
pause, interrupt, delete, lane resizes and restarts, while sim runs step in
their threads, and checks after every step that nothing is lost or stuck."""

from __future__ import annotations

import contextlib
import itertools
import tempfile
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from laneway.errors import Conflict, NotFound
from laneway.models import AgentSpec, Event, EventFilter
from laneway.service import ConversationService
from tests.services import GUARD_S, open_service

# Bounded so that make test stays short: each example is a few seconds at most.
EXAMPLES = 25
STEPS = 25
# A state the service passes through (a run ending while it is checked) is not a
# violation; one that lasts this long is.
SETTLE_S = 3.0

SIMS = st.fixed_dictionaries(
    {
        "steps": st.integers(1, 3),
        "think_ms": st.sampled_from([0, 20, 100]),
        "tools_per_step": st.integers(0, 2),
        "tool_ms": st.sampled_from([0, 10]),
    }
)


class ServiceMachine(RuleBasedStateMachine):
    backend = "asyncio"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory(prefix="laneway-stateful-")
        self.db = str(Path(self.dir.name) / "x.db")
        self.portal_cm = start_blocking_portal(self.backend)
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.service_cm: Any = None
        self.texts = (f"m{n}" for n in itertools.count())
        # Messages stored, by conversation: (text, a run was asked to read it).
        self.messages: dict[str, list[tuple[str, bool]]] = {}
        self.deleted: set[str] = set()

    conversations = Bundle("conversations")

    @initialize()
    def open(self) -> None:
        self.service_cm = self.portal.wrap_async_context_manager(
            open_service(self.db, run_size=1, tool_size=1, shutdown_grace_s=2.0)
        )
        self.service: ConversationService = self.service_cm.__enter__()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        async def with_guard() -> Any:
            with anyio.fail_after(GUARD_S):
                return await fn(*args, **kwargs)

        return self.portal.call(with_guard)

    # -- what clients do ---------------------------------------------------------

    @rule(target=conversations, sim=SIMS, message=st.booleans(), run=st.booleans())
    def create(self, sim: dict[str, Any], message: bool, run: bool) -> str:
        text = next(self.texts) if message else None
        conv = self.call(
            self.service.create,
            agent=AgentSpec("sim", sim),
            initial_message=text,
            run=run and message,
        )
        self.messages[conv.id] = [(text, run)] if text is not None else []
        return str(conv.id)

    @rule(
        cid=conversations,
        run=st.booleans(),
        if_running=st.sampled_from(["enqueue", "interrupt", "reject"]),
    )
    def send(self, cid: str, run: bool, if_running: str) -> None:
        text = next(self.texts)
        try:
            self.call(self.service.send_message, cid, text, run=run, if_running=if_running)
        except NotFound:
            assert cid in self.deleted
            return
        except Conflict:
            # Only a rejecting message is refused, and it is not stored.
            assert if_running == "reject"
            return
        self.messages[cid].append((text, run))

    @rule(cid=conversations)
    def run(self, cid: str) -> None:
        # Conflict: a run is queued or running; the invariants see it go.
        with contextlib.suppress(NotFound, Conflict):
            self.call(self.service.run, cid)

    @rule(cid=conversations, interrupt=st.booleans())
    def stop(self, cid: str, interrupt: bool) -> None:
        try:
            self.call(self.service.interrupt if interrupt else self.service.pause, cid)
        except NotFound:
            assert cid in self.deleted

    @rule(cid=consumes(conversations))
    def delete(self, cid: str) -> None:
        try:
            self.call(self.service.delete, cid)
        except NotFound:
            assert cid in self.deleted
        self.deleted.add(cid)
        self.messages.pop(cid, None)

    @rule(lane=st.sampled_from(["run", "tool"]), size=st.integers(1, 3))
    def resize(self, lane: str, size: int) -> None:
        self.portal.call(lambda: self.service.lanes[lane].resize(size))

    @rule()
    def restart(self) -> None:
        self.service_cm.__exit__(None, None, None)
        self.open()

    # -- what must always hold ---------------------------------------------------

    @invariant()
    def every_active_conversation_has_a_run_behind_it(self) -> None:
        if self.service_cm is not None:
            self.call(self._settled, self._active_without_run)

    @invariant()
    def every_message_is_stored_once_and_seqs_have_no_gap(self) -> None:
        if self.service_cm is None:
            return
        for cid, sent in self.messages.items():
            events = self.call(self._events, cid)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            stored = [e.data["text"] for e in events if e.kind == "message" and e.source == "user"]
            assert stored == [text for text, _ in sent]

    @invariant()
    def a_finished_conversation_has_read_every_message_that_asked_for_a_run(self) -> None:
        if self.service_cm is not None:
            self.call(self._settled, self._finished_with_unread)

    async def _finished_with_unread(self) -> list[str]:
        wrong = []
        for cid, sent in self.messages.items():
            asked = {text for text, run in sent if run}
            if not asked or cid in self.service.runs.handles:
                continue  # nothing asked for, or its run is still deciding
            view = await self.service.get(cid)
            if view.status != "finished":
                continue  # paused, error: the message waits visibly
            record = await self.service.lanes.io.run_sync(self.service.store.get_conversation, cid)
            events = await self._events(cid)
            seqs = [e.seq for e in events if e.kind == "message" and e.data.get("text") in asked]
            if record is None or record.read_seq < max(seqs):
                wrong.append(cid)
        return wrong

    async def _events(self, cid: str) -> list[Event]:
        found: list[Event] = []
        cursor = None
        while True:
            page, cursor = await self.service.search_events(
                cid, EventFilter(), limit=500, cursor=cursor
            )
            found += page
            if cursor is None:
                return found

    async def _active_without_run(self) -> list[str]:
        wrong = []
        for cid in self.messages:
            view = await self.service.get(cid)
            if view.status in ("queued", "running") and cid not in self.service.runs.handles:
                wrong.append(cid)
        return wrong

    async def _settled(self, check: Any) -> None:
        """Until ``check`` finds nothing wrong; fails if that takes SETTLE_S."""
        with anyio.move_on_after(SETTLE_S):
            while await check():
                await anyio.sleep(0.01)
            return
        raise AssertionError(f"still wrong after {SETTLE_S} s: {await check()}")

    def teardown(self) -> None:
        try:
            if self.service_cm is not None:
                self._check_at_rest()
                self.service_cm.__exit__(None, None, None)
        finally:
            self.portal_cm.__exit__(None, None, None)
            self.dir.cleanup()

    def _check_at_rest(self) -> None:
        """Once every run has ended, any conversation not running can be run
        again: never a 409 that lasts."""
        self.call(self._settled, self._busy)
        for cid in self.messages:
            self.call(self.service.run, cid)
        self.call(self._settled, self._busy)

    async def _busy(self) -> list[str]:
        return list(self.service.runs.handles)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_service_keeps_its_promises_under_random_interleavings(backend: str) -> None:
    machine = type(f"ServiceMachine_{backend}", (ServiceMachine,), {"backend": backend})
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
