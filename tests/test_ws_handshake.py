"""protocol.md section 2, authentication: a bad or missing token refuses the handshake with
HTTP 403; a good one in the header or the query works.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from adapters.settings import Settings
from gateway.app import _route_path, create_app
from tests.support import token, uid
from tests.ws_errors_support import BAD_TOKENS, assert_refused


async def test_handshake_without_token_is_refused_with_403(shared_gateway):
    await assert_refused(shared_gateway.ws_url)
    await assert_refused(f"{shared_gateway.ws_url}?token=")
    await assert_refused(shared_gateway.ws_url, {"Authorization": "Bearer "})


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_handshake_with_bad_token_is_refused_with_403(shared_gateway, kind):
    bad = BAD_TOKENS[kind](uid("a"))
    await assert_refused(shared_gateway.ws_url, {"Authorization": f"Bearer {bad}"})
    await assert_refused(f"{shared_gateway.ws_url}?token={bad}")


async def test_handshake_token_in_other_scheme_is_refused(shared_gateway):
    good = token(uid("a"))
    await assert_refused(shared_gateway.ws_url, {"Authorization": f"Basic {good}"})
    await assert_refused(shared_gateway.ws_url, {"Authorization": good})


@pytest.mark.parametrize("how", ["header", "query"])
async def test_handshake_with_good_token_works(shared_gateway, how):
    user = uid("a") + "X" * 53  # 64 characters: the longest valid user id
    assert len(user) == 64
    if how == "header":
        ws = await websockets.connect(
            shared_gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(user)}"})
    else:
        ws = await websockets.connect(f"{shared_gateway.ws_url}?token={token(user)}")
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello" and hello["user"] == user
    finally:
        await ws.close()


async def test_a_websocket_to_another_path_is_refused_and_http_on_the_ws_path_is_404(
        shared_gateway):
    """/v1/ws is served straight from the server (gateway.app.WebSocketFirst); every other
    WebSocket path, and plain HTTP on /v1/ws, still go through the router."""
    good = {"Authorization": f"Bearer {token(uid('a'))}"}
    await assert_refused(shared_gateway.ws_url.replace("/v1/ws", "/v1/other"), good)
    await assert_refused(shared_gateway.ws_url + "/more", good)
    async with httpx.AsyncClient(base_url=shared_gateway.http_url, timeout=5) as http:
        assert (await http.get("/v1/ws")).status_code == 404


def test_the_websocket_path_is_matched_without_the_root_path():
    assert _route_path({"path": "/chat/v1/ws", "root_path": "/chat"}) == "/v1/ws"
    assert _route_path({"path": "/v1/ws", "root_path": ""}) == "/v1/ws"
    assert _route_path({"path": "/v1/ws"}) == "/v1/ws"


async def test_a_malformed_upgrade_gets_400_and_logs_no_traceback(start_gateway):
    """An upgrade the WebSocket library refuses (no Sec-WebSocket-Key) is answered 400 and
    closed; the gateway logs no error for it, and goes on serving."""
    gateway = start_gateway()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)  # read to EOF: it is closed
    writer.close()
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    alice = uid("a")
    async with websockets.connect(
            gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(alice)}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "hello"
    log = gateway.log()
    assert "Traceback" not in log and "Fatal error" not in log, log[-3000:]


async def test_another_asgi_server_gets_a_refusal_not_a_socket_that_never_sends():
    """A connection's frames are written by our protocol's writer (``duologue gateway``
    runs it). Served by anything else (here a bare ASGI call without our extension), the
    upgrade is refused with 1011 and the reason logged, instead of a socket whose queue
    nobody sends."""
    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0", secret="s" * 40))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/v1/ws", "root_path": "", "headers": [],
             "query_string": f"token={token(uid('a'))}".encode(), "subprotocols": [],
             "extensions": {"websocket.http.response": {}}}
    await app(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1011, "reason": ""}]
