"""GET /v1/search (protocol.md section 5; docs/search.md) against real Postgres rows.

One gateway with DATABASE_URL serves the module; each test writes the projection rows
it needs (random users, so random threads), updates them the way the projector does
(the body replaced on an edit, deleted_at set on a delete) and searches through HTTP.
Each test names what it attacks.
"""

from __future__ import annotations

import httpx
import psycopg
import pytest

from domain.ids import sort_key
from gateway.search import SEARCH_SQL, Term, terms_of, tsquery_of, window_params
from projector import rebuild as rebuilding
from tests.conftest import RUN_PREFIX
from tests.http_support import Projection, eid, http, ms, start_api_gateway
from tests.support import thread_of, uid

WEEK = 604_800_000


@pytest.fixture(scope="module")
def api(redis_url, database_url, log_dir):
    gateway = start_api_gateway(redis_url, log_dir, f"{RUN_PREFIX}-search",
                                DATABASE_URL=database_url)
    yield gateway
    gateway.terminate()


@pytest.fixture(scope="module")
def rows(database_url):
    projection = Projection(database_url)
    yield projection
    projection.close()


def put(rows: Projection, thread: str, n: int, sender: str, body: str, seq: int = 0,
        **kw: str) -> str:
    """Message ``eid(n, seq)`` in ``thread``, and the thread row's head moved up to it."""
    event_id = eid(n, seq)
    rows.message(thread, event_id, sender, body, **kw)
    rows.conn.execute(
        "INSERT INTO threads (thread, user_a, user_b, last_id, last_key, first_at, last_at, "
        "events) VALUES (%s, split_part(%s, ':', 2), split_part(%s, ':', 3), %s, "
        "duologue_event_key(%s), now(), now(), 1) ON CONFLICT (thread) DO UPDATE SET "
        "last_id = EXCLUDED.last_id, last_key = EXCLUDED.last_key "
        "WHERE threads.last_key < EXCLUDED.last_key",
        (thread, thread, thread, event_id, event_id))
    return event_id


async def search(api, user, **query) -> httpx.Response:
    async with http(api, user) as client:
        return await client.get("/v1/search", params=query)


async def found(api, user, **query) -> list[tuple[str, str]]:
    answer = await search(api, user, **query)
    assert answer.status_code == 200, answer.text
    return [(hit["thread"], hit["id"]) for hit in answer.json()["results"]]


async def bodies(api, user, q, **query) -> list[str]:
    answer = await search(api, user, q=q, **query)
    assert answer.status_code == 200, answer.text
    return [hit["body"] for hit in answer.json()["results"]]


# -- what matches ---------------------------------------------------------------------


async def test_hit_shape_and_both_participants_messages(api, rows):
    """Attacks: the response shape, sender/reply_to/edited_at, and 'either participant'."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    first = put(rows, ab, 1, bob, "the zebra crossing")
    second = put(rows, ab, 2, alice, "a Zebra again, edited", edited=eid(3))
    rows.conn.execute("UPDATE messages SET reply_to = %s WHERE thread = %s AND id = %s",
                      (first, ab, second))
    answer = await search(api, alice, q="zebra")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.json() == {"results": [
        {"thread": ab, "id": second, "sender": alice, "body": "a Zebra again, edited",
         "sent_at": ms(second), "edited_at": ms(eid(3)), "reply_to": first},
        {"thread": ab, "id": first, "sender": bob, "body": "the zebra crossing",
         "sent_at": ms(first), "edited_at": None, "reply_to": None},
    ], "next_before": None}
    assert await found(api, bob, q="ZEBRA") == [(ab, second), (ab, first)]


async def test_a_third_users_messages_never_appear(api, rows):
    """Attacks isolation: carol's threads with bob and with dave hold the same words;
    alice sees only her threads, and thread= of a foreign thread is 403."""
    alice, bob, carol, dave = uid("a"), uid("b"), uid("c"), uid("d")
    ab, ac, bc, cd = (thread_of(alice, bob), thread_of(alice, carol), thread_of(bob, carol),
                      thread_of(carol, dave))
    put(rows, ab, 10, bob, "secret plans")
    put(rows, ac, 11, carol, "secret plans")
    put(rows, bc, 12, carol, "secret plans")
    put(rows, cd, 13, dave, "secret plans")
    assert await found(api, alice, q="secret plans") == [(ac, eid(11)), (ab, eid(10))]
    assert await found(api, dave, q="secret") == [(cd, eid(13))]
    assert await found(api, alice, q="secret", thread=ab) == [(ab, eid(10))]
    for thread in (bc, cd):
        answer = await search(api, alice, q="secret", thread=thread)
        assert answer.status_code == 403, answer.text
        assert answer.json()["error"]["code"] == "forbidden"
    # a user with no thread at all finds nothing (and is not an error)
    assert await found(api, uid("e"), q="secret") == []


async def test_note_to_self_thread_is_searched_alone(api, rows):
    """Attacks thread= on a note-to-self thread (its lexeme is the user's own)."""
    alice, bob = uid("a"), uid("b")
    aa, ab = thread_of(alice, alice), thread_of(alice, bob)
    put(rows, aa, 20, alice, "remember the milk")
    put(rows, ab, 21, bob, "milk please")
    assert await found(api, alice, q="milk") == [(ab, eid(21)), (aa, eid(20))]
    assert await found(api, alice, q="milk", thread=aa) == [(aa, eid(20))]
    assert await found(api, alice, q="milk", thread=ab) == [(ab, eid(21))]


async def test_edits_match_the_latest_body_only(api, rows):
    """Attacks a stale index: after the projector replaces the body, the old words stop
    matching and the new ones match."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    put(rows, ab, 30, alice, "meet at the harbour")
    assert await found(api, bob, q="harbour") == [(ab, eid(30))]
    rows.conn.execute("UPDATE messages SET body = 'meet at the station', edited_at = now() "
                      "WHERE thread = %s AND id = %s", (ab, eid(30)))
    assert await found(api, bob, q="harbour") == []
    assert await bodies(api, bob, "station") == ["meet at the station"]


async def test_deleted_messages_never_match(api, rows):
    """Attacks deletes: a deleted message (body cleared, or even left in place) is no hit."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    put(rows, ab, 40, alice, "walrus one")
    put(rows, ab, 41, alice, "walrus two", deleted=eid(42))
    put(rows, ab, 43, alice, "walrus three")
    rows.conn.execute("UPDATE messages SET deleted_at = now() WHERE thread = %s AND id = %s",
                      (ab, eid(43)))  # body kept: the rule is deleted_at, not the body
    assert await found(api, alice, q="walrus") == [(ab, eid(40))]


async def test_whole_words_prefix_all_words_and_case(api, rows):
    """Attacks stemming and substring matching: `run` is not `running`, `run*` is."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    put(rows, ab, 50, alice, "I run daily")
    put(rows, ab, 51, bob, "Running late")
    put(rows, ab, 52, alice, "the runs were long")
    put(rows, ab, 53, bob, "rerun it, daily")
    assert await bodies(api, alice, "run") == ["I run daily"]
    assert await bodies(api, alice, "RUN") == ["I run daily"]
    assert await bodies(api, alice, "running") == ["Running late"]
    assert await bodies(api, alice, "run*") == ["the runs were long", "Running late",
                                                "I run daily"]
    assert await bodies(api, alice, "daily run") == ["I run daily"]  # every word, any order
    assert await bodies(api, alice, "daily re*") == ["rerun it, daily"]
    assert await bodies(api, alice, "DAILY Ru*") == ["I run daily"]
    assert await bodies(api, alice, "daily walk") == []


async def test_a_one_letter_prefix_is_a_prefix_too(api, rows):
    """Attacks a prefix rule with a length floor: the contract makes any trailing `*` a
    prefix, one letter included."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    put(rows, ab, 70, alice, "a note")
    put(rows, ab, 71, alice, "another note")
    assert await bodies(api, bob, "a*") == ["another note", "a note"]
    assert await bodies(api, bob, "an*") == ["another note"]
    assert await bodies(api, bob, "e-no*") == []  # 'e' whole, 'no' and 'e-no' prefixes
    put(rows, ab, 72, alice, "e-notes")
    assert await bodies(api, bob, "e-no*") == ["e-notes"]


@pytest.mark.parametrize(("body", "q", "matches"), [
    ("I don't know", "don't", True),  # the parser splits at the apostrophe, on both sides
    ("I don't know", "don", True),
    ("send an e-mail", "e-mail", True),  # the compound and its parts
    ("send an e-mail", "mail", True),
    ("e mail", "e-mail", False),  # the compound itself is a word of q
    ("À l'ÉCOLE", "école", True),  # unicode case folding
    ("東京タワー", "東京タワー", True),
    ("café👍 ok", "café", True),  # emoji are separators
    ("pi is 3.14", "3.14", True),
    ("pi is 3.14", "3", False),
    ("mail me at bob@example.com", "bob@example.com", True),
    ("foo_bar", "foo", True),
    ("a&b|c", "a & b | !c:*", True),  # tsquery syntax in q is only separators
    ("(x) 'y' \\z", "(x) 'y' \\z", True),
    ("plain words", "plain''", True),
])
async def test_tokenization_of_q_agrees_with_the_bodies(api, rows, body, q, matches):
    """Attacks a q tokenizer that differs from to_tsvector('simple', body), and tsquery
    injection: q goes through Postgres's own parser and is never tsquery syntax."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    put(rows, ab, 60, alice, body)
    assert await bodies(api, bob, q) == ([body] if matches else [])


def test_terms_and_tsquery_quoting():
    """Attacks the pure parts: trailing `*` only, NUL as a separator, quotes escaped."""
    assert terms_of("run* ** a*b \x00x") == [Term("run", True), Term("a*b", False),
                                               Term("x", False)]
    assert tsquery_of([("it's", False), ("a\\b", True)]) == "'it''s' & 'a\\\\b':*"


# -- paging ---------------------------------------------------------------------------


async def test_paging_across_threads_gives_each_hit_once_in_order(api, rows):
    """Attacks the keyset cursor: hits of three threads interleaved, two of them with
    the same event id in two threads (the tie at a page boundary), paged 2 at a time."""
    alice, bob, carol, dave = uid("a"), uid("b"), uid("c"), uid("d")
    threads = [thread_of(alice, bob), thread_of(alice, carol), thread_of(alice, dave)]
    expected = []
    for n in range(1, 12):
        thread = threads[n % 3]
        expected.append((thread, put(rows, thread, 100 + n, alice, f"ping {n}")))
        put(rows, thread, 200 + n, alice, f"noise {n}")  # newer, not a hit
    for thread in threads[1:]:  # the same id in two threads, 2nd and 3rd in the order
        expected.append((thread, put(rows, thread, 110, alice, "ping tie", seq=1)))
    expected.sort(key=lambda hit: (sort_key(hit[1]), hit[0]), reverse=True)
    assert expected[1][1] == expected[2][1]
    pages, before = [], None
    while True:
        query = {"q": "ping", "limit": "2"} | ({"before": before} if before else {})
        answer = await search(api, alice, **query)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages.append([(hit["thread"], hit["id"]) for hit in page["results"]])
        before = page["next_before"]
        if before is None:
            break
        # the last hit's id, as in the history API; with the thread when the next hit
        # has the same id (the tie), so the next page starts right after it
        tie = page["results"][-1]["id"] == expected[sum(map(len, pages))][1]
        last = page["results"][-1]
        assert before == (f"{last['thread']}/{last['id']}" if tie else last["id"])
        assert len(pages) < 20
    assert [hit for page in pages for hit in page] == expected
    assert [len(page) for page in pages] == [2] * 6 + [1]
    # a page that ends exactly at the last hit says so
    assert (await search(api, alice, q="ping", limit="13")).json()["next_before"] is None
    assert (await search(api, alice, q="ping", limit="12")).json()["next_before"] is not None


async def test_before_an_event_id_pages_like_the_history_api(api, rows):
    """Attacks `before=<id>`: every hit older than that id, in every thread."""
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    ab, ac = thread_of(alice, bob), thread_of(alice, carol)
    put(rows, ab, 300, bob, "otter")
    put(rows, ac, 301, carol, "otter")
    put(rows, ab, 302, bob, "otter")
    assert await found(api, alice, q="otter", before=eid(302)) == [(ac, eid(301)),
                                                                   (ab, eid(300))]
    assert await found(api, alice, q="otter", before=eid(301), thread=ab) == [(ab, eid(300))]
    assert await found(api, alice, q="otter", before=eid(300)) == []


async def test_hits_weeks_apart_are_all_found(api, rows):
    """Attacks the time windows of the search: hits this week, weeks ago and a year ago,
    more than a page of them, come in one order with nothing skipped at the seams."""
    alice, bob = uid("a"), uid("b")
    ab = thread_of(alice, bob)
    offsets = [0, 1, 2 * WEEK, 3 * WEEK + 5, 4 * WEEK, 30 * WEEK, 52 * WEEK, 53 * WEEK]
    newest = 60 * WEEK
    ids = [put(rows, ab, newest - off, alice, "heron") for off in offsets]
    put(rows, ab, newest + 10, bob, "no match")  # the head is newer than every hit
    pages, before = [], None
    while True:
        answer = (await search(api, bob, q="heron", limit="3",
                               **({"before": before} if before else {}))).json()
        pages += [hit["id"] for hit in answer["results"]]
        if not (before := answer["next_before"]):
            break
    assert pages == ids
    assert await found(api, bob, q="heron", limit="200") == [(ab, i) for i in ids]


# -- refusals -------------------------------------------------------------------------


@pytest.mark.parametrize("query", [
    {}, {"q": ""}, {"q": "x" * 201}, {"q": "!!! *** &"}, {"q": "👍"},
    {"q": "a", "limit": "0"}, {"q": "a", "limit": "201"}, {"q": "a", "limit": "-1"},
    {"q": "a", "limit": "abc"}, {"q": "a", "limit": "1e2"}, {"q": "a", "limit": "9" * 30},
    {"q": "a", "thread": "dm:b:a"}, {"q": "a", "thread": "nope"},
    {"q": "a", "before": "nope"}, {"q": "a", "before": "dm:x:y/nope"},
    {"q": "a", "before": "nope/1-0"},
])
async def test_bad_queries_are_invalid(api, query):
    """Attacks validation: q length and content, limit 1-200 (no clamping), ids."""
    alice = "a" if query.get("thread") == "dm:b:a" else uid("a")
    answer = await search(api, alice, **query)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "invalid", answer.text


async def test_limits_and_lengths_at_the_edges_are_accepted(api, rows):
    """Attacks off-by-one refusals: q of 200 characters, limit 1 and 200, 007."""
    alice, bob = uid("a"), uid("b")
    put(rows, thread_of(alice, bob), 400, bob, "edge")
    for query in ({"q": "edge" + " " * 196}, {"q": "edge", "limit": "1"},
                  {"q": "edge", "limit": "200"}, {"q": "edge", "limit": "007"}):
        assert await found(api, alice, **query) == [(thread_of(alice, bob), eid(400))]


async def test_authentication_as_the_other_endpoints(api):
    """Attacks a search without a valid token: 401 with the Bearer challenge."""
    async with httpx.AsyncClient(base_url=api.http_url) as client:
        bare = await client.get("/v1/search", params={"q": "x"})
        bad = await client.get("/v1/search", params={"q": "x"},
                               headers={"Authorization": "Bearer nope"})
    assert bare.status_code == 401 and bare.headers["www-authenticate"] == "Bearer"
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"


# -- the index ------------------------------------------------------------------------


def plan_nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += plan_nodes(child)
    return found


def test_every_window_reads_the_search_index(database_url):
    """Attacks a sequential scan: on 60,000 messages, 6,000 of them the caller's over
    two years, every window of the search is a bitmap scan of messages_search."""
    alice = uid("a")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO messages (thread, id, key, sender, body, sent_at) "
            "SELECT th, ms::text || '-0', ms::numeric * 10^20, 'x', "
            "'w' || (n %% 97) || ' w' || (n %% 13) || ' common', duologue_ts(ms) "
            "FROM (SELECT n, 1650000000000 + n * 1000000 AS ms, "
            "CASE WHEN n %% 10 = 0 THEN 'dm:' || %(a)s || ':p' || (n %% 50) "
            "ELSE 'dm:o' || (n %% 3000) || ':q' || (n %% 3000) END AS th "
            "FROM generate_series(1::bigint, 60000) AS n) AS s", {"a": alice})
        conn.execute("ANALYZE messages")
        week = (1650000000000 + 60000 * 1000000) // WEEK
        params = window_params(tsquery_of([("w5", False), ("common", False)]), alice, None,
                               week)
        params |= {"user": alice, "thread": None, "limit": 21, "before_key": 10**40,
                   "before_thread": ""}
        (row,) = conn.execute(f"EXPLAIN (FORMAT JSON) {SEARCH_SQL}", params).fetchall()
        scans = [n for n in plan_nodes(row[0][0]["Plan"]) if n.get("Relation Name")
                 or n.get("Index Name")]
    assert [(n["Node Type"], n.get("Index Name")) for n in scans] == [
        ("Bitmap Heap Scan", None), ("Bitmap Index Scan", "messages_search")] * 3, scans


def test_rebuild_builds_the_search_index_on_the_fresh_table(fresh_database):
    """Attacks `duologue rebuild`: the swapped-in messages table has its search index."""
    rebuilding.rebuild(fresh_database, lambda phase, amount: None)
    with psycopg.connect(fresh_database) as conn:
        indexes = conn.execute("SELECT tablename, indexdef FROM pg_indexes "
                               "WHERE indexname = 'messages_search'").fetchall()
        left = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE "
                            "'messages_%%search'").fetchone()
    assert [t for t, _ in indexes] == ["messages"], indexes
    assert "duologue_search_doc(thread, id, body)" in indexes[0][1]
    assert "deleted_at IS NULL" in indexes[0][1]
    assert left == (1,)

