"""``GET /openapi.json`` and ``GET /asyncapi.json``: the machine-readable contracts, without
a token. Each is built from the schemas and this gateway's settings on first request, then
served from memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from adapters.settings import Settings
from gateway.asyncapi import asyncapi
from gateway.node import Gateway
from gateway.openapi import openapi

Builder = Callable[[Settings], dict[str, Any]]


def _served(build: Builder) -> Callable[[Request], Any]:
    cache: dict[int, bytes] = {}

    async def endpoint(request: Request) -> Response:
        gateway: Gateway = request.app.state.gateway
        key = id(gateway.settings)
        if key not in cache:
            cache.clear()
            cache[key] = msgspec.json.encode(build(gateway.settings))
        return Response(cache[key], media_type="application/json")

    return endpoint


openapi_json = _served(openapi)
asyncapi_json = _served(asyncapi)
