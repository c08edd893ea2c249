"""The read side of the HTTP API (protocol.md section 3) against real Postgres rows.

One gateway with DATABASE_URL serves the module; each test writes the projection
rows it needs (random users, so random threads) and reads them through HTTP.
"""

from __future__ import annotations

import pytest

from tests.conftest import RUN_PREFIX
from tests.http_support import Projection, eid, http, message_json, ms, start_api_gateway
from tests.support import thread_of, uid


@pytest.fixture(scope="module")
def api(redis_url, database_url, log_dir):
    gateway = start_api_gateway(redis_url, log_dir, f"{RUN_PREFIX}-http",
                                DATABASE_URL=database_url)
    yield gateway
    gateway.terminate()


@pytest.fixture(scope="module")
def rows(database_url):
    projection = Projection(database_url)
    yield projection
    projection.close()


async def get_threads(api, user):
    async with http(api, user) as client:
        answer = await client.get("/v1/threads")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    return answer.json()["threads"]


async def get_page(api, user, thread, **query):
    async with http(api, user) as client:
        answer = await client.get(f"/v1/threads/{thread}/messages", params=query)
    assert answer.status_code == 200, answer.text
    return answer.json()


def ids(page):
    return [m["id"] for m in page["messages"]]


# -- GET /v1/threads ----------------------------------------------------------------------


async def test_threads_newest_first_with_last_message_and_unread(api, rows):
    alice, bob, carol, dave = uid("a"), uid("b"), uid("c"), uid("d")
    ab, ac, ad, aa = (thread_of(alice, bob), thread_of(alice, carol),
                      thread_of(alice, dave), thread_of(alice, alice))
    # alice-bob: alice read up to bob's first; bob's third was edited, his fourth deleted
    rows.message(ab, eid(1), bob, "one")
    rows.message(ab, eid(2), alice, "two")
    rows.message(ab, eid(3), bob, "three, edited", edited=eid(5))
    rows.message(ab, eid(4), bob, "four", deleted=eid(6))
    rows.receipt(ab, alice, eid(1), eid(7))
    rows.thread(ab, eid(8), events=8)  # newest event: a ReadUpTo of bob, not a message
    # alice-carol: the newest activity; no receipt, so both of carol's live ones count
    rows.message(ac, eid(10), carol, "c1")
    rows.message(ac, eid(11), alice, "a1")
    rows.message(ac, eid(12), carol, "c2")
    rows.message(ac, eid(13), carol, "c3", deleted=eid(14))
    rows.thread(ac, eid(14), events=5)
    # alice-dave: every message deleted
    rows.message(ad, eid(20, 1), dave, "gone", deleted=eid(20, 2))
    rows.thread(ad, eid(20, 2), events=2)
    # note to self: "the other participant" is alice herself, read up to her first note
    rows.message(aa, eid(0, 1), alice, "note 1")
    rows.message(aa, eid(0, 2), alice, "note 2")
    rows.receipt(aa, alice, eid(0, 1), eid(0, 3))
    rows.thread(aa, eid(0, 3), events=3)
    rows.message(thread_of(bob, carol), eid(30), bob, "not alice's")  # never listed
    rows.thread(thread_of(bob, carol), eid(30))

    assert await get_threads(api, alice) == [
        {"thread": ad, "with": dave, "last_id": eid(20, 2), "last_message": None, "unread": 0,
         "blocked_by": []},
        {"thread": ac, "with": carol, "last_id": eid(14),
         "last_message": message_json(eid(12), carol, "c2"), "unread": 2, "blocked_by": []},
        {"thread": ab, "with": bob, "last_id": eid(8),
         "last_message": message_json(eid(3), bob, "three, edited", edited=eid(5)),
         "unread": 1, "blocked_by": []},
        {"thread": aa, "with": alice, "last_id": eid(0, 3),
         "last_message": message_json(eid(0, 2), alice, "note 2"), "unread": 1, "blocked_by": []},
    ]
    # bob's side of the same rows: alice's one live message, no receipt of his
    bob_threads = await get_threads(api, bob)
    assert [t["thread"] for t in bob_threads] == [thread_of(bob, carol), ab]
    assert bob_threads[1]["with"] == alice and bob_threads[1]["unread"] == 1


async def test_unread_counts_only_after_the_users_own_receipt(api, rows):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    for n in range(1, 6):
        rows.message(thread, eid(n), bob, f"b{n}")
    rows.receipt(thread, bob, eid(5), eid(6))  # bob's receipt says nothing about alice's
    rows.receipt(thread, alice, eid(2), eid(7))
    rows.thread(thread, eid(7))
    assert (await get_threads(api, alice))[0]["unread"] == 3
    assert (await get_threads(api, bob))[0]["unread"] == 0


async def test_a_user_without_threads_gets_an_empty_list(api):
    assert await get_threads(api, uid("nobody")) == []


# -- GET /v1/threads/{thread}/messages ------------------------------------------------------


@pytest.fixture
def seven(rows):
    """A thread with messages eid(1)..eid(7), eid(4) deleted, eid(2) edited."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    for n in range(1, 8):
        rows.message(thread, eid(n), alice if n % 2 else bob, f"m{n}",
                     edited=eid(9) if n == 2 else None, deleted=eid(8) if n == 4 else None)
    rows.thread(thread, eid(9), events=9)
    return alice, bob, thread


async def test_pages_go_from_newest_to_oldest_with_next_before(api, seven):
    alice, _, thread = seven
    first = await get_page(api, alice, thread, limit=3)
    assert ids(first) == [eid(7), eid(6), eid(5)] and first["next_before"] == eid(5)
    second = await get_page(api, alice, thread, limit=3, before=first["next_before"])
    assert ids(second) == [eid(4), eid(3), eid(2)] and second["next_before"] == eid(2)
    last = await get_page(api, alice, thread, limit=3, before=second["next_before"])
    assert ids(last) == [eid(1)] and last["next_before"] is None
    assert first["thread"] == thread and first["projected_up_to"] == eid(9)


async def test_next_before_is_null_when_the_page_ends_exactly_at_the_oldest(api, seven):
    alice, _, thread = seven
    assert (await get_page(api, alice, thread, limit=7))["next_before"] is None
    assert (await get_page(api, alice, thread, limit=6))["next_before"] == eid(2)
    end = await get_page(api, alice, thread, limit=3, before=eid(4))
    assert ids(end) == [eid(3), eid(2), eid(1)] and end["next_before"] is None


async def test_after_and_windows_are_exclusive_and_newest_first(api, seven):
    _, bob, thread = seven
    page = await get_page(api, bob, thread, after=eid(3))
    assert ids(page) == [eid(7), eid(6), eid(5), eid(4)] and page["next_before"] is None
    page = await get_page(api, bob, thread, after=eid(3), limit=2)
    assert ids(page) == [eid(7), eid(6)] and page["next_before"] == eid(6)
    # the client keeps its window: before=next_before, same after
    page = await get_page(api, bob, thread, after=eid(3), before=eid(6), limit=2)
    assert ids(page) == [eid(5), eid(4)] and page["next_before"] is None
    page = await get_page(api, bob, thread, after=eid(3), before=eid(6), limit=1)
    assert ids(page) == [eid(5)] and page["next_before"] == eid(5)
    assert ids(await get_page(api, bob, thread, after=eid(7))) == []
    assert ids(await get_page(api, bob, thread, after=eid(5), before=eid(5))) == []
    assert ids(await get_page(api, bob, thread, after=eid(6), before=eid(2))) == []
    assert ids(await get_page(api, bob, thread, before="0")) == []
    assert len(ids(await get_page(api, bob, thread, after="0"))) == 7
    # bounds need not be ids of messages: any event id of the thread, or none at all
    assert ids(await get_page(api, bob, thread, after=eid(3, 7), before=eid(5, 0))) == [eid(4)]


async def test_message_shapes_edited_and_deleted(api, seven):
    alice, bob, thread = seven
    page = await get_page(api, alice, thread, after=eid(1), before=eid(5))
    assert page == {
        "thread": thread, "projected_up_to": eid(9), "next_before": None,
        "messages": [
            {"id": eid(4), "sender": bob, "body": None, "sent_at": ms(eid(4)),
             "edited_at": None, "deleted": True, "reply_to": None, "reactions": []},
            message_json(eid(3), alice, "m3"),
            {"id": eid(2), "sender": bob, "body": "m2", "sent_at": ms(eid(2)),
             "edited_at": ms(eid(9)), "deleted": False, "reply_to": None, "reactions": []},
        ]}


async def test_a_deleted_message_never_shows_a_body(api, seven, rows):
    alice, _, thread = seven
    rows.conn.execute("UPDATE messages SET body = 'should be gone' WHERE thread = %s AND id = %s",
                      (thread, eid(4)))
    page = await get_page(api, alice, thread, after=eid(3), before=eid(5))
    assert page["messages"] == [{"id": eid(4), "sender": page["messages"][0]["sender"],
                                 "body": None, "sent_at": ms(eid(4)), "edited_at": None,
                                 "deleted": True, "reply_to": None, "reactions": []}]


async def test_limit_default_and_clamp(api, rows):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    rows.many(thread, (alice, bob), 205)
    rows.thread(thread, eid(205), events=205)
    default = await get_page(api, alice, thread)
    assert ids(default) == [eid(n) for n in range(205, 155, -1)]
    assert default["next_before"] == eid(156)
    for limit in (200, 201, 500, "0300", 10**30):
        page = await get_page(api, alice, thread, limit=limit)
        assert ids(page) == [eid(n) for n in range(205, 5, -1)], limit
        assert page["next_before"] == eid(6)
    one = await get_page(api, bob, thread, limit="001")
    assert ids(one) == [eid(205)] and one["next_before"] == eid(205)
    assert one["messages"][0] == message_json(eid(205), bob, "message 205")


async def test_projected_up_to_and_threads_with_nothing_projected(api, rows):
    alice, bob = uid("a"), uid("b")
    empty = await get_page(api, alice, thread_of(alice, bob))
    assert empty == {"thread": thread_of(alice, bob), "messages": [],
                     "projected_up_to": "0", "next_before": None}
    note = thread_of(alice, alice)
    rows.message(note, eid(1), alice, "to me")
    rows.thread(note, eid(1, 3))
    page = await get_page(api, alice, note)
    assert ids(page) == [eid(1)] and page["projected_up_to"] == eid(1, 3)


async def test_reads_follow_a_table_swap(api, rows):
    """`duologue rebuild` swaps fresh tables in by renaming; prepared reads must follow."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    rows.message(thread, eid(1), alice, "old table")
    rows.thread(thread, eid(1))
    for _ in range(20):  # psycopg prepares a statement on its 5th execution
        assert ids(await get_page(api, alice, thread)) == [eid(1)]
        assert (await get_threads(api, alice))[0]["last_id"] == eid(1)
    swap = rows.conn
    with swap.transaction():
        for table in ("messages", "threads"):
            swap.execute(f"CREATE TABLE {table}_fresh (LIKE {table} INCLUDING ALL)")
            swap.execute(f"INSERT INTO {table}_fresh SELECT * FROM {table}")
    swap.execute("UPDATE messages_fresh SET body = 'new table' WHERE thread = %s", (thread,))
    swap.execute("UPDATE threads_fresh SET last_id = %s WHERE thread = %s", (eid(2), thread))
    try:
        with swap.transaction():
            for table in ("messages", "threads"):
                swap.execute(f"ALTER TABLE {table} RENAME TO {table}_old")
                swap.execute(f"ALTER TABLE {table}_fresh RENAME TO {table}")
        page = await get_page(api, alice, thread)
        assert page["messages"][0]["body"] == "new table" and page["projected_up_to"] == eid(2)
        assert (await get_threads(api, alice))[0]["last_id"] == eid(2)
    finally:
        with swap.transaction():
            for table in ("messages", "threads"):
                if swap.execute("SELECT to_regclass(%s)", (f"{table}_old",)).fetchone()[0]:
                    swap.execute(f"DROP TABLE {table}")
                    swap.execute(f"ALTER TABLE {table}_old RENAME TO {table}")
                swap.execute(f"DROP TABLE IF EXISTS {table}_fresh")
