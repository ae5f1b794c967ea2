"""Run the app with uvicorn: ``serve`` in the foreground (``phi3-aipc serve``), ``BackgroundServer`` on a free
loopback port in a background thread until ``stop()`` (tests, benchmarks, notebooks)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from phi3_aipc.errors import Phi3AIPCError

#: The longest uvicorn waits for connections once the app has stopped every generation (a backstop: they end
#: within a token or two).
GRACEFUL_S = 5


class Server(uvicorn.Server):
    """uvicorn's server, which tells the app it is shutting down before it waits for open connections: uvicorn
    alone waits for every running stream to finish (minutes for a long answer) before Ctrl-C takes effect."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        closing = getattr(getattr(self.config.app, "state", None), "closing", None)
        if closing is not None:
            closing.begin()
        await super().shutdown(sockets)


def serve(app: Any, host: str, port: int) -> None:
    """Serve ``app`` until Ctrl-C (or SIGTERM), which stops every generation and ends every stream at once."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=GRACEFUL_S
    )
    Server(config).run()


class BackgroundServer:
    """``with BackgroundServer(app) as server: ... server.base_url ...``: serves on 127.0.0.1, a port the OS picks."""

    def __init__(self, app: Any, host: str = "127.0.0.1"):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=GRACEFUL_S)
        self._server = Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="phi3-aipc-server", daemon=True
        )

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise Phi3AIPCError(f"The server on port {self.port} did not start.")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
