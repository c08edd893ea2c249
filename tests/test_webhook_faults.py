"""Webhook deliveries under faults (protocol.md section 6): projector processes killed,
two of them sharing the outbox, a receiver that never answers, the sender's Postgres
connections cut, SIGTERM with a POST in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from domain.ids import thread_id
from tests.projection_support import tail
from tests.support import uid
from tests.webhook_support import (
    HANG,
    Receiver,
    outbox,
    send,
    send_many,
    wait_until,
    webhook_env,
)


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def conversations(count: int, per_thread: int) -> list[tuple[str, str, str]]:
    """(thread, sender, body): ``per_thread`` messages to each of ``count`` offline users."""
    out = []
    for _ in range(count):
        alice, bob = uid("alice"), uid("bob")
        out += [(thread_id(alice, bob), alice, f"m{n}") for n in range(per_thread)]
    return out


def sent(redis_url, keys, sends) -> list[str]:
    """Delivery ids of the sends."""
    ids = asyncio.run(send_many(redis_url, keys, sends))
    return [f"{t}/{i}" for (t, _, _), i in zip(sends, ids, strict=True)]


def projected_count(db, threads) -> int:
    row = db.execute("SELECT count(*) FROM messages WHERE thread = ANY(%s)",
                     (sorted(threads),)).fetchone()
    return int(row[0])


def test_pending_deliveries_survive_a_sigkilled_projector(fleet, receiver, redis_url, pkeys,
                                                           db):
    """Attacks: deliveries kept in the process's memory (lost with it), a retry schedule or
    lease that a restarted projector does not pick up."""
    receiver.plan = lambda _id, _n: (500, 0.0)
    first = fleet.start(**webhook_env(receiver))
    ids = sent(redis_url, pkeys, conversations(5, 4))
    wait_until(lambda: all(receiver.arrived(i) >= 2 for i in ids), 20,
               "every delivery failed at least twice")
    first.kill()  # SIGKILL, with deliveries failing and some perhaps in flight
    assert len(outbox(db)) == len(ids)
    receiver.plan = lambda _id, _n: (200, 0.0)
    fleet.start(**webhook_env(receiver))
    wait_until(lambda: receiver.delivered() == set(ids), 30,
               "every pending delivery made by the new projector")
    wait_until(lambda: outbox(db) == [], 5, "the outbox emptied")


def test_two_projectors_never_post_one_delivery_at_once(fleet, receiver, redis_url, pkeys,
                                                         db):
    """Attacks: a claim without a lock or lease (both senders would take the same due
    rows), a lease shorter than a POST, a delivered row posted again."""
    receiver.plan = lambda _id, n: (500, 0.05) if n == 1 else (200, 0.05)
    env = webhook_env(receiver, DUOLOGUE_WEBHOOK_CONCURRENCY="8")
    one, two = fleet.start(**env), fleet.start(**env)
    ids = sent(redis_url, pkeys, conversations(20, 8))
    wait_until(lambda: receiver.delivered() == set(ids), 60, "every delivery made")
    wait_until(lambda: outbox(db) == [], 5, "the outbox emptied")
    time.sleep(0.5)
    for delivery in ids:
        attempts = receiver.attempts(delivery)
        assert [a.status for a in attempts] == [500, 200], (delivery, attempts)
        first, second = attempts
        assert first.ended <= second.started, delivery  # never two at once
    for process in (one, two):  # both senders took part
        assert "webhook_retry" in process.log(), tail(process)


def test_a_receiver_that_never_answers_does_not_slow_the_projection(
        fleet, receiver, redis_url, pkeys, db):
    """Attacks: POSTs made on the batch path (the projection would wait for them), an
    unbounded number of POSTs in flight."""
    receiver.plan = lambda _id, _n: (200, HANG)
    fleet.start(**webhook_env(receiver, DUOLOGUE_WEBHOOK_TIMEOUT="60",
                              DUOLOGUE_WEBHOOK_CONCURRENCY="3"))
    total = 0
    for wave in range(3):
        sends = conversations(20, 10)
        started = time.monotonic()
        ids = sent(redis_url, pkeys, sends)
        total += len(ids)
        threads = {t for t, _, _ in sends}
        expected = len(ids)
        wait_until(lambda t=threads, n=expected: projected_count(db, t) == n, 10,
                   f"wave {wave} projected while the receiver hangs")
        assert time.monotonic() - started < 5
    wait_until(lambda: len(outbox(db)) == total, 5, "every notification enqueued")
    wait_until(lambda: receiver.total() >= 1, 10, "the sender is posting")
    time.sleep(0.5)
    assert receiver.total() == 3  # stuck, at its concurrency


def test_the_sender_restarts_after_its_connections_are_cut(fleet, receiver, redis_url,
                                                           pkeys, db):
    """Attacks: a sender that dies for good (or takes the projector with it) when its
    Postgres session ends."""
    projector = fleet.start(**webhook_env(receiver))
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    before = asyncio.run(send(redis_url, pkeys, thread, alice, "before"))
    wait_until(lambda: f"{thread}/{before}" in receiver.delivered(), 10, "first delivery")
    cut = db.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                     "application_name LIKE 'duologue-webhook%%' AND datname = "
                     "current_database()").fetchone()
    assert cut == (2,)
    wait_until(lambda: "webhook_sender_crashed" in projector.log(), 10, "the crash logged")
    after = asyncio.run(send(redis_url, pkeys, thread, bob, "after"))
    wait_until(lambda: f"{thread}/{after}" in receiver.delivered(), 15,
               "delivery after the restart")
    assert projector.process is not None and projector.process.poll() is None
    assert "projector_retry" not in projector.log()  # the batch path never noticed


def test_sigterm_lets_the_post_in_flight_finish(fleet, receiver, redis_url, pkeys, db):
    """Attacks: a shutdown that abandons the POST in flight (it would be sent again after
    its lease) or that hangs."""
    receiver.plan = lambda _id, _n: (200, 1.5)
    projector = fleet.start(**webhook_env(receiver, DUOLOGUE_WEBHOOK_TIMEOUT="5"))
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    event = asyncio.run(send(redis_url, pkeys, thread, alice, "bye"))
    wait_until(lambda: receiver.arrived(f"{thread}/{event}") == 1, 10, "the POST in flight")
    assert projector.terminate(timeout=10) == 0, tail(projector)
    assert receiver.delivered() == {f"{thread}/{event}"}
    assert outbox(db) == []  # recorded before the process ended
    assert "webhook_sender_stopped" in projector.log()


def test_each_worker_of_a_supervised_projector_sends(fleet, receiver, redis_url, pkeys, db):
    """Attacks: senders started only in a single-process projector (compose.yaml runs
    ``--workers 2``), and senders left running after their workers stop."""
    projector = fleet.start("--workers", "2", **webhook_env(receiver))
    ids = sent(redis_url, pkeys, conversations(10, 3))
    wait_until(lambda: receiver.delivered() == set(ids), 20, "every delivery made")
    wait_until(lambda: projector.log().count("webhook_sender_started") == 2, 10,
               "one sender per worker")
    assert projector.terminate(timeout=20) == 0, tail(projector)
    assert projector.log().count("webhook_sender_stopped") == 2, tail(projector)
    assert outbox(db) == []


def test_several_sender_processes_share_one_projectors_outbox(fleet, receiver, redis_url,
                                                              pkeys, db):
    """Attacks DUOLOGUE_WEBHOOK_SENDERS: every sender process started, delivering, and
    stopped with its projector; none POSTs a delivery another is POSTing."""
    receiver.plan = lambda _id, _n: (200, 0.05)  # slow enough for POSTs to overlap
    projector = fleet.start(**webhook_env(receiver, DUOLOGUE_WEBHOOK_SENDERS="3"))
    ids = sent(redis_url, pkeys, conversations(20, 3))
    wait_until(lambda: receiver.delivered() == set(ids), 30, "every delivery made")
    wait_until(lambda: projector.log().count("webhook_sender_started") == 3, 10,
               "three senders")
    for delivery in ids:  # at most one POST of a delivery at a time
        spans = sorted((a.started, a.ended) for a in receiver.attempts(delivery))
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(spans)), delivery
    assert projector.terminate(timeout=20) == 0, tail(projector)
    assert projector.log().count("webhook_sender_stopped") == 3, tail(projector)
    assert outbox(db) == []
