"""What ``laneway chat`` shows of a conversation's stream.

- ``you> `` and the user's messages (those typed here are not shown twice);
- ``agent> `` and the agent's text, streamed as its deltas come, the stored
  message completing the line (deltas are best-effort: what they missed is
  printed from the message);
- ``[tool] name(args) -> result``, one line a call, once its result is stored;
- status changes and errors, dim and red.
"""

from __future__ import annotations

import threading

from rich.console import Console
from rich.text import Text

from laneway.client import DeltaBody, Event
from laneway.commands.render import call_text, result_text, status_text

USER_PROMPT = "you> "
AGENT_LABEL = Text("agent> ", style="bold cyan")


class ChatView:
    """Prints stream items as they come, from the follower thread, and notes
    from the main thread."""

    def __init__(self, console: Console) -> None:
        self.console = console
        # The line being streamed is the two threads' to share.
        self._lock = threading.Lock()
        # Texts typed here and sent, whose stored messages are not printed again.
        self._typed: list[str] = []
        self._typed_lock = threading.Lock()
        # The agent's text streamed since its last stored message; a line is open.
        self._streamed: str | None = None
        # Tool calls waiting for their results, by call id: (name, arguments).
        self._calls: dict[str, tuple[str, object]] = {}

    def typed(self, text: str) -> None:
        """Say that ``text`` was typed here, before it is sent."""
        with self._typed_lock:
            self._typed.append(text)

    def note(self, text: str) -> None:
        """A line of the chat's own, such as "interrupting" after a Ctrl-C."""
        with self._lock:
            # After the terminal's "^C"; a line being streamed is printed again
            # whole when its message comes.
            self._streamed = None
            self.console.print()
            self.console.print(Text(f"· {text}", style="dim"))

    def show(self, item: Event | DeltaBody) -> None:
        with self._lock:
            self._show(item)

    def _show(self, item: Event | DeltaBody) -> None:
        if isinstance(item, DeltaBody):
            self._delta(item.text)
            return
        data = item.data
        if item.kind == "message" and item.source == "agent":
            self._agent_message(str(data.get("text", "")))
            return
        self._end_line()
        match item.kind:
            case "message":
                self._user_message(str(data.get("text", "")))
            case "tool_call":
                self._calls[str(data.get("call_id"))] = (
                    str(data.get("name")),
                    data.get("arguments"),
                )
            case "tool_result":
                name, arguments = self._calls.pop(str(data.get("call_id")), (data.get("name"), "?"))
                line = f"[tool] {call_text(str(name), arguments)} -> {result_text(data)}"
                self.console.print(Text(line, style="yellow"))
            case "status":
                self.console.print(Text(f"· {status_text(data)}", style="dim"))
            case _:
                line = f"error: {data.get('type', 'error')}: {data.get('message', '')}"
                self.console.print(Text(line, style="bold red"))

    def _delta(self, text: str) -> None:
        if self._streamed is None:
            self._streamed = ""
            self.console.print(AGENT_LABEL, end="")
        self._streamed += text
        self.console.print(Text(text), end="", soft_wrap=True)

    def _agent_message(self, text: str) -> None:
        streamed, self._streamed = self._streamed, None
        if streamed is None:
            self.console.print(AGENT_LABEL + Text(text), soft_wrap=True)
        elif text.startswith(streamed):
            self.console.print(Text(text[len(streamed) :]), soft_wrap=True)
        else:
            # The deltas were not a prefix of it (some were lost): the whole text.
            self.console.print()
            self.console.print(AGENT_LABEL + Text(text), soft_wrap=True)

    def _user_message(self, text: str) -> None:
        with self._typed_lock:
            if text in self._typed:
                self._typed.remove(text)
                return
        self.console.print(Text(USER_PROMPT, style="bold green") + Text(text), soft_wrap=True)

    def _end_line(self) -> None:
        """End a line of streamed text that no stored message ended (its step
        raised, or its message is still to come after a status)."""
        if self._streamed is not None:
            self._streamed = None
            self.console.print()
