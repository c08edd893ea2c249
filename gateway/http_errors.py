"""HTTP error answers: ``{"error":{"code","message"}}``, status looked up from the code.

The wire codes are the WebSocket ones (``gateway.protocol.code_for``, looked up along
the class hierarchy) plus what only HTTP has: ``unauthorized``, ``too_large``,
``method_not_allowed``. Postgres failures are ``unavailable`` like Redis ones.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import psycopg
import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.protocol import RateLimitedError, UnavailableError, code_for
from schemas.http import ErrorBody, ErrorDetail, HttpBody, encode_body

log = structlog.get_logger("duologue.http")

STATUS = {"bad_frame": 400, "invalid": 400, "unauthorized": 401, "forbidden": 403,
          "not_found": 404, "method_not_allowed": 405, "too_large": 413,
          "rate_limited": 429, "internal": 500, "unavailable": 503}
UNAVAILABLE = ("the event store could not be reached; retry with the same client_msg_id "
               "(a repeat is never appended twice)")
Endpoint = Callable[[Request], Awaitable[Response]]


class UnauthorizedError(Exception):
    code = "unauthorized"

    def __init__(self, message: str, token_given: bool) -> None:
        super().__init__(message)
        self.message = message
        # RFC 6750: a bare challenge when no token came, else name the problem
        self.challenge = 'Bearer error="invalid_token"' if token_given else "Bearer"


class TooLargeError(Exception):
    code = "too_large"


def json_response(body: HttpBody, status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    return Response(encode_body(body), status, headers, media_type="application/json")


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return json_response(body, STATUS.get(code, 500), headers)


def response_for(exc: Exception) -> Response:
    """The answer to an exception raised while serving a request (call in ``except``)."""
    code = _code(exc)
    if code is None:
        log.exception("http_failed")
        return error_response("internal", "internal error")
    headers: dict[str, str] = {}
    if isinstance(exc, UnauthorizedError):
        headers["WWW-Authenticate"] = exc.challenge
    elif isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, -(-exc.retry_after_ms // 1000)))
    return error_response(code, _message(exc, code), headers)


def _code(exc: Exception) -> str | None:
    if isinstance(exc, UnauthorizedError | TooLargeError):
        return exc.code
    if isinstance(exc, psycopg.OperationalError):  # PoolTimeout included
        return "unavailable"
    return code_for(exc)


def _message(exc: Exception, code: str) -> str:
    if code == "unavailable" and not isinstance(exc, UnavailableError):
        return UNAVAILABLE  # driver messages name hosts and ports: not for clients
    return str(getattr(exc, "message", None) or exc) or code


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
