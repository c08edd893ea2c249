"""The Starlette application: routes and the lifespan that opens and closes Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from duologue.settings import Settings
from gateway.service import Gateway
from gateway.session import websocket_endpoint

DEMO_PAGE = files("gateway").joinpath("static/index.html").read_text()


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def demo(_: Request) -> Response:
    return HTMLResponse(DEMO_PAGE)


def create_app(settings: Settings) -> Starlette:
    settings.require("redis_url", "secret")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gateway = Gateway(settings)
        app.state.gateway = gateway
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    routes = [
        Route("/", demo),
        Route("/healthz", healthz),
        WebSocketRoute("/v1/ws", websocket_endpoint),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
