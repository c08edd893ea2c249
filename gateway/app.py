"""The Starlette application: routes, and the lifespan that opens and closes Redis and Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from adapters.settings import Settings
from gateway import api_docs, health, http_api, http_presence, http_search
from gateway.http_errors import http_exception
from gateway.metrics import HttpMetricsMiddleware, Metrics
from gateway.node import Gateway
from gateway.read_model import ReadModel
from gateway.session import refused_before_upgrade, websocket_endpoint
from gateway.upgrade_screen import Screen

WS_PATH = "/v1/ws"
DEMO_PAGE = files("gateway").joinpath("static/index.html").read_text()
# The demo page's client library: clients/js/dist, copied by its `npm run build`
CLIENT_MODULES = {entry.name: entry.read_bytes()
                  for entry in files("gateway").joinpath("static/client").iterdir()
                  if entry.name.endswith(".js")}


async def demo(_: Request) -> Response:
    return HTMLResponse(DEMO_PAGE)


async def client_module(request: Request) -> Response:
    body = CLIENT_MODULES.get(request.path_params["name"])
    if body is None:
        raise HTTPException(404, "no such module")
    return Response(body, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "no-cache"})


class WebSocketFirst:
    """The application as the server runs it: ``/v1/ws`` goes straight to its endpoint,
    everything else through Starlette. A socket holds its call chain for its whole life;
    Starlette's (error and exception middleware, the metrics middleware, which only counts
    HTTP, the router, the route) cost ~4 KiB an idle socket and a call per frame sent, and
    did nothing for a WebSocket that the endpoint does not do itself (docs/benchmarks.md).
    """

    def __init__(self, app: Starlette, path: str = WS_PATH) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _route_path(scope) == self.path:
            scope["app"] = self.app  # as Starlette sets it: the endpoint reads app.state
            await websocket_endpoint(WebSocket(scope, receive, send))
        else:
            await self.app(scope, receive, send)


def upgrade_screen(app: Starlette) -> Screen:
    """The running gateway's check of an upgrade before it becomes a WebSocket
    (``gateway.upgrade_screen``): nothing is refused before the application has started."""

    def check(path: str, token: str, client: str) -> Response | None:
        gateway = getattr(app.state, "gateway", None)
        if gateway is None or path != WS_PATH:
            return None
        return refused_before_upgrade(gateway, token, client)
    return check


def _route_path(scope: Scope) -> str:
    """The path without the server's ``root_path``, as Starlette's router matches it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def create_app(settings: Settings) -> Starlette:
    settings.require("redis_url").require_gateway_secret()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Without DATABASE_URL the read API answers 503; WebSockets and sends still work
        # (and replays that need the archive answer `unavailable`).
        history = ReadModel(settings.database_url, settings.pg_pool) if settings.database_url \
            else None
        app.state.history = history
        gateway = Gateway(settings, metrics, history)
        app.state.gateway = gateway
        await gateway.start()
        if history is not None:
            await history.open()  # connects in the background: Postgres may be down
        try:
            yield
        finally:
            if history is not None:
                await history.close()
            await gateway.stop()

    routes = [
        Route("/", demo),
        Route("/client/{name}", client_module),
        Route("/healthz", health.healthz),
        Route("/readyz", health.readyz),
        Route("/metrics", health.metrics),
        Route("/openapi.json", api_docs.openapi_json),
        Route("/asyncapi.json", api_docs.asyncapi_json),
        Route("/v1/threads", http_api.list_threads),
        Route("/v1/threads/{thread}/messages", http_api.messages, methods=["GET", "POST"]),
        Route("/v1/presence", http_presence.presence),
        Route("/v1/search", http_search.search_messages),
        WebSocketRoute(WS_PATH, websocket_endpoint),  # WebSocketFirst takes it first
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(HttpMetricsMiddleware, metrics=metrics)],
                    exception_handlers={HTTPException: http_exception})
    app.state.metrics = metrics
    return app
