"""HTTP error answers: ``{"error":{"code","message"}}``, code and status from the one
table in ``gateway/errors.py``."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from adapters.logs import clip
from gateway.errors import STATUS, RateLimitedError, UnauthorizedError, client_message, wire_error
from schemas.http import ErrorBody, ErrorDetail, HttpBody, encode_body

log = structlog.get_logger("duologue.http")

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(body: HttpBody, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(encode_body(body), status, headers, media_type="application/json")


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return json_response(body, STATUS.get(code, 500), headers)


def response_for(exc: Exception) -> Response:
    """The answer to an exception raised while serving a request (call in ``except``)."""
    row = wire_error(exc)
    if row is None:
        log.exception("http_failed")
        return error_response("internal", "internal error")
    headers: dict[str, str] = {}
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = exc.challenge
    elif isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
    if row.code == "unavailable":
        log.warning("http_unavailable", error=clip(f"{type(exc).__name__}: {exc}"))
    return error_response(row.code, client_message(exc, row.code), headers)


def api(endpoint: Endpoint) -> Endpoint:
    """Turn every known failure of ``endpoint`` into its JSON error answer."""

    @functools.wraps(endpoint)
    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            return response_for(exc)

    return guarded


async def http_exception(_: Request, exc: Exception) -> Response:
    """Starlette's own refusals (unknown path, wrong method) in the same JSON shape."""
    assert isinstance(exc, HTTPException)
    fallback = "invalid" if exc.status_code < 500 else "internal"
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, fallback)
    body = ErrorBody(error=ErrorDetail(code=code, message=exc.detail))
    return json_response(body, exc.status_code, dict(exc.headers or {}))
