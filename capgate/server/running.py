"""``capgate serve``'s uvicorn: one line when a signal stops it, and none of uvicorn's shutdown chatter.

A stop is quick (the pool processes are ended within about a second, open requests are cut
``shutdown_grace`` seconds in), and what it prints is one line, ``capgate serve: stopping (Ctrl-C)``,
whatever ``--log-level`` says.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from capgate.waiting import stop_notice

# uvicorn's messages between a signal and the process's end; the notice says it all.
SHUTDOWN_MESSAGES = frozenset({
    "Shutting down",
    "Waiting for connections to close. (CTRL+C to force quit)",
    "Waiting for background tasks to complete. (CTRL+C to force quit)",
    "Cancel %s running task(s), timeout graceful shutdown exceeded",
    "Waiting for application shutdown.",
    "Application shutdown complete.",
    "Finished server process [%d]",
})


class _QuietShutdown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in SHUTDOWN_MESSAGES


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None] | None) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._on_stop is not None:
            # Long-polls answer now, so uvicorn's grace is not spent waiting for them, and none is
            # cancelled with a traceback once it runs out.
            self._on_stop()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            stop_notice("capgate serve", sig)
        super().handle_exit(sig, frame)
        # uvicorn raises the signal again once it has stopped, to die of it: a SIGTERM would then end
        # the process before its exit handlers, and multiprocessing's resource tracker would warn of
        # the pool's leaked semaphores. The stop is complete; the process ends normally instead.
        self._captured_signals.clear()


def run(app: Any, on_stop: Callable[[], None] | None = None, **options: Any) -> None:
    """``uvicorn.run(app, **options)`` for one process, with :class:`_Server`'s stop; ``on_stop`` is
    called as the stop begins, on the event loop."""
    config = uvicorn.Config(app, **options)  # sets up uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(_QuietShutdown())
    server = _Server(config, on_stop)
    server.run()
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)  # a port in use, a failed lifespan: as uvicorn.run
