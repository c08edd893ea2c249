"""Operations endpoints, without a token: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.metrics import Metrics
from gateway.node import Gateway
from gateway.read_model import ReadModel

PROBE_TIMEOUT = 1.0  # seconds each backing store gets to answer /readyz


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when Redis answers PING and Postgres ``SELECT 1``; else 503 naming the failure."""
    gateway: Gateway = request.app.state.gateway
    history: ReadModel | None = request.app.state.history
    redis, postgres = await asyncio.gather(
        _probe(gateway.redis.ping()), _probe(history.ping() if history else None))
    status = 200 if redis == postgres == "ok" else 503
    return JSONResponse({"redis": redis, "postgres": postgres}, status)


async def _probe(check: Awaitable[object] | None) -> str:
    if check is None:
        return "not configured"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await check
    except Exception:  # any failure to answer in time means "not ready"
        return "unavailable"
    return "ok"


async def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body, content_type = registry.render(request.headers.get("accept"))
    return Response(body, headers={"Content-Type": content_type})
