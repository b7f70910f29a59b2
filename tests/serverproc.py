"""Start the real ``laneway serve`` process on a free loopback port, and always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import httpx

START_GUARD_S = 30.0
STOP_GUARD_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    base_url: str
    port: int

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_GUARD_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def output(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode(errors="replace")


@contextmanager
def running_server(
    backend: str,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[ServerProcess]:
    """``port``: a fixed one, as a server restarted in its predecessor's place takes."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "laneway", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--backend", backend, *extra_args]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LANEWAY_")}
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env)
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", port)
    try:
        _wait_healthy(server)
        yield server
    finally:
        server.stop()


@contextmanager
def lazy_servers(
    extra_args: Sequence[str] = ("--db", ":memory:"),
) -> Iterator[Callable[[str], str]]:
    """A function giving the base URL of one server a backend, each started
    when first asked for, all stopped at the end."""
    started: dict[str, str] = {}
    with ExitStack() as stack:

        def url(backend: str) -> str:
            if backend not in started:
                server = stack.enter_context(running_server(backend, extra_args))
                started[backend] = server.base_url
            return started[backend]

        yield url


def _wait_healthy(server: ServerProcess) -> None:
    deadline = time.monotonic() + START_GUARD_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.output()}")
        try:
            if httpx.get(server.base_url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("server did not become healthy in time")
