"""Serving the app: the one module that knows about uvicorn, hypercorn and signals.

asyncio runs under uvicorn and trio under hypercorn. Both serve the same ASGI
app; SIGINT and SIGTERM start a graceful shutdown, which runs the app's lifespan
shutdown before the process exits.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any, cast

from laneway.api.limits import server_head_limit
from laneway.app import create_app
from laneway.config import Settings
from laneway.service import ConversationService
from laneway.tools import ToolRegistry

# uvicorn's exit status when the lifespan startup fails.
STARTUP_FAILED = 3


def _service(app: Any) -> ConversationService | None:
    """The app's service while its lifespan runs."""
    service: ConversationService | None = getattr(app.state, "service", None)
    return service


def serve(settings: Settings, tools: ToolRegistry | None = None) -> int:
    """Serve until SIGINT or SIGTERM; return the process exit status."""
    app = create_app(settings, tools)
    _freeze_startup_objects(settings.backend)
    if settings.backend == "trio":
        import trio

        status: int = trio.run(_serve_hypercorn, app, settings)
    else:
        status = _serve_uvicorn(app, settings)
    _exit_past_abandoned_threads(status)
    return status


def _freeze_startup_objects(backend: str) -> None:
    """Put every object that exists before serving (modules, classes, the app) out
    of the garbage collector's reach. Measured under load, a full collection that
    walked them all took ~40 ms and stalled every request in flight; with them
    frozen the slowest collection took ~3 ms."""
    for module in ("trio", "hypercorn.trio") if backend == "trio" else ("uvicorn",):
        importlib.import_module(module)
    gc.collect()
    gc.freeze()


def _exit_past_abandoned_threads(status: int) -> None:
    """A run whose step outlived the shutdown grace period was left behind in its
    worker thread, already marked paused in the store. asyncio's workers are not
    daemon threads, so interpreter exit would wait for that step: exit now."""
    main = threading.main_thread()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not main):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _serve_uvicorn(app: Any, settings: Settings) -> int:
    import uvicorn

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        access_log=False,
        # The app's own shutdown already waits shutdown_grace_s for runs to pause;
        # this bounds how long open connections may keep the server up.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
        h11_max_incomplete_event_size=server_head_limit(settings.max_header_bytes),
    )
    server = _uvicorn_server_class()(config)
    server.run()
    return 0 if server.started else STARTUP_FAILED


def _uvicorn_server_class() -> Any:
    import uvicorn

    class UvicornServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # uvicorn re-raises a captured signal after shutdown, so the process
            # dies "by signal". A signal is how laneway is asked to stop: after a
            # clean shutdown it exits 0, as it does under hypercorn.
            super().handle_exit(sig, frame)
            self._captured_signals.clear()
            # A signal handler may interrupt the loop anywhere: the service
            # drains from the loop itself, on its next turn.
            service = _service(self.config.app)
            if service is not None:
                service.drain_soon()

    return UvicornServer


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _serve_hypercorn(app: Any, settings: Settings) -> int:
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [_bind_address(settings.host, settings.port)]
    config.graceful_timeout = max(1.0, settings.shutdown_grace_s)
    config.h11_max_incomplete_size = server_head_limit(settings.max_header_bytes)
    config.loglevel = settings.log_level.upper()
    config.accesslog = None
    # Route hypercorn's messages through stdlib logging as configured by the CLI,
    # instead of its own stderr handler, so they are printed once.
    config.errorlog = logging.getLogger("hypercorn.error")
    stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                service = _service(app)
                if service is not None:
                    service.drain()
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        try:
            await hypercorn_serve(cast(Any, app), config, shutdown_trigger=stop.wait)
        except BaseException as exc:
            # hypercorn reports a failed lifespan startup as an exception group.
            failure = _startup_failure(exc)
            if failure is not None:
                # hypercorn does not say why; its message carries the app's traceback.
                logging.getLogger("laneway").error("%s", failure)
                nursery.cancel_scope.cancel()
                return STARTUP_FAILED
            raise
        nursery.cancel_scope.cancel()
    return 0


def _startup_failure(exc: BaseException) -> BaseException | None:
    from hypercorn.utils import LifespanFailureError

    if isinstance(exc, LifespanFailureError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _startup_failure(inner)
            if found is not None:
                return found
    return None
