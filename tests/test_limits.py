"""Per-user limits that hold across gateways (protocol.md section 8). Two real gateway
processes on one Redis; each test turns on the limit it attacks (tests/conftest.py starts
gateways with them off)."""

from __future__ import annotations

import asyncio
import json

import httpx
import websockets

from gateway.connection import Connection
from tests.support import Client, handshake_refusal, thread_of, token, uid


async def _typings(client: Client, thread: str) -> int:
    return len([f for f in client.frames if f.get("type") == "typing" and
                f.get("thread") == thread])


async def test_typing_is_relayed_once_per_user_and_thread_every_2_s_across_gateways(
        start_gateway):
    """Attacks: a typing flood relayed whole (a victim's sockets fill and close with
    1013), a throttle per gateway process (two sockets on two gateways double it), or per
    thread only (the other participant's typing swallowed)."""
    env = {"DUOLOGUE_TYPING_EVERY": "2"}
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    b = await Client.connect(one.ws_url, bob)
    try:
        for _ in range(20):
            await a1.send({"type": "typing", "thread": thread})
            await a2.send({"type": "typing", "thread": thread})
        await b.next("typing", thread=thread, user=alice)
        await b.send({"type": "typing", "thread": thread})  # bob's own is not alice's
        await a1.next("typing", thread=thread, user=bob)
        await b.say(alice, "marker")  # after it, every typing relayed so far has arrived
        await a1.next("event", thread=thread)
        assert await _typings(b, thread) == 0  # next() took the one relayed
        await asyncio.sleep(2.1)
        await a2.send({"type": "typing", "thread": thread})
        await b.next("typing", thread=thread, user=alice)
        assert not [f for f in a1.frames + a2.frames if f.get("type") == "error"]
    finally:
        for client in (a1, a2, b):
            await client.close()


async def test_typing_never_closes_a_receiver_whose_queue_is_filling():
    """Attacks: typing frames counted as frames a slow receiver must take (protocol.md
    section 8: a receiver is never closed for typing), and events dropped instead."""
    conn = Connection("bob", capacity=8)
    for _ in range(100):
        conn.push_droppable('{"type":"typing"}')
    assert conn.close_code is None and len(conn.frames) == 4  # up to half the queue
    for n in range(4):
        conn.push(f'{{"type":"event","n":{n}}}')  # events still have the other half
    assert conn.close_code is None and len(conn.frames) == 8


async def _burst(clients: list[Client], to: str, count: int, body: str = "hi") -> list[dict]:
    """``count`` sends, alternating over ``clients``, all in flight at once."""
    answers = await asyncio.gather(*(clients[n % len(clients)].say(
        to, body, client_msg_id=uid(f"b{n}")) for n in range(count)))
    return list(answers)


async def test_the_command_budget_holds_across_gateways(start_gateway):
    """Attacks: a budget kept per gateway process (a user with sockets on N gateways gets
    N times the rate), a duplicate resend charged (a client retrying after a lost ack is
    refused), a retry hint that does not work."""
    env = {"DUOLOGUE_RATE": "5", "DUOLOGUE_BURST": "10"}
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    try:
        answers = await _burst([a1, a2], bob, 24)
        acked = [x for x in answers if x["type"] == "ack"]
        limited = [x for x in answers if x.get("code") == "rate_limited"]
        assert 10 <= len(acked) <= 11 and len(acked) + len(limited) == 24, answers
        assert all(0 < x["retry_after_ms"] <= 200 for x in limited), limited
        again = await a2.say(bob, "again", client_msg_id=_cmid_of(a1, acked))
        assert again["type"] == "ack" and again["duplicate"] is True  # free
        await asyncio.sleep(max(x["retry_after_ms"] for x in limited) / 1000 + 0.05)
        assert (await a1.say(bob, "after the wait"))["type"] == "ack"
    finally:
        await a1.close()
        await a2.close()


def _cmid_of(client: Client, acked: list[dict]) -> str:
    """The client_msg_id of an acked send (the ack carries it as ``ref``)."""
    return str(acked[0]["ref"])


async def test_the_body_byte_budget_holds_across_gateways(start_gateway):
    """Attacks: bodies limited by count only (one account fills Redis with 4,000-character
    messages), bytes counted as characters (a multi-byte body costs its UTF-8 size)."""
    env = {"DUOLOGUE_RATE_BYTES": "1000"}  # a burst of 4,000 bytes, then 1,000 a second
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    try:
        body = "é" * 750  # 750 characters, 1,500 bytes
        first = [await a1.say(bob, body, client_msg_id=uid("x")),
                 await a2.say(bob, body, client_msg_id=uid("y"))]
        assert [x["type"] for x in first] == ["ack", "ack"]
        third = await a1.say(bob, body, client_msg_id=uid("z"))  # 1,000 bytes left
        assert third["code"] == "rate_limited", third
        assert 300 <= third["retry_after_ms"] <= 600, third  # 500 bytes at 1,000/s
        assert (await a2.say(bob, "é" * 400, client_msg_id=uid("w")))["type"] == "ack"
        other = await Client.connect(two.ws_url, bob)  # another user's budget is its own
        try:
            assert (await other.say(alice, body))["type"] == "ack"
        finally:
            await other.close()
    finally:
        await a1.close()
        await a2.close()


async def test_sync_watch_and_http_reads_share_one_budget_across_gateways(start_gateway):
    """Attacks: reads without a limit (a client looping sync or GET exhausts Redis and the
    Postgres pool for everyone; a reconnect storm re-reads every thread list), a budget
    per gateway or per kind of read."""
    env = {"DUOLOGUE_READ_RATE": "2", "DUOLOGUE_READ_BURST": "6"}  # two go to the hellos
    one, two = start_gateway(**env), start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a1 = await Client.connect(one.ws_url, alice)
    a2 = await Client.connect(two.ws_url, alice)
    try:
        await a1.send({"type": "sync", "thread": thread, "after": "0"})
        await a1.next("synced", thread=thread)
        await a2.send({"type": "watch", "users": [bob]})
        await a2.next("presence", user=bob)
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token(alice)}"}) as http:
            url = f"{two.http_url}/v1/presence"
            assert (await http.get(url, params={"users": bob})).status_code == 200
            await a2.send({"type": "sync", "thread": thread, "after": "0"})
            await a2.next("synced", thread=thread)  # the sixth read: the burst is spent
            await a1.send({"type": "sync", "thread": thread, "after": "0"})
            refused = await a1.next("error")
            assert refused["code"] == "rate_limited" and 0 < refused["retry_after_ms"] <= 500
            answer = await http.get(url, params={"users": bob})
            assert answer.status_code == 429 and answer.json()["error"]["code"] == "rate_limited"
            assert answer.headers["Retry-After"] == "1"
            assert await _refused_status(one.ws_url, alice) == 429  # a hello is a read too
            await a2.send({"type": "watch", "users": [bob]})
            assert (await a2.next("error"))["code"] == "rate_limited"
            await asyncio.sleep(0.55)  # one token back (2 a second)
            await a1.send({"type": "sync", "thread": thread, "after": "0"})
            await a1.next("synced", thread=thread)
        assert (await a1.say(bob, "sends have their own budget"))["type"] == "ack"
    finally:
        await a1.close()
        await a2.close()


async def _refused_status(url: str, user: str) -> int | None:
    """The HTTP status a handshake was refused with (None: it was accepted)."""
    try:
        client = await Client.connect(url, user)
    except websockets.InvalidStatus as exc:
        return exc.response.status_code
    await client.close()
    return None


async def test_a_users_sockets_are_capped_across_gateways(start_gateway):
    """Attacks: no cap (one account holds thousands of sockets), a cap per gateway
    process, a place never given back when a socket closes, or when its gateway dies."""
    env = {"DUOLOGUE_MAX_SOCKETS": "3", "DUOLOGUE_PRESENCE_LEASE": "1"}
    one, two = start_gateway(**env), start_gateway(**env)
    alice = uid("a")
    held = [await Client.connect(one.ws_url, alice), await Client.connect(one.ws_url, alice),
            await Client.connect(two.ws_url, alice)]
    try:
        assert await _refused_status(two.ws_url, alice) == 429
        assert await _refused_status(one.ws_url, alice) == 429
        assert await _refused_status(two.ws_url, uid("b")) is None  # others have their own
        await held.pop().close()
        await asyncio.sleep(0.3)  # the closed socket's place is written back
        held.append(await Client.connect(two.ws_url, alice))
        assert await _refused_status(two.ws_url, alice) == 429
        one.kill()  # its two sockets count until its lease ends (1 s here)
        await asyncio.sleep(1.5)
        held.append(await Client.connect(two.ws_url, alice))
        held.append(await Client.connect(two.ws_url, alice))
        assert await _refused_status(two.ws_url, alice) == 429
    finally:
        for client in held:
            await client.close()


async def test_a_flood_of_refused_frames_is_one_log_line_a_second_per_socket(start_gateway):
    """Attacks: one log line per refused frame, so a client flooding frames it knows will
    be refused (5,000 a second in the hostile benchmark) turns the gateway's log into the
    bottleneck and fills an operator's disk. Every frame is still answered."""
    gateway = start_gateway(DUOLOGUE_READ_RATE="1", DUOLOGUE_READ_BURST="1")
    alice = uid("a")
    thread = thread_of(alice, alice)
    client = await Client.connect(gateway.ws_url, alice)  # the hello takes the one token
    try:
        for _ in range(200):
            await client.send({"type": "sync", "thread": thread, "after": "0"})
        codes = [(await client.next("error"))["code"] for _ in range(200)]
        assert set(codes) == {"rate_limited"}
        await asyncio.sleep(1.1)  # one token back, and a second since the first line
        await client.send({"type": "sync", "thread": thread, "after": "0"})
        await client.next("synced", thread=thread)
        await client.send({"type": "sync", "thread": thread, "after": "0"})
        assert (await client.next("error"))["code"] == "rate_limited"
        assert (await client.say(alice, "still usable"))["type"] == "ack"
    finally:
        await client.close()
    await asyncio.sleep(0.2)
    refusals = [json.loads(line) for line in gateway.log().splitlines()
                if '"frame_refused"' in line]
    assert [r["unlogged"] for r in refusals] == [0, 199], refusals  # 199 counted, not logged


async def test_a_flood_of_refused_handshakes_is_one_log_line_a_second_per_user(
        start_gateway):
    """Attacks: one log line per refused handshake (a client reconnecting as fast as it
    can once its read budget is spent, or with a bad token). Every handshake is still
    refused with its status; other users' refusals have lines of their own."""
    gateway = start_gateway(DUOLOGUE_READ_RATE="0.1", DUOLOGUE_READ_BURST="1")
    alice, bob = uid("a"), uid("b")
    await (await Client.connect(gateway.ws_url, alice)).close()  # the hello takes the token
    statuses = [await _refused_status(gateway.ws_url, alice) for _ in range(30)]
    assert statuses == [429] * 30
    await (await Client.connect(gateway.ws_url, bob)).close()
    assert await _refused_status(gateway.ws_url, bob) == 429
    bad = token(alice, secret="another-secret-" + "y" * 32)

    async def bad_token() -> None:
        refused = await handshake_refusal(gateway.ws_url, bad)
        assert refused is not None and refused.response.status_code == 403
    for _ in range(10):
        await bad_token()
    await asyncio.sleep(1.1)
    assert await _refused_status(gateway.ws_url, alice) == 429  # a second later: a line
    await bad_token()
    await asyncio.sleep(0.2)
    lines = gateway.log().splitlines()
    refused = [json.loads(line) for line in lines if '"ws_refused"' in line]
    alices = [r["unlogged"] for r in refused if r.get("user") == alice]
    # 31 refusals in two lines a second apart (three if this machine took over a second
    # for the 30): each line counts those since the one before
    assert len(alices) in (2, 3) and alices[0] == 0 and sum(alices) + len(alices) == 31
    assert [r["unlogged"] for r in refused if r.get("user") == bob] == [0]
    addresses = [r["unlogged"] for r in refused if "user" not in r]  # a bad token: by address
    assert addresses[0] == 0 and sum(addresses) + len(addresses) == 11 and len(addresses) <= 3
    # nor any other line per refused handshake (websockets' "connection rejected")
    assert len(lines) < 20, lines


async def test_a_command_not_decided_gives_its_budget_back(start_gateway):
    """Attacks: a duplicate charged when its budget was taken before the append found the
    dedupe record (on a Redis Cluster the budget is taken by a script of its own, in
    batches, and must be given back); a client retrying a lost ack would be refused."""
    env = {"DUOLOGUE_RATE": "0.1", "DUOLOGUE_BURST": "4"}  # a token every 10 s
    gateway = start_gateway(**env)
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(gateway.ws_url, alice)
    try:
        first = await a.say(bob, "first", client_msg_id="once")
        assert first["type"] == "ack", first
        resends = await asyncio.gather(*(a.say(bob, "first", client_msg_id="once")
                                         for _ in range(6)))  # in flight together: batched
        assert all(x["type"] == "ack" and x["duplicate"] for x in resends), resends
        fresh = [await a.say(bob, f"new {n}", client_msg_id=uid(f"n{n}")) for n in range(4)]
        assert [x["type"] for x in fresh] == ["ack", "ack", "ack", "error"], fresh
        assert fresh[-1]["code"] == "rate_limited", fresh
    finally:
        await a.close()
