"""Token deltas: pieces of a step's text, sent to live subscribers that ask for them.

A delta is not an event. It is not stored and has no seq, so resuming a stream
by seq, gap detection and the store fallback know nothing of it; the stored
message that ends the step holds the whole text. Deltas are best-effort: a
subscriber too far behind, or one that meets events only the store can give
it, loses the deltas meanwhile and never an event.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

__all__ = ["Delta", "DeltaBody", "coalesce"]


class DeltaBody(msgspec.Struct, frozen=True):
    """A delta's JSON: an SSE ``event: delta`` frame's data."""

    conversation_id: str
    step: int
    text: str


_encode = msgspec.json.Encoder().encode


class Delta:
    """One delta as every subscriber that asked for deltas sends it; built once
    however many there are. ``mark`` and ``index`` are set by its topic."""

    __slots__ = ("index", "json", "mark", "sse", "step", "text")

    def __init__(self, conversation_id: str, step: int, text: str) -> None:
        self.step = step
        self.json = _encode(DeltaBody(conversation_id, step, text))
        # No id: line, so that an SSE client's Last-Event-ID stays the seq of
        # the last event, whatever deltas came after it.
        self.sse = b"event: delta\ndata: %s\n\n" % self.json
        # The same object with its type first: a WebSocket client tells deltas
        # from events, which have no "type", by it.
        self.text = '{"type":"delta",' + self.json[1:].decode()
        self.mark = 0
        self.index = 0


def coalesce(conversation_id: str, pieces: Sequence[tuple[int, str]]) -> list[Delta]:
    """``(step, text)`` pieces as deltas, consecutive pieces of one step joined:
    pieces that reach the loop together go out as one frame, so that a loop too
    busy to take each piece as it comes sends fewer, longer ones."""
    deltas: list[Delta] = []
    step, texts = pieces[0][0], [pieces[0][1]]
    for next_step, text in pieces[1:]:
        if next_step != step:
            deltas.append(Delta(conversation_id, step, "".join(texts)))
            step, texts = next_step, []
        texts.append(text)
    deltas.append(Delta(conversation_id, step, "".join(texts)))
    return deltas
