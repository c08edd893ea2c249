"""The read queries use the indexes, and a page of a 100k-message thread is fast.

Plans are read with EXPLAIN (FORMAT JSON) on the queries the gateway runs
(gateway.read_model), against the run's migrated database.
"""

from __future__ import annotations

import time

import httpx
import psycopg
import pytest

from domain.ids import sort_key
from gateway.read_model import NO_UPPER_BOUND, PAGE_SQL, THREADS_SQL
from tests.conftest import RUN_PREFIX
from tests.http_support import Projection, auth, eid, start_api_gateway
from tests.support import thread_of, uid

BIG = 100_000


def nodes(plan: dict) -> list[dict]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def explain(conn: psycopg.Connection, sql: str, params: dict) -> list[dict]:
    (row,) = conn.execute(f"EXPLAIN (FORMAT JSON) {sql}", params).fetchall()
    return nodes(row[0][0]["Plan"])


@pytest.fixture(scope="module")
def big_thread(database_url):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    rows = Projection(database_url)
    rows.many(thread, (alice, bob), BIG)
    rows.conn.execute("UPDATE messages SET deleted_at = sent_at, body = NULL "
                      "WHERE thread = %s AND key %% 7 = 0", (thread,))
    rows.thread(thread, eid(BIG), events=BIG)
    rows.receipt(thread, alice, eid(BIG // 2), eid(BIG + 1))
    rows.conn.execute("ANALYZE messages")
    rows.conn.execute("ANALYZE threads")
    yield alice, bob, thread
    rows.close()


def test_page_reads_the_primary_key_backwards(database_url, big_thread):
    _, _, thread = big_thread
    with psycopg.connect(database_url) as conn:
        for after, before in ((0, NO_UPPER_BOUND), (0, sort_key(eid(BIG // 2))),
                              (sort_key(eid(10)), sort_key(eid(BIG - 10)))):
            plan = explain(conn, PAGE_SQL, {"thread": thread, "after": after,
                                            "before": before, "limit": 51})
            scans = [n for n in plan if n.get("Relation Name") == "messages"]
            assert [(n["Node Type"], n.get("Index Name"), n.get("Scan Direction"))
                    for n in scans] == [("Index Scan", "messages_pkey", "Backward")], plan


@pytest.mark.parametrize("cursor", [(None, ""), (sort_key(eid(5)), "dm:a:b")])
def test_thread_list_uses_only_indexes(database_url, big_thread, cursor):
    alice, _, _ = big_thread
    bkey, bthread = cursor
    with psycopg.connect(database_url) as conn:
        # the tables of a test database are tiny; the point is that index access exists
        conn.execute("SET enable_seqscan = off")
        plan = explain(conn, THREADS_SQL, {"user": alice, "limit": 501, "bkey": bkey,
                                           "bthread": bthread})
    assert any(n["Node Type"] == "Limit" for n in plan), plan  # a page, not every thread
    assert not [n for n in plan if n["Node Type"] == "Seq Scan"], plan
    used = {n["Index Name"] for n in plan if "Index Name" in n}
    assert {"threads_user_a", "threads_user_b", "read_receipts_pkey"} <= used, used
    assert "messages_pkey" in used, used
    receipt = next(n for n in plan if n.get("Index Name") == "read_receipts_pkey")
    assert "thread" in receipt["Index Cond"] and "reader" in receipt["Index Cond"], receipt


def test_a_page_of_a_100k_message_thread_is_fast(redis_url, database_url, log_dir, big_thread):
    """p99 at most 10 ms in Postgres, and through HTTP with a generous margin."""
    alice, _, thread = big_thread
    with psycopg.connect(database_url, autocommit=True) as conn:
        took = []
        for n in range(200):
            params = {"thread": thread, "after": 0, "limit": 51,
                      "before": sort_key(eid(BIG - n * (BIG // 200)))}
            started = time.perf_counter()
            assert len(conn.execute(PAGE_SQL, params).fetchall()) == 51
            took.append(time.perf_counter() - started)
    assert sorted(took)[197] < 0.010, sorted(took)[-5:]
    gateway = start_api_gateway(redis_url, log_dir, f"{RUN_PREFIX}-plans",
                                DATABASE_URL=database_url)
    try:
        with httpx.Client(base_url=gateway.http_url, headers=auth(alice)) as client:
            took = []
            for n in range(200):
                started = time.perf_counter()
                answer = client.get(f"/v1/threads/{thread}/messages",
                                    params={"before": eid(BIG - n * (BIG // 200))})
                took.append(time.perf_counter() - started)
                assert answer.status_code == 200 and len(answer.json()["messages"]) == 50
    finally:
        gateway.terminate()
    assert sorted(took)[197] < 0.050, sorted(took)[-5:]
