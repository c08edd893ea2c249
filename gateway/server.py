"""Run the gateway under uvicorn, draining WebSockets with 1001 on SIGTERM."""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from duologue.settings import Settings
from gateway.app import create_app


class DrainingServer(uvicorn.Server):
    """uvicorn closes open WebSockets with 1012; the contract says 1001 after a drain."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        gateway = getattr(self.app.state, "gateway", None)
        if gateway is not None:
            await gateway.drain()
        await super().shutdown(sockets)


def build(settings: Settings, host: str, port: int) -> DrainingServer:
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=host, port=port, ws="websockets-sansio",
        ws_max_size=settings.max_frame, ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_interval, log_config=None, access_log=False,
        lifespan="on", timeout_graceful_shutdown=int(settings.drain_timeout) + 5,
        server_header=False)
    return DrainingServer(config, app)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    build(settings, host, port).run()
