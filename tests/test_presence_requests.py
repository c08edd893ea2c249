"""protocol.md section 5: the ``watch`` frame's refusals (over 200 users or a bad user id
``invalid``, a bad shape ``bad_frame``; the socket stays usable and the list unchanged)
and ``GET /v1/presence`` (the same rules; the decisions of docs/presence.md on empty,
missing and repeated users)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.presence_support import HIDDEN, befriend, next_presence, quiet, shape
from tests.support import Client, token, uid


@pytest.mark.parametrize("frame, code", [
    ({"type": "watch", "users": [f"u{n}" for n in range(201)]}, "invalid"),
    ({"type": "watch", "users": ["ok", "not a user"]}, "invalid"),
    ({"type": "watch", "users": [""]}, "invalid"),
    ({"type": "watch", "users": ["x" * 65]}, "invalid"),
    ({"type": "watch", "users": "bob"}, "bad_frame"),
    ({"type": "watch", "users": [1]}, "bad_frame"),
    ({"type": "watch"}, "bad_frame"),
])
async def test_refused_watch_leaves_the_socket_and_the_list(start_gateway, frame, code):
    """Attacks: a refusal that closes the socket, or that empties/replaces the list."""
    gw = start_gateway()
    alice, bob = uid("a"), uid("b")
    me = await Client.connect(gw.ws_url, alice)
    await befriend(me, bob)
    await me.send({"type": "watch", "users": [bob]})
    await next_presence(me, bob)
    await me.send(frame)
    error = await me.next("error")
    assert error["code"] == code, error
    await quiet(me, None, 0.3)  # nothing about the refused list
    user = await Client.connect(gw.ws_url, bob)  # the old list still holds bob
    assert (await next_presence(me, bob, 2.0))["online"] is True
    await me.send({"type": "watch", "users": [f"v{n}" for n in range(200)]})  # 200: fine
    for n in range(200):
        assert shape(await next_presence(me, f"v{n}")) == HIDDEN
    await user.close()
    await me.close()


async def http_presence(gw, user: str, query: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        return await http.get(f"/v1/presence{query}",
                              headers={"Authorization": f"Bearer {token(user)}"})


async def test_http_presence_rules(start_gateway):
    """Attacks: HTTP answering differently from the frame, the limits, and the answers
    for empty, missing and repeated users."""
    gw = start_gateway()
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    me = await Client.connect(gw.ws_url, alice)
    await befriend(me, bob)
    bob_socket = await Client.connect(gw.ws_url, bob)
    answer = await http_presence(gw, alice, f"?users={bob},{carol},{bob}")
    assert answer.status_code == 200
    assert answer.json() == {"presence": [
        {"user": bob, "online": True, "last_seen": None}, {"user": carol, **HIDDEN}]}
    await bob_socket.close()
    offline = (await http_presence(gw, alice, f"?users={bob}")).json()["presence"][0]
    for _ in range(20):  # the close is written a moment after the socket ends
        if not offline["online"]:
            break
        await asyncio.sleep(0.05)
        offline = (await http_presence(gw, alice, f"?users={bob}")).json()["presence"][0]
    assert offline["online"] is False and isinstance(offline["last_seen"], int)
    assert (await http_presence(gw, alice, f"?users={alice}")).json()["presence"] == [
        {"user": alice, "online": True, "last_seen": None}]  # yourself: always
    for query in ("", "?users=", "?users"):
        answer = await http_presence(gw, alice, query)
        assert (answer.status_code, answer.json()) == (200, {"presence": []}), query
    many = ",".join(f"u{n}" for n in range(200))
    assert (await http_presence(gw, alice, f"?users={many}")).status_code == 200
    for query in (f"?users={many},u200", f"?users={bob},", "?users=a%20b", f"?users={'x' * 65}"):
        answer = await http_presence(gw, alice, query)
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid", query
    async with httpx.AsyncClient(base_url=gw.http_url) as http:
        assert (await http.get(f"/v1/presence?users={bob}")).status_code == 401
    await me.close()
