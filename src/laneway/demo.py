"""``make demo``: a real small model on this machine, and laneway talking to it.

Starts :mod:`laneway.localmodel` on a free loopback port, then ``laneway serve``
with the ``openai`` agent pointed at it, prints how to talk to it with curl,
and stops both on Ctrl-C.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from laneway.localmodel import MODEL_NAME

START_GUARD_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_GUARD_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {START_GUARD_S:g} s")


def instructions(base: str) -> str:
    create = (
        f"curl -s {base}/api/conversations -H 'content-type: application/json' "
        """-d '{"agent": {"kind": "openai", "config": {"system_prompt": "You are brief.", """
        """"tools": ["calculator", "current_time"]}}, "initial_message": "Hello! Who are you?", """
        """"wait": true}'"""
    )
    return f"""
laneway is serving {MODEL_NAME} (SmolLM2-135M-Instruct, on llama.cpp) at {base}

Talk to it, waiting for the answer:
  {create}

Follow the tokens as they stream (in another terminal), then send more:
  curl -N '{base}/api/conversations/ID/events/stream?deltas=true'
  curl -s {base}/api/conversations/ID/messages -H 'content-type: application/json' \\
    -d '{{"content": "Tell me a short joke.", "wait": true}}'

Ctrl-C stops both servers.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="laneway with a real small model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    args = parser.parse_args()
    model_port = free_port()
    model = subprocess.Popen(
        [sys.executable, "-m", "laneway.localmodel", "--port", str(model_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        model_url = f"http://127.0.0.1:{model_port}"
        wait_healthy(model_url + "/health", model)
        command = ["laneway", "serve", "--host", args.host, "--port", str(args.port)]
        command += ["--backend", args.backend, "--llm-base-url", model_url + "/v1"]
        command += ["--llm-models", MODEL_NAME]
        server = subprocess.Popen([sys.executable, "-m", *command])
        try:
            base = f"http://{args.host}:{args.port}"
            wait_healthy(base + "/health", server)
            print(instructions(base), flush=True)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.terminate()
            server.wait()
    finally:
        model.terminate()
        model.wait()


if __name__ == "__main__":
    main()
