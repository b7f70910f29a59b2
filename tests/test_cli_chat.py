"""``laneway chat`` under a pseudo-terminal, against the real server under each
backend: what it shows, streaming, Ctrl-C and leaving."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pexpect
import pytest

from laneway.client import Client
from tests.cliproc import ended, spawn
from tests.serverproc import running_server

STREAMING = '{"steps": 2, "think_ms": 500, "deltas": 5}'
LONG_THINK = '{"steps": 2, "think_ms": 30000, "deltas": 50}'


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def url(request: pytest.FixtureRequest) -> Iterator[str]:
    with running_server(request.param, ["--db", ":memory:"]) as server:
        yield server.base_url


def started(url: str, *args: str) -> tuple[pexpect.spawn, str]:
    """A chat at its first prompt, and its conversation's id."""
    child = spawn("chat", "--url", url, *args)
    child.expect(r"conversation (\w+): Ctrl-C stops a run, Ctrl-D leaves")
    conversation_id = child.match.group(1)
    child.expect_exact("you> ")
    return child, conversation_id


def shown(text: str) -> str:
    """A pattern of ``text`` as a terminal shows it, styles switched anywhere in it."""
    return "(?:\x1b\\[[0-9;]*m)*".join(re.escape(char) for char in text)


def streamed_for(child: pexpect.spawn, text: str) -> float:
    """Seconds from the agent's label to the end of ``text`` on the screen."""
    child.expect_exact("agent> ")
    start = time.monotonic()
    child.expect(shown(text))
    return time.monotonic() - start


def test_chat_streams_the_answer_and_goes_on(url: str) -> None:
    child, cid = started(url, "--agent", "sim", "--config", STREAMING)
    child.sendline("hello")
    child.expect_exact("· running")
    # Five deltas, one every 100 ms: the label comes with the first, and the
    # line ends 400 ms later, not all at once.
    assert streamed_for(child, "step 1 of 2 (read 1 new message(s))") > 0.3
    assert streamed_for(child, "step 2 of 2") > 0.3
    child.expect_exact("· finished (agent finished)")
    child.expect_exact("you> ")
    child.sendeof()
    assert ended(child) == 0

    # Going on with it shows what was said, then the prompt.
    child = spawn("chat", cid, "--url", url)
    child.expect(shown("you> hello"))
    child.expect(shown("agent> step 2 of 2"))
    child.expect_exact("you> ")
    child.sendline("more")
    child.expect(shown("agent> step 3 of 2 (read 1 new message(s))"))
    child.expect_exact("you> ")
    # Ctrl-C at the prompt leaves.
    child.sendintr()
    assert ended(child) == 130


def test_ctrl_c_interrupts_the_run_then_leaves(url: str) -> None:
    child, cid = started(url, "--agent", "sim", "--config", LONG_THINK)
    child.sendline("think long")
    child.expect_exact("agent> ")  # its first delta, 600 ms in
    sent = time.monotonic()
    child.sendintr()
    child.expect_exact("· interrupting")
    # The stored message has what the step had said, then its end.
    child.expect(shown("agent> step 1 of 2 (read 1 new message(s)) interrupted"))
    child.expect_exact("· paused (interrupted)")
    child.expect_exact("you> ")
    assert time.monotonic() - sent < 5  # not the 30 s think
    with Client(url) as client:
        assert client.get_conversation(cid).status == "paused"
    child.sendintr()
    assert ended(child) == 130


def test_tool_calls_are_one_line_each(url: str) -> None:
    child, _ = started(
        url, "--agent", "sim", "--config", '{"steps": 1, "tools_per_step": 2, "tool_ms": 5}'
    )
    child.sendline("tools")
    child.expect_exact('[tool] sleep(ms=5.0) -> {"slept_ms":5.0}')
    child.expect_exact('[tool] sleep(ms=5.0) -> {"slept_ms":5.0}')
    child.expect_exact("· finished")
    child.sendeof()
    assert ended(child) == 0
