"""``laneway serve`` as a subprocess on a free loopback port, watched through /proc.

The server is started with the venv's own interpreter, on a fresh temporary
database unless told otherwise, and is always stopped: SIGTERM first, then
SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
READY_GUARD_S = 30.0
STOP_GUARD_S = 15.0
START_ATTEMPTS = 3
SAMPLE_EVERY_S = 0.05


@dataclass(frozen=True)
class ServerOptions:
    backend: str = "asyncio"
    lanes_mode: str = "isolated"
    run_lane_size: int = 10
    tool_lane_size: int = 16
    io_lane_size: int = 8
    run_max_waiting: int = 10_000
    # None: a fresh database in a temporary directory; a str is a
    # postgresql:// URL, which several servers may share.
    db: Path | str | None = None
    # Short, so that stopping a server with runs still going takes little time.
    shutdown_grace_s: float = 1.0
    stop_guard_s: float = STOP_GUARD_S
    # Further flags, such as the openai agent's provider.
    extra: tuple[str, ...] = ()

    def args(self, port: int, db: Path | str) -> list[str]:
        return [
            *("--host", HOST, "--port", str(port), "--backend", self.backend),
            *("--db", str(db), "--lanes-mode", self.lanes_mode),
            *("--run-lane-size", str(self.run_lane_size)),
            *("--tool-lane-size", str(self.tool_lane_size)),
            *("--io-lane-size", str(self.io_lane_size)),
            *("--run-max-waiting", str(self.run_max_waiting)),
            *("--shutdown-grace-s", str(self.shutdown_grace_s)),
            # Per-run log lines would cost the server time that the benchmark measures.
            *("--log-level", "warning"),
            *self.extra,
        ]


@dataclass(frozen=True)
class ProcStatus:
    """A reading of /proc/PID/status: thread count, resident and peak resident KiB."""

    threads: int
    rss_kib: int
    hwm_kib: int


def read_status(pid: int) -> ProcStatus | None:
    """None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    if len(fields) < 3:  # a zombie has no memory lines
        return None
    return ProcStatus(fields["Threads"], fields["VmRSS"], fields["VmHWM"])


class ProcSampler:
    """Samples a process's status in a thread, keeping the peaks."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_threads = 0
        self.peak_rss_kib = 0
        self.last: ProcStatus | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="proc-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> ProcStatus | None:
        status = read_status(self.pid)
        if status is not None:
            self.last = status
            self.peak_threads = max(self.peak_threads, status.threads)
            self.peak_rss_kib = max(self.peak_rss_kib, status.rss_kib)
        return status

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.sample()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    sampler: ProcSampler
    # True when the server did not exit within its guard after SIGTERM.
    killed: bool = False
    # Seconds from SIGTERM to the process's exit (NaN until it has stopped).
    stop_s: float = float("nan")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_server(options: ServerOptions) -> Iterator[Server]:
    """A ready server (GET /ready answered 200), stopped on leaving, even on error."""
    with tempfile.TemporaryDirectory(prefix="laneway-bench-") as tmp:
        db = options.db if options.db is not None else Path(tmp) / "x.db"
        server = _start(options, db, Path(tmp) / "server.log")
        try:
            yield server
        finally:
            _stop(server, options.stop_guard_s)


@contextmanager
def running_servers(options: Sequence[ServerOptions]) -> Iterator[list[Server]]:
    """Ready servers, one per options, started in turn; on leaving, all are
    asked to stop at once and then waited for, so that their shutdown graces
    overlap. Those started are stopped even if a later one fails to start."""
    with tempfile.TemporaryDirectory(prefix="laneway-bench-") as tmp:
        servers: list[Server] = []
        try:
            for index, each in enumerate(options):
                db = each.db if each.db is not None else Path(tmp) / f"x{index}.db"
                servers.append(_start(each, db, Path(tmp) / f"server{index}.log"))
            yield servers
        finally:
            _stop_all(servers, max((o.stop_guard_s for o in options), default=STOP_GUARD_S))


def _start(options: ServerOptions, db: Path | str, log_path: Path) -> Server:
    # A free port can be taken by someone else before the server binds it;
    # starting again on another port is the remedy.
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANEWAY_")}
    for attempt in range(1, START_ATTEMPTS + 1):
        port = free_port()
        cmd = [sys.executable, "-m", "laneway", "serve", *options.args(port, db)]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        sampler = ProcSampler(proc.pid)
        sampler.start()
        server = Server(proc, port, log_path, sampler)
        try:
            _wait_ready(server)
        except BaseException:
            exited_early = proc.poll() is not None
            _stop(server, options.stop_guard_s)
            if attempt == START_ATTEMPTS or not exited_early:
                raise
            continue
        return server
    raise AssertionError("unreachable")


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_GUARD_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log_tail()}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready within {READY_GUARD_S:.0f} s:\n{server.log_tail()}")


def _stop(server: Server, guard_s: float) -> None:
    _stop_all([server], guard_s)


def _stop_all(servers: Sequence[Server], guard_s: float) -> None:
    """SIGTERM to every server still running, then wait for each; SIGKILL to any
    not gone within ``guard_s`` of its signal."""
    signalled: list[tuple[Server, float]] = []
    try:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.send_signal(signal.SIGTERM)
                signalled.append((server, time.monotonic()))
        for server, started in signalled:
            try:
                server.proc.wait(max(0.0, started + guard_s - time.monotonic()))
                server.stop_s = time.monotonic() - started
            except subprocess.TimeoutExpired:
                server.killed = True
                server.proc.kill()
                server.proc.wait()
    finally:
        for server in servers:
            # Left running only if the waiting above was itself interrupted.
            if server.proc.poll() is None:
                server.killed = True
                server.proc.kill()
                server.proc.wait()
            server.sampler.stop()
