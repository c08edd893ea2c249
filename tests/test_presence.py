"""protocol.md section 5, Presence and ``watch``: online while a socket is open on any
gateway, ``last_seen`` at the last clean close, changes to watchers within 2 s; the list
replaced by each ``watch``; never the same frame twice in a row; nobody but a watcher
gets a presence frame."""

from __future__ import annotations

import asyncio
import itertools

from tests.presence_support import (
    HIDDEN,
    befriend,
    next_presence,
    now_ms,
    presences,
    quiet,
    shape,
)
from tests.support import Client, uid


async def test_two_sockets_one_user_online_until_the_last_closes(start_gateway):
    """Attacks: presence counted per socket (closing one of two would say offline) or
    per gateway flag (a second socket re-publishing online), and last_seen values."""
    gw = start_gateway()
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw.ws_url, alice)
    await befriend(watcher, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    first = await next_presence(watcher, bob)
    assert shape(first) == HIDDEN  # never seen: offline, last_seen null (same as hidden)

    one = await Client.connect(gw.ws_url, bob)
    assert shape(await next_presence(watcher, bob, 2.0)) == {"online": True, "last_seen": None}
    two = await Client.connect(gw.ws_url, bob)
    await one.close()
    await quiet(watcher, bob, 1.0)  # still online: the second socket is open
    before = now_ms()
    await two.close()
    gone = await next_presence(watcher, bob, 2.0)
    assert gone["online"] is False and before - 50 <= gone["last_seen"] <= now_ms() + 50
    await quiet(watcher, bob, 0.5)
    assert presences(watcher) == []  # every frame above was consumed: none twice
    await watcher.close()


async def test_watcher_on_one_gateway_user_on_another_within_2s(start_gateway):
    """Attacks: fan-out that only reaches watchers on the user's own gateway, or slower
    than the contract's 2 s; repeated to catch a subscription race."""
    gw1, gw2 = start_gateway(), start_gateway()
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw1.ws_url, alice)
    await befriend(watcher, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    await next_presence(watcher, bob)
    loop = asyncio.get_running_loop()
    for _ in range(6):
        started = loop.time()
        user = await Client.connect(gw2.ws_url, bob)
        await next_presence(watcher, bob, 2.0, online=True)
        assert loop.time() - started < 2.0
        started = loop.time()
        await user.close()
        frame = await next_presence(watcher, bob, 2.0, online=False)
        assert loop.time() - started < 2.0 and frame["last_seen"] is not None
    await quiet(watcher, bob, 0.3)
    await watcher.close()


async def test_a_replaced_list_stops_the_old_users_and_repeats_nothing(start_gateway):
    """Attacks: a watch that adds to the list instead of replacing it, and a kept user
    re-sent although unchanged."""
    gw = start_gateway()
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    watcher = await Client.connect(gw.ws_url, alice)
    await befriend(watcher, bob)
    await befriend(watcher, carol)
    bob_socket = await Client.connect(gw.ws_url, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    assert (await next_presence(watcher, bob))["online"] is True
    await watcher.send({"type": "watch", "users": [bob, carol]})
    assert shape(await next_presence(watcher, carol)) == HIDDEN
    await quiet(watcher, bob, 0.5)  # bob was on the list already, unchanged
    await watcher.send({"type": "watch", "users": [carol]})
    await bob_socket.close()  # bob left the list: not told
    await quiet(watcher, None, 1.5)
    carol_socket = await Client.connect(gw.ws_url, carol)
    assert (await next_presence(watcher, carol, 2.0))["online"] is True
    await watcher.send({"type": "watch", "users": []})
    await carol_socket.close()
    await quiet(watcher, None, 1.5)
    assert presences(watcher) == []
    await watcher.close()


async def test_no_presence_frame_reaches_a_non_watcher(start_gateway):
    """Attacks: presence frames broadcast to a user's contacts or to every local socket."""
    gw1, gw2 = start_gateway(), start_gateway()
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    bystander = await Client.connect(gw1.ws_url, carol)
    await befriend(bystander, bob)  # carol shares a thread with bob but watches nobody
    watcher = await Client.connect(gw1.ws_url, alice)
    await befriend(watcher, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    await next_presence(watcher, bob)
    for gw in (gw1, gw2, gw1):
        user = await Client.connect(gw.ws_url, bob)
        await next_presence(watcher, bob, 2.0, online=True)
        await user.close()
        await next_presence(watcher, bob, 2.0, online=False)
    await asyncio.sleep(0.5)
    assert presences(bystander) == []
    await bystander.close()
    await watcher.close()


async def test_watching_yourself_shows_you_online(start_gateway):
    gw = start_gateway()
    alice = uid("a")
    me = await Client.connect(gw.ws_url, alice)
    await me.send({"type": "watch", "users": [alice]})
    assert shape(await next_presence(me, alice)) == {"online": True, "last_seen": None}
    await me.close()


async def test_duplicates_in_a_list_are_answered_once(start_gateway):
    gw = start_gateway()
    alice, bob = uid("a"), uid("b")
    me = await Client.connect(gw.ws_url, alice)
    await befriend(me, bob)
    await me.send({"type": "watch", "users": [bob, bob, bob]})
    await next_presence(me, bob)
    await quiet(me, bob, 0.5)
    await me.close()


async def test_churn_ends_in_the_true_state(start_gateway):
    """Attacks: lease writes of one user reordered (an up landing after the down of a
    socket that opened and closed at once leaves a ghost online for a whole lease) and a
    watcher left with a stale last frame. Sockets of one user opened and closed in bursts,
    several rounds."""
    gw1, gw2 = start_gateway(), start_gateway()
    alice, bob = uid("a"), uid("b")
    watcher = await Client.connect(gw1.ws_url, alice)
    await befriend(watcher, bob)
    await watcher.send({"type": "watch", "users": [bob]})
    await next_presence(watcher, bob)
    for _ in range(5):
        clients = await asyncio.gather(*(Client.connect(gw.ws_url, bob)
                                         for gw in (gw1, gw2, gw1, gw2)))
        await asyncio.gather(*(c.close() for c in clients))
        await asyncio.sleep(1.0)
        frames = [f for f in watcher.frames if f.get("type") == "presence"]
        assert frames and frames[-1]["online"] is False, frames
        assert all(a != b for a, b in itertools.pairwise(frames)), frames
        watcher.frames.clear()
    await watcher.close()
