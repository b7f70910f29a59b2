"""``make demo``: a real small model on this machine, and laneway talking to it.

Starts :mod:`laneway.localmodel` on a free loopback port, then ``laneway serve``
with the ``openai`` agent pointed at it, prints how to talk to it with curl,
and stops both on Ctrl-C.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from laneway.localmodel import MODEL_NAME, running, wait_healthy


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
    with running() as model_url:
        command = ["laneway", "serve", "--host", args.host, "--port", str(args.port)]
        command += ["--backend", args.backend, "--llm-base-url", model_url]
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


if __name__ == "__main__":
    main()
