"""Run the ``laneway`` client commands as a user does: a subprocess, its output
piped (not a terminal), or under a pseudo-terminal with pexpect; or, where the
process itself is not what is tested, in this one."""

from __future__ import annotations

import io
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from typing import NamedTuple
from unittest import mock

import pexpect

from laneway.cli import main

COMMAND_GUARD_S = 30.0


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without LANEWAY_* (an outer setting must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEWAY_")}
    env.pop("NO_COLOR", None)
    env.update(extra or {})
    return env


class Result(NamedTuple):
    status: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """``laneway ARGS`` run in this process (``laneway.cli.main``), its output
    captured: not a terminal, as when piped; a tenth of the cost of a process."""
    out, err = io.StringIO(), io.StringIO()
    with (
        mock.patch.dict(os.environ, cli_env(env), clear=True),
        redirect_stdout(out),
        redirect_stderr(err),
    ):
        try:
            status = main(list(args))
        except SystemExit as exc:  # argparse's usage errors
            status = exc.code if isinstance(exc.code, int) else 1
    return Result(status, out.getvalue(), err.getvalue())


def laneway(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``laneway ARGS`` to the end, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "laneway", *args],
        capture_output=True,
        text=True,
        env=cli_env(env),
        input=stdin,
        timeout=COMMAND_GUARD_S,
        check=False,
    )


class Running:
    """``laneway ARGS`` left running (``--follow``, ``--watch``), its stdout
    read by a thread, so that a test can wait for a line with a deadline."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "laneway", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(env),
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def lines_until(self, last: Callable[[str], bool], timeout_s: float = 10.0) -> list[str]:
        """Its lines up to the first for which ``last`` is true."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line in {timeout_s} s; got {lines}") from None
            assert line, f"the command ended; got {lines}"
            lines.append(line)
            if last(line):
                return lines

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(COMMAND_GUARD_S)


def spawn(*args: str, env: dict[str, str] | None = None) -> pexpect.spawn:
    """``laneway ARGS`` under a pseudo-terminal."""
    return pexpect.spawn(
        sys.executable,
        ["-m", "laneway", *args],
        env=cli_env(env),
        encoding="utf-8",
        timeout=10,
        dimensions=(40, 160),
    )


def ended(child: pexpect.spawn) -> int | None:
    """Its exit status, once it has ended."""
    child.expect(pexpect.EOF)
    child.close()
    status: int | None = child.exitstatus
    return status
