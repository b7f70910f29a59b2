"""What the service does with runs when several instances share the store:
runs are queued in the database, and stopped or handed messages wherever
they run. Each request is one transaction on the io lane; what it stores is
published here, and other instances' followers read it through their relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeVar

from laneway.broker import EventBroker
from laneway.cluster import controls, deltas, instances, queue, waits
from laneway.cluster.controls import Control
from laneway.cluster.instances import Instance
from laneway.cluster.member import Member, in_transaction
from laneway.errors import Conflict
from laneway.lanes import LaneFull, Lanes
from laneway.models import ConversationRecord, Event, IfRunning, NewEvent
from laneway.store._append import Append
from laneway.store.postgres import PostgresEventStore

T = TypeVar("T")


class SharedRuns:
    def __init__(
        self, store: PostgresEventStore, lanes: Lanes, broker: EventBroker, member: Member
    ) -> None:
        self.store = store
        self.lanes = lanes
        self.broker = broker
        self.member = member

    async def _transact(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await self.lanes.io.run_sync(lambda: in_transaction(self.store, fn, *args, **kwargs))

    def _publish(self, written: list[Append]) -> list[Event]:
        stored = []
        for request in written:
            events = request.stored()
            self.broker.publish(request.conversation_id, events)
            stored += events
        return stored

    def _full(self, waiting: int) -> LaneFull:
        # The queue is global, but the time until a place comes free is
        # estimated from this instance's lane, the only one it sees.
        return LaneFull("run", waiting, self.lanes.run.retry_after())

    async def create(self, record: ConversationRecord, events: list[NewEvent]) -> None:
        """Create a conversation with its run queued; raises LaneFull, with the
        conversation stored as ``record`` says, if the queue is full."""
        admission = await self._transact(
            queue.create, record, events, max_waiting=self.lanes.run.max_waiting, by=self.member.id
        )
        self._publish(admission.written)
        if admission.full_at is not None:
            raise self._full(admission.full_at)
        self.member.wake()

    async def start(self, conversation_id: str) -> None:
        """Queue a run; raises Conflict if one is queued or running, LaneFull if
        the queue is full, NotFound."""
        admission = await self._transact(
            queue.enqueue,
            conversation_id,
            (),
            max_waiting=self.lanes.run.max_waiting,
            by=self.member.id,
        )
        self._publish(admission.written)
        if admission.full_at is not None:
            raise self._full(admission.full_at)
        if not admission.queued:
            raise Conflict(f"conversation {conversation_id!r} already has a run in progress")
        self.member.wake()

    async def send(
        self, conversation_id: str, message: NewEvent, *, if_running: IfRunning
    ) -> tuple[Event, LaneFull | None]:
        """Store a message asking for a run, and see that a run reads it: the one
        queued or running, wherever it runs, or one queued for it. Returns the
        message and, if the queue was full, the refusal; raises Conflict with
        ``if_running="reject"`` when a run is queued or running, storing nothing."""
        admission = await self._transact(
            queue.enqueue,
            conversation_id,
            [message],
            max_waiting=self.lanes.run.max_waiting,
            by=self.member.id,
            unless_active=if_running == "reject",
        )
        if not admission.written:
            raise Conflict(f"conversation {conversation_id!r} has a run queued or running")
        event = self._publish(admission.written)[0]
        if admission.full_at is not None:
            return event, self._full(admission.full_at)
        if admission.queued:
            self.member.wake()
        elif admission.owner is not None:
            action: controls.Action = (
                "interrupt_message" if if_running == "interrupt" else "message"
            )
            await self._tell(Control(admission.owner, conversation_id, action, event.seq))
        return event, None

    async def interrupt_for(self, conversation_id: str, event: Event) -> None:
        """A message stored without asking for a run interrupts the step of the
        run under way, wherever it runs, which then reads it."""
        owner = await self._transact(controls.running_owner, conversation_id)
        if owner is not None:
            await self._tell(Control(owner, conversation_id, "interrupt_message", event.seq))

    async def stop(self, conversation_id: str, action: Literal["pause", "interrupt"]) -> str | None:
        """Pause or interrupt the conversation's run: out of the queue at once if
        no instance has taken it, else kept in its row and, if another instance
        holds it, asked of that one. Returns the instance holding it, if any."""
        asked = await self._transact(
            controls.ask_to_stop, conversation_id, action, by=self.member.id
        )
        if asked.left is not None:
            self._publish([asked.left])
        return asked.owner

    async def delete(self, conversation_id: str) -> bool:
        return await self._transact(controls.delete, conversation_id, self.member.id)

    async def _tell(self, control: Control) -> None:
        if control.owner == self.member.id:
            self.member.on_control(control)
        else:
            await self._transact(controls.send, control)

    async def position(self, conversation_id: str) -> int | None:
        return await self._transact(queue.position, conversation_id)

    async def positions(self) -> dict[str, int]:
        return await self._transact(queue.positions)

    async def want_deltas(self, conversation_id: str) -> None:
        ttl_s = self.member.settings.lease_ttl_s
        await self._transact(deltas.want, [conversation_id], self.member.id, ttl_s)

    async def settled(self, conversation_id: str) -> tuple[bool, bool]:
        return await self._transact(waits.settled, conversation_id)

    async def instances(self) -> list[Instance]:
        return await self._transact(instances.live)
