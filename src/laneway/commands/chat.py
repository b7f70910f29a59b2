"""``laneway chat [ID]``: a conversation in the terminal.

A follower thread prints the conversation's stream (with deltas) through a
:class:`~laneway.commands.chat_view.ChatView`, while the main thread reads
lines. A line typed is sent, and the prompt comes back once the run that read
it has ended and its events are on the screen.

Ctrl-C while a run is going interrupts it (the prompt comes back when it has
paused); a Ctrl-C at the prompt, or a second one while the run is stopping,
leaves with status 130, as a shell reports Ctrl-C. Ctrl-D (end of input)
leaves with 0. A run left going goes on in the server.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable

import httpx

from laneway.client import AgentSpec, Client, Event, LanewayError, NotFound, WaitAnswer
from laneway.commands.chat_view import USER_PROMPT, ChatView
from laneway.commands.running import EXIT_INTERRUPTED, EXIT_USAGE, Session, error_line, fail

# How long one wait request lasts: the server's most; a run that outlasts it
# is waited for again.
WAIT_S = 600.0
# How often the main thread wakes while waiting, so that Ctrl-C reaches it.
POLL_S = 0.1
# How long the prompt waits for a run's last events to be printed, past which
# the follower is reconnecting, and it prints them later.
SHOWN_TIMEOUT_S = 5.0


class Follower(threading.Thread):
    """Prints the conversation's stream, from its first event, and tells how
    far it has printed."""

    def __init__(self, session: Session, conversation_id: str, view: ChatView) -> None:
        super().__init__(name="laneway-chat-follower", daemon=True)
        self._session = session
        self._conversation_id = conversation_id
        self._view = view
        self._shown = threading.Condition()
        self._shown_seq = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self._session.open_client() as client:
                for item in client.follow(self._conversation_id, deltas=True):
                    self._view.show(item)
                    if isinstance(item, Event):
                        with self._shown:
                            self._shown_seq = item.seq
                            self._shown.notify_all()
        except (LanewayError, httpx.TransportError) as exc:
            with self._shown:
                self.error = exc
                self._shown.notify_all()

    def wait_shown(self, seq: int) -> None:
        """Until the event ``seq`` has been printed, at most SHOWN_TIMEOUT_S;
        raises what ended the stream."""
        with self._shown:
            self._shown.wait_for(
                lambda: self._shown_seq >= seq or self.error is not None, SHOWN_TIMEOUT_S
            )
        if self.error is not None:
            raise self.error


class RunWait(threading.Thread):
    """Sends a message, or just waits, until the run has ended; in a thread of
    its own, so that the main thread stays free for Ctrl-C."""

    def __init__(self, session: Session, until_ended: Callable[[Client], WaitAnswer]) -> None:
        super().__init__(name="laneway-chat-wait", daemon=True)
        self._session = session
        self._until_ended = until_ended
        self.done = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self._session.open_client() as client:
                self._until_ended(client)
        except (LanewayError, httpx.TransportError) as exc:
            self.error = exc
        finally:
            self.done.set()


def chat(args: argparse.Namespace, session: Session) -> int:
    if args.id is None:
        conversation_id = _create(args, session)
    elif args.agent or args.config or args.system or args.title:
        fail("--agent, --config, --system and --title are for a new conversation")
        return EXIT_USAGE
    else:
        conversation_id = session.client.get_conversation(args.id).id
    view = ChatView(session.console)
    follower = Follower(session, conversation_id, view)
    follower.start()
    note = f"conversation {conversation_id}: Ctrl-C stops a run, Ctrl-D leaves"
    session.console.print(note, style="dim")
    try:
        _converse(session, view, follower, conversation_id)
    except KeyboardInterrupt:
        # After the terminal's "^C", so that the shell's prompt starts a line.
        session.console.print()
        return EXIT_INTERRUPTED
    return 0


def _converse(session: Session, view: ChatView, follower: Follower, conversation_id: str) -> None:
    """Until the end of input; KeyboardInterrupt at the prompt, or at a
    second Ctrl-C while a run stops."""
    # Whatever run is going when we join, as after a message.
    _until_ended(session, view, follower, conversation_id, lambda c: _wait(c, conversation_id))
    while True:
        try:
            text = input(USER_PROMPT)
        except EOFError:
            session.console.print()
            return
        if follower.error is not None:
            raise follower.error
        if not text.strip():
            continue
        if not sys.stdin.isatty():
            # A terminal echoes what is typed; read from a pipe, it is shown here.
            session.console.print(text, soft_wrap=True)
        view.typed(text)

        def send(client: Client, text: str = text) -> WaitAnswer:
            answer = client.send_message(conversation_id, text, wait=True, wait_timeout_s=WAIT_S)
            return _wait(client, conversation_id) if answer.timed_out else answer

        _until_ended(session, view, follower, conversation_id, send)


def _create(args: argparse.Namespace, session: Session) -> str:
    config = dict(args.config or {})
    if args.system is not None:
        config["system_prompt"] = args.system
    agent = AgentSpec(args.agent or "echo", config)
    if args.title is None:
        return session.client.create_conversation(agent=agent).id
    return session.client.create_conversation(agent=agent, title=args.title).id


def _wait(client: Client, conversation_id: str) -> WaitAnswer:
    """Until the run queued or running has ended (at once if there is none)."""
    while (answer := client.wait(conversation_id, timeout_s=WAIT_S)).timed_out:
        pass
    return answer


def _until_ended(
    session: Session,
    view: ChatView,
    follower: Follower,
    conversation_id: str,
    until_ended: Callable[[Client], WaitAnswer],
) -> None:
    """Run ``until_ended`` in a RunWait, interrupting the run at the first
    Ctrl-C (a second one leaves), then wait for the follower to have printed
    everything up to the run's end."""
    waiter = RunWait(session, until_ended)
    waiter.start()
    interrupting = False
    while not waiter.done.is_set():
        try:
            waiter.done.wait(POLL_S)
        except KeyboardInterrupt:
            if interrupting:
                raise
            interrupting = True
            view.note("interrupting")
            session.client.interrupt(conversation_id)
        if follower.error is not None:
            raise follower.error
    if isinstance(waiter.error, NotFound | httpx.TransportError):
        raise waiter.error
    if isinstance(waiter.error, LanewayError):
        # The chat goes on after what only refused this message (a full queue).
        fail(error_line(waiter.error))
    last = next(session.client.iter_events(conversation_id, order="desc", page_size=1), None)
    if last is not None:
        follower.wait_shown(last.seq)
