"""POST /v1/threads/{thread}/messages: the WebSocket send, over HTTP (protocol.md section 3)."""

from __future__ import annotations

import asyncio

import pytest

from adapters.record import B_EVENT, Keys
from tests.conftest import RUN_PREFIX
from tests.http_support import http, ms, start_api_gateway
from tests.support import Client, thread_of, uid

PREFIX = f"{RUN_PREFIX}-http-send"


@pytest.fixture(scope="module")
def api(redis_url, log_dir):
    gateway = start_api_gateway(redis_url, log_dir, PREFIX)  # a send needs no Postgres
    yield gateway
    gateway.terminate()


async def post(api, user, thread, body, client_msg_id):
    async with http(api, user) as client:
        return await client.post(f"/v1/threads/{thread}/messages",
                                 json={"body": body, "client_msg_id": client_msg_id})


async def stored(aredis, thread):
    return [(i.decode(), f[B_EVENT].decode())
            for i, f in await aredis.xrange(Keys(PREFIX).stream(thread))]


async def test_post_answers_201_and_reaches_both_participants_live(api, aredis):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(api.ws_url, alice)
    b = await Client.connect(api.ws_url, bob)
    answer = await post(api, alice, thread, "hello from a script", "http-1")
    assert answer.status_code == 201, answer.text
    assert answer.headers["content-type"] == "application/json"
    posted = answer.json()
    assert posted == {"id": posted["id"], "ts": ms(posted["id"]), "duplicate": False}
    expected = {"type": "event", "thread": thread, "id": posted["id"], "ts": posted["ts"],
                "event": {"kind": "MessageSent", "sender": alice, "body": "hello from a script",
                          "client_msg_id": "http-1"}}
    for client in (a, b):
        assert await client.next("event", timeout=5) == expected
    assert [i for i, _ in await stored(aredis, thread)] == [posted["id"]]
    # a later hello counts the event in the thread's last_id
    again = await Client.connect(api.ws_url, bob)
    assert again.hello["threads"] == [{"thread": thread, "with": alice, "last_id": posted["id"]}]
    for client in (a, b, again):
        await client.close()


async def test_repeat_answers_201_with_the_first_id_and_appends_nothing(api, aredis):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    first = (await post(api, alice, thread, "once", "same-id")).json()
    for body in ("once", "a different body"):  # idempotency is by client_msg_id
        repeat = await post(api, alice, thread, body, "same-id")
        assert repeat.status_code == 201
        assert repeat.json() == {"id": first["id"], "ts": first["ts"], "duplicate": True}
    assert len(await stored(aredis, thread)) == 1
    # the same client_msg_id from the other participant is another command
    other = (await post(api, bob, thread, "mine", "same-id")).json()
    assert other["duplicate"] is False and other["id"] != first["id"]


async def test_http_and_websocket_sends_share_idempotency(api, aredis):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(api.ws_url, alice)
    posted = (await post(api, alice, thread, "via http", "shared-1")).json()
    ack = await a.say(bob, "via ws", client_msg_id="shared-1")
    assert ack["type"] == "ack" and ack["id"] == posted["id"] and ack["duplicate"] is True
    acked = await a.say(bob, "ws first", client_msg_id="shared-2")
    repeat = (await post(api, alice, thread, "ws first", "shared-2")).json()
    assert repeat == {"id": acked["id"], "ts": acked["ts"], "duplicate": True}
    assert len(await stored(aredis, thread)) == 2
    await a.close()


async def test_note_to_self_and_unknown_fields(api, aredis):
    alice = uid("a")
    thread = thread_of(alice, alice)
    async with http(api, alice) as client:
        answer = await client.post(f"/v1/threads/{thread}/messages", json={
            "body": "remember", "client_msg_id": "n-1", "extra": {"ignored": True}})
    assert answer.status_code == 201, answer.text
    ((event_id, payload),) = await stored(aredis, thread)
    assert event_id == answer.json()["id"]
    assert '"body":"remember"' in payload and "extra" not in payload


async def test_concurrent_repeats_append_once(api, aredis):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    answers = await asyncio.gather(*(post(api, alice, thread, "race", "race-1")
                                     for _ in range(10)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 9
    assert len(await stored(aredis, thread)) == 1
