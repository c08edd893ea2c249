"""Replies, reactions and blocks as the HTTP read API and the analysts' tables show them
(protocol.md section 5, HTTP additions and Analysts), end to end: WebSocket commands
through a real gateway, ``duologue projector --burst``, then HTTP and SQL."""

from __future__ import annotations

import httpx

from tests.http_support import auth, ms
from tests.projection_support import PARTITIONS
from tests.support import thread_of, uid


async def cmd(c, kind: str, thread: str, **fields: object) -> dict:
    answer = await c.request({"type": kind, "thread": thread, "client_msg_id": uid("k"),
                              **fields})
    assert answer["type"] == "ack", answer
    return answer


async def test_messages_and_threads_carry_replies_reactions_and_blocks(
        start_gateway, fresh_database, fleet, connect, db):
    gateway = start_gateway(DATABASE_URL=fresh_database, DUOLOGUE_PARTITIONS=str(PARTITIONS))
    alice, bob = uid("a"), uid("b")
    a, b = await connect(gateway.ws_url, alice), await connect(gateway.ws_url, bob)
    thread = thread_of(alice, bob)
    first = await a.say(bob, "first")
    reply = await b.say(alice, "a reply", reply_to=first["id"])
    gone = await a.say(bob, "to be deleted")
    # reactions: 👍 by bob then alice, 🎉 by alice in between; ❤ added and removed
    await cmd(b, "react", thread, target=first["id"], emoji="👍")
    await cmd(a, "react", thread, target=first["id"], emoji="🎉")
    await cmd(a, "react", thread, target=first["id"], emoji="👍")
    await cmd(a, "react", thread, target=first["id"], emoji="❤")
    await cmd(a, "unreact", thread, target=first["id"], emoji="❤")
    await cmd(b, "react", thread, target=gone["id"], emoji="😂")
    await cmd(a, "delete", thread, target=gone["id"])
    blocked = await cmd(b, "block", thread)
    fleet.burst()

    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        page = (await http.get(f"/v1/threads/{thread}/messages", headers=auth(alice))).json()
        by_id = {m["id"]: m for m in page["messages"]}
        assert by_id[first["id"]]["reactions"] == [
            {"emoji": "👍", "users": [bob, alice]}, {"emoji": "🎉", "users": [alice]}]
        assert by_id[first["id"]]["reply_to"] is None
        assert by_id[reply["id"]]["reply_to"] == first["id"]
        assert by_id[reply["id"]]["reactions"] == []
        assert by_id[gone["id"]] == {"id": gone["id"], "sender": alice, "body": None,
                                     "sent_at": ms(gone["id"]), "edited_at": None,
                                     "deleted": True, "reply_to": None, "reactions": []}
        found = (await http.get("/v1/search", params={"q": "reply"},
                                headers=auth(alice))).json()
        assert [(r["id"], r["reply_to"]) for r in found["results"]] == [
            (reply["id"], first["id"])]
        for user in (alice, bob):
            (entry,) = (await http.get("/v1/threads", headers=auth(user))).json()["threads"]
            assert entry["blocked_by"] == [bob]
            assert entry["last_message"]["id"] == reply["id"]
            assert entry["last_message"]["reply_to"] == first["id"]

    # the analysts' tables: current state only
    assert db.execute("SELECT reply_to FROM messages WHERE thread = %s AND id = %s",
                      (thread, reply["id"])).fetchone() == (first["id"],)
    rows = db.execute('SELECT message_id, "user", emoji FROM reactions ORDER BY event_key')
    assert rows.fetchall() == [(first["id"], bob, "👍"), (first["id"], alice, "🎉"),
                               (first["id"], alice, "👍")]
    assert db.execute("SELECT thread, by, event_id, since = to_timestamp(%s / 1000.0) "
                      "FROM blocks", (ms(blocked["id"]),)).fetchall() == [
        (thread, bob, blocked["id"], True)]
    # lifting the block empties blocked_by
    await cmd(b, "unblock", thread)
    fleet.burst()
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as http:
        (entry,) = (await http.get("/v1/threads", headers=auth(alice))).json()["threads"]
        assert entry["blocked_by"] == []
    assert db.execute("SELECT count(*) FROM blocks").fetchone() == (0,)


async def test_post_with_reply_to(start_gateway, fresh_database, fleet, connect):
    gateway = start_gateway(DATABASE_URL=fresh_database, DUOLOGUE_PARTITIONS=str(PARTITIONS))
    alice, bob = uid("a"), uid("b")
    a = await connect(gateway.ws_url, alice)
    thread = thread_of(alice, bob)
    first = await a.say(bob, "first")
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10,
                                 headers=auth(bob)) as http:
        url = f"/v1/threads/{thread}/messages"
        ok = await http.post(url, json={"body": "re", "client_msg_id": "h1",
                                        "reply_to": first["id"]})
        assert ok.status_code == 201, ok.text
        event = await a.next("event", id=ok.json()["id"])
        assert event["event"]["reply_to"] == first["id"]
        missing = await http.post(url, json={"body": "re", "client_msg_id": "h2",
                                             "reply_to": "1-0"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        bad = await http.post(url, json={"body": "re", "client_msg_id": "h3",
                                         "reply_to": "x"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid")
        wrong = await http.post(url, json={"body": "re", "client_msg_id": "h4", "reply_to": 5})
        assert (wrong.status_code, wrong.json()["error"]["code"]) == (400, "bad_frame")
        null = await http.post(url, json={"body": "plain", "client_msg_id": "h5",
                                          "reply_to": None})
        assert null.status_code == 201
        assert "reply_to" not in (await a.next("event", id=null.json()["id"]))["event"]
