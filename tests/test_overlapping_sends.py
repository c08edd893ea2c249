"""A connection's sends are handled while its next frames are read (gateway/session.py,
``overlaps``): a client that writes many sends without waiting for their acks must see
them appended in the order it wrote them, each acked once, the acks in that order; and a
frame that is not a plain send (a ``sync`` here) must see every send written before it,
as if each frame had waited for the one before (docs/protocol-notes.md, "Commands of one
connection")."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from domain.ids import event_key
from tests.support import Client, GatewayProcess, thread_of, uid

SENDS = 120  # more than a connection's window of sends under way (16)
BUDGETS_ON = {"DUOLOGUE_RATE": "100000", "DUOLOGUE_RATE_BYTES": "10000000"}  # taken, never short


async def _write_all(client: Client, frames: list[dict[str, object]]) -> None:
    """Every frame written back to back, no answer awaited."""
    for frame in frames:
        await client.ws.send(json.dumps(frame))


@pytest.mark.parametrize("env", [{}, BUDGETS_ON], ids=["limits-off", "budgets-taken"])
async def test_sends_written_back_to_back_are_appended_in_the_order_written(
        start_gateway: Callable[..., GatewayProcess], env: dict[str, str]) -> None:
    """Two threads interleaved; with the send budgets on, a cluster takes each budget in a
    batch of its own before the append (the order must survive that step too)."""
    gateway = start_gateway(**env)
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    a = await Client.connect(gateway.ws_url, alice)
    try:
        sends = [{"type": "send", "to": (bob, carol)[n % 2], "body": f"m{n}",
                  "client_msg_id": f"c{n}"} for n in range(SENDS)]
        await _write_all(a, sends)
        acks = [await a.next("ack", timeout=30, ref=f"c{n}") for n in range(SENDS)]
        assert not any(ack["duplicate"] for ack in acks)
        order = [f["ref"] for f in a.frames + acks if f.get("type") == "ack"]
        assert sorted(order, key=lambda ref: int(ref[1:])) == order  # acks as written
        for to in (bob, carol):
            thread = thread_of(alice, to)
            mine = [ack["id"] for ack in acks if ack["thread"] == thread]
            assert [event_key(i) for i in mine] == sorted(event_key(i) for i in mine)
            assert len(set(mine)) == SENDS // 2
    finally:
        await a.close()
    b = await Client.connect(gateway.ws_url, bob)
    try:  # the stream holds them in the order written
        await b.send({"type": "sync", "thread": thread_of(alice, bob), "after": "0"})
        await b.next("synced", timeout=30)
        assert [e["event"]["body"] for e in b.events()] == [f"m{n}" for n in range(0, SENDS, 2)]
    finally:
        await b.close()


async def test_a_sync_written_after_sends_replays_every_one_of_them(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    """Attacks: a frame that reads the stream handled while the sends before it are still
    on their way to Redis (its replay would end before them)."""
    gateway = start_gateway()
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    try:
        for round_ in range(5):  # a race: several rounds
            sends = [{"type": "send", "to": bob, "body": f"r{round_}-{n}",
                      "client_msg_id": f"r{round_}-{n}"} for n in range(20)]
            await _write_all(a, [*sends, {"type": "sync", "thread": thread, "after": "0"}])
            synced = await a.next("synced", timeout=30)
            last = await a.next("ack", timeout=30, ref=f"r{round_}-19")
            assert synced["last_id"] == last["id"], (round_, synced, last)
            a.frames.clear()
    finally:
        await a.close()


async def test_a_window_of_refused_sends_leaves_the_connection_usable(
        start_gateway: Callable[..., GatewayProcess]) -> None:
    """Sends refused before Redis (an empty body) among good ones: each answered with its
    own error or ack, the good ones stored once, the socket open."""
    gateway = start_gateway()
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(gateway.ws_url, alice)
    try:
        frames = [{"type": "send", "to": bob, "body": "" if n % 3 == 0 else f"m{n}",
                   "client_msg_id": f"c{n}"} for n in range(18)]  # 6 refusals: under 20
        await _write_all(a, frames)
        for n in range(18):
            answer = await a.wait_for(lambda f, n=n: f.get("ref") == f"c{n}", timeout=30)
            assert answer["type"] == ("error" if n % 3 == 0 else "ack"), answer
        assert (await a.say(bob, "after"))["type"] == "ack"
    finally:
        await a.close()
