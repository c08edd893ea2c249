"""Run the gateway under uvicorn, draining WebSockets with 1001 on SIGTERM."""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from adapters.settings import Settings
from gateway.app import WebSocketFirst, create_app, upgrade_screen
from gateway.upgrade_screen import http_protocol_class
from gateway.workers import reuse_port_socket
from gateway.ws_protocol import protocol_class


class DrainingServer(uvicorn.Server):
    """uvicorn closes open WebSockets with 1012; the contract says 1001 after a drain."""

    def __init__(
        self, config: uvicorn.Config, app: Starlette, on_ready: Callable[[], None] | None = None
    ) -> None:
        super().__init__(config)
        self.app = app
        self.on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything alive now (modules, the app, its pools) lives as long as the process:
        # out of the collector's sight, a full collection under load pauses the loop for
        # 9-15 ms instead of 42-56 ms (docs/benchmarks.md, "a hostile user").
        gc.collect()
        gc.freeze()
        if self.started and self.on_ready is not None:
            self.on_ready()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        gateway = getattr(self.app.state, "gateway", None)
        if gateway is not None:
            await gateway.drain()
        await super().shutdown(sockets)


def build(
    settings: Settings, host: str, port: int, on_ready: Callable[[], None] | None = None
) -> DrainingServer:
    app = create_app(settings)
    config = uvicorn.Config(
        WebSocketFirst(app), host=host, port=port, ws=protocol_class(settings.ws_compression),
        http=http_protocol_class(upgrade_screen(app)),
        ws_max_size=settings.max_frame, ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_interval, log_config=None, access_log=False,
        lifespan="on", timeout_graceful_shutdown=int(settings.drain_timeout) + 5,
        server_header=False)
    return DrainingServer(config, app, on_ready)


def serve(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000,
    on_ready: Callable[[], None] | None = None, reuse_port: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT; ``on_ready`` runs once the port is listening.
    ``reuse_port``: bind with SO_REUSEPORT, beside other workers (``gateway.workers``)."""
    server = build(settings, host, port, on_ready)
    server.run(sockets=[reuse_port_socket(host, port)] if reuse_port else None)
