"""The HTTP API (protocol.md section 3): thread list and history from Postgres, send to Redis.

Reads are served from the projection (``gateway.read_model``); the send goes through the
WebSocket's own path (``Gateway.post``), so rules, rate limit and idempotency are one.
"""

from __future__ import annotations

import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from adapters.tokens import AuthError, bearer, read_token
from domain.commands import SendMessage
from domain.errors import InvalidError
from domain.ids import check_participant, ms_of, sort_key
from gateway import thread_cursor
from gateway.errors import FrameError, TooLargeError, UnauthorizedError, UnavailableError
from gateway.http_errors import api, json_response
from gateway.node import Gateway
from gateway.read_model import ReadModel
from schemas.http import MessagePage, Posted, PostMessage, ThreadList, decode_post_message

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
THREADS_PAGE = 500  # GET /v1/threads: the default and largest page (protocol.md section 8)
_DIGITS = re.compile(r"[0-9]+")


def authenticate(request: Request) -> str:
    """The user of the request's Bearer token (same rules as the WebSocket)."""
    gateway: Gateway = request.app.state.gateway
    token = bearer(request.headers.get("authorization"))
    try:
        identity = read_token(token, gateway.settings.secret)
    except AuthError as exc:
        raise UnauthorizedError(str(exc), token_given=bool(token)) from None
    request.state.user = identity.user  # for the request's log line
    return identity.user


async def authenticate_read(request: Request) -> str:
    """``authenticate``, then one token of the user's read budget (protocol.md section 8:
    HTTP reads share it with ``sync`` and ``watch``, across gateways)."""
    user = authenticate(request)
    gateway: Gateway = request.app.state.gateway
    await gateway.store.take_read(user, gateway.settings.read_rate, gateway.settings.read_burst)
    return user


def history_of(request: Request) -> ReadModel:
    history: ReadModel | None = request.app.state.history
    if history is None:
        raise UnavailableError("DATABASE_URL is not set on this gateway: no history to read")
    return history


@api
async def list_threads(request: Request) -> Response:
    """The caller's threads, newest activity first, in pages of ``limit`` (at most 500);
    ``before`` is the previous page's ``next_before`` (opaque), null on the last page."""
    user = await authenticate_read(request)
    limit = parse_limit(request.query_params.get("limit"), THREADS_PAGE, THREADS_PAGE)
    raw = request.query_params.get("before")
    before = thread_cursor.decode(raw) if raw is not None else None
    threads = await history_of(request).threads(user, limit + 1, before)
    shown = threads[:limit]
    more = len(threads) > limit
    return json_response(ThreadList(
        threads=shown, next_before=thread_cursor.encode(shown[-1]) if more else None))


@api
async def messages(request: Request) -> Response:
    if request.method == "POST":
        return await post_message(request)
    user = await authenticate_read(request)
    thread = request.path_params["thread"]
    check_participant(thread, user)
    query = request.query_params
    limit = parse_limit(query.get("limit"))
    after, before = query.get("after"), query.get("before")
    page = await history_of(request).page(
        thread, sort_key(after) if after is not None else 0,
        sort_key(before) if before is not None else None, limit + 1)
    shown = page.messages[:limit]
    more = len(page.messages) > limit  # older messages exist within the bounds
    return json_response(MessagePage(
        thread=thread, messages=shown, projected_up_to=page.projected_up_to,
        next_before=shown[-1].id if more else None))


async def post_message(request: Request) -> Response:
    user = authenticate(request)
    gateway: Gateway = request.app.state.gateway
    payload = decode_post(await read_body(request, gateway.settings.max_frame))
    command = SendMessage(user, request.path_params["thread"], payload.body,
                          payload.client_msg_id, payload.reply_to)
    appended = await gateway.post(command)
    ts = ms_of(appended.id)
    return json_response(Posted(id=appended.id, ts=ts, duplicate=appended.duplicate), 201)


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    """``limit``: ``default`` when absent; above ``maximum`` is ``maximum``; not a positive
    integer is ``invalid``."""
    if raw is None:
        return default
    if _DIGITS.fullmatch(raw) is None:
        raise InvalidError(f"limit must be a positive integer, got {raw[:40]!r}")
    digits = raw.lstrip("0")
    if not digits:
        raise InvalidError("limit must be at least 1")
    return maximum if len(digits) > 6 else min(int(digits), maximum)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if _DIGITS.fullmatch(declared) and (len(declared) > 18 or int(declared) > limit):
        raise TooLargeError(f"request body over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLargeError(f"request body over {limit} bytes")
    return bytes(body)


def decode_post(data: bytes) -> PostMessage:
    """The JSON body of a send; shape errors are ``bad_frame`` with msgspec's JSON path."""
    if not data.strip():
        raise FrameError("empty request body: expected a JSON object")
    try:
        return decode_post_message(data)
    except msgspec.DecodeError as exc:  # ValidationError included
        raise FrameError(str(exc)) from None
    except UnicodeDecodeError:
        raise FrameError("request body is not UTF-8") from None
    except RecursionError:
        raise FrameError("JSON nested too deeply") from None
