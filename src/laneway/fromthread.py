"""Calling into the event loop from another thread without waiting for it.

``anyio.from_thread.run_sync`` waits for the loop to run the call; a thread
that must not wait on a busy loop (a run thread publishing, the listener's
thread handing on a notification) schedules it instead, through anyio's
backend hook (asyncio's ``call_soon_threadsafe``, trio's ``run_sync_soon``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVarTuple, Unpack

from anyio.lowlevel import EventLoopToken

Ts = TypeVarTuple("Ts")


def call_soon(token: EventLoopToken, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> bool:
    """Schedule ``fn(*args)`` on the loop of ``token``, in a context where anyio
    knows the running backend; calls from one thread keep their order. False
    if the loop has ended, and nothing will run it."""
    try:
        token.backend_class.run_sync_soon(fn, args, token.native_token)
    except RuntimeError:
        return False
    return True
