"""Many threads (protocol.md section 8): `hello` lists the newest 500 and says
`more_threads`; `GET /v1/threads` pages with `limit` and an opaque `before`. A real
gateway, real Redis, a real projection (the burst projector)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from domain.ids import sort_key, thread_id
from tests.support import Client, token, uid
from tests.webhook_support import send_many

USERS = 503  # more than a hello lists, and pages of 200 that do not divide it


@pytest.fixture
def alice_with_many_threads(start_gateway, fleet, redis_url, pkeys, fresh_database):
    """A gateway, and alice's USERS threads appended (one message each) and projected."""
    alice = uid("alice")
    others = [uid(f"p{n}") for n in range(USERS)]
    sends = [(thread_id(alice, other), alice, f"hi {n}") for n, other in enumerate(others)]
    ids = asyncio.run(send_many(redis_url, pkeys, sends))
    fleet.burst()
    gateway = start_gateway(DATABASE_URL=fresh_database)
    newest_first = sorted(((sort_key(i), t) for (t, _, _), i in zip(sends, ids, strict=True)),
                          key=lambda kt: (-kt[0], kt[1]))
    return gateway, alice, [t for _, t in newest_first]


async def test_hello_lists_the_newest_500_threads_and_says_there_are_more(
        alice_with_many_threads):
    """Attacks: a hello carrying every thread (a user with 50,000 threads gets a frame of
    megabytes on every connect), more_threads missing, the wrong 500 listed."""
    gateway, alice, threads = alice_with_many_threads
    client = await Client.connect(gateway.ws_url, alice)
    try:
        hello = client.hello
        assert hello["more_threads"] is True
        listed = [t["thread"] for t in hello["threads"]]
        assert len(listed) == 500
        assert set(listed) == set(threads[:500])  # the newest (ties may list in any order)
        # the threads not listed are still live: a new event in the oldest one arrives
        oldest = threads[-1]
        other = next(u for u in oldest.split(":")[1:] if u != alice)
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{gateway.http_url}/v1/threads/{oldest}/messages",
                                     json={"body": "still here", "client_msg_id": uid("c")},
                                     headers={"Authorization": f"Bearer {token(other)}"})
        assert answer.status_code == 201, answer.text
        event = await client.next("event", thread=oldest)
        assert event["event"]["body"] == "still here"
    finally:
        await client.close()
    few = uid("few")
    client = await Client.connect(gateway.ws_url, few)
    try:
        assert "more_threads" not in client.hello  # absent unless there are more
    finally:
        await client.close()


async def test_thread_list_pages_with_an_opaque_cursor(alice_with_many_threads):
    """Attacks: one unbounded answer (and an unread count per thread) for a user with
    50,000 threads, a page boundary that skips or repeats a thread, a cursor that is not
    checked, limits outside 1-500 accepted as given."""
    gateway, alice, threads = alice_with_many_threads
    headers = {"Authorization": f"Bearer {token(alice)}"}
    url = f"{gateway.http_url}/v1/threads"
    async with httpx.AsyncClient(headers=headers) as http:
        seen: list[str] = []
        before = None
        pages = 0
        while True:
            params = {"limit": "200"} | ({"before": before} if before else {})
            page = (await http.get(url, params=params)).json()
            seen += [t["thread"] for t in page["threads"]]
            pages += 1
            before = page["next_before"]
            if before is None:
                break
            assert len(page["threads"]) == 200
        assert pages == 3 and seen == threads  # every thread once, newest first
        whole = (await http.get(url)).json()
        assert len(whole["threads"]) == 500 and whole["next_before"] is not None
        capped = (await http.get(url, params={"limit": "100000"})).json()
        assert len(capped["threads"]) == 500
        one = (await http.get(url, params={"limit": "1"})).json()
        assert [t["thread"] for t in one["threads"]] == threads[:1]
        for bad in ({"limit": "0"}, {"limit": "-3"}, {"limit": "ten"},
                    {"before": "not-a-cursor"}, {"before": "eHl6"}):
            answer = await http.get(url, params=bad)
            assert answer.status_code == 400, (bad, answer.text)
            assert answer.json()["error"]["code"] == "invalid"
