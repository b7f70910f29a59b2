"""Following a conversation's event stream across dropped connections and
server restarts: where to resume, what to give the caller, and when to try
again. Both clients share it, and only connect and read.

The resume point is the seq of the last event given, sent as ``Last-Event-ID``
on every reconnect. It is not httpx-sse's ``last_event_id``: that is kept
across frames as the SSE spec says, and a delta frame (which has no ``id:``)
would carry it along; and a seq at or below the resume point is never given
twice, whatever a server sends.
"""

from __future__ import annotations

import time
from typing import TypeAlias

import httpx
import msgspec
from httpx_sse import ServerSentEvent

from laneway.client._core import Core, conversation_path
from laneway.client.errors import LanewayError, Unavailable, error_from_response
from laneway.deltas import DeltaBody
from laneway.models import Event

DEFAULT_RECONNECT_TIMEOUT_S = 30.0
# Back-off between attempts that fail in a row: none before the first, then
# doubling from FIRST_DELAY_S up to MAX_DELAY_S, so that a restarted server is
# found within a second of its coming back.
FIRST_DELAY_S = 0.1
MAX_DELAY_S = 1.0
# A stream that gave anything, or stayed open this long, was healthy: a failure
# after it starts a new back-off and a new reconnect_timeout_s.
HEALTHY_S = 1.0
# The server sends a keepalive after 15 s of quiet; nothing for this long
# means the connection is dead, and a reconnect is due.
QUIET_S = 45.0
# Answers a reconnect may cure: the server (or a proxy before it) is not ready yet.
_PASSING_STATUSES = frozenset({502, 503, 504})

FollowItem: TypeAlias = Event | DeltaBody

_event = msgspec.json.Decoder(Event)
_delta = msgspec.json.Decoder(DeltaBody)


class Follow:
    """One follow of one conversation's stream, across its connections."""

    def __init__(
        self,
        core: Core,
        conversation_id: str,
        after_seq: int,
        *,
        deltas: bool,
        reconnect_timeout_s: float,
    ) -> None:
        self.core = core
        self.path = conversation_path(conversation_id, "/events/stream")
        self.after_seq = after_seq
        self.deltas = deltas
        self.reconnect_timeout_s = reconnect_timeout_s
        self._resuming = False
        self._opened_at: float | None = None
        self._gave = False
        self._failures = 0
        self._failing_since: float | None = None

    def request(self) -> httpx.Request:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        params: dict[str, object] = {"deltas": self.deltas}
        if self._resuming:
            headers["Last-Event-ID"] = str(self.after_seq)
        else:
            params["after_seq"] = self.after_seq
        self._resuming = True
        return self.core.request("GET", self.path, params=params, headers=headers, read_s=QUIET_S)

    def opened(self, response: httpx.Response) -> None:
        """Raise the error a refused stream answered with (its body read)."""
        if response.status_code != 200:
            raise error_from_response(response)
        self._opened_at = time.monotonic()

    def item(self, sse: ServerSentEvent) -> FollowItem | None:
        """What a frame gives the caller: an event not given before, or a delta."""
        if sse.event == "delta":
            self._gave = True
            return _delta.decode(sse.data)
        if sse.event != "message" or not sse.data:
            return None
        event = _event.decode(sse.data)
        if event.seq <= self.after_seq:
            return None
        self.after_seq = event.seq
        self._gave = True
        return event

    def retry_in(self, error: Exception | None) -> float:
        """Seconds to wait before connecting again, after the stream ended
        (``error`` None) or failed. Raises ``error`` if a reconnect cannot cure
        it (a 404: the conversation is gone), or once attempts have failed for
        ``reconnect_timeout_s``."""
        now = time.monotonic()
        opened_at, self._opened_at = self._opened_at, None
        if self._gave or (opened_at is not None and now - opened_at >= HEALTHY_S):
            self._failures, self._failing_since = 0, None
        self._gave = False
        if error is not None and not _passing(error):
            raise error
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since >= self.reconnect_timeout_s:
            raise error or Unavailable(
                503,
                "stream_ended",
                f"the event stream kept ending at once for {self.reconnect_timeout_s:g} s",
            )
        delay = min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** (self._failures - 1)) if self._failures else 0
        self._failures += 1
        if isinstance(error, LanewayError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay


def _passing(error: Exception) -> bool:
    if isinstance(error, LanewayError):
        return error.status in _PASSING_STATUSES
    return isinstance(error, httpx.TransportError)
