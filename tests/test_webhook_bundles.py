"""The outbox's bundles (migration 0006, docs/webhooks.md): a projector batch's
notifications are one row, which a sender splits into a row per notification before it
claims them; and the sender's hold while its projector is behind. Real projector
processes, a real HTTP receiver, real Redis and Postgres."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter

import pytest

from adapters.settings import Settings
from domain.ids import thread_id
from projector.webhook_sender import TRICKLE_S, YIELD_LAG_S, Sender, _Session
from projector.worker import RedisClock, _behind
from tests.ops_support import duologue
from tests.support import uid
from tests.webhook_support import Receiver, outbox, send_many, wait_until, webhook_env


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def _rows(db) -> list[tuple[int, str]]:
    return db.execute("SELECT deliveries, id FROM webhook_outbox ORDER BY seq").fetchall()


def test_a_batch_is_one_row_split_once_into_every_notification(
        fleet, receiver, redis_url, pkeys, db, ops_env):
    """Attacks: a bundle POSTed as one request, a notification of a bundle lost or doubled
    when it is split (by two projectors' senders at once), status counting rows instead of
    notifications, a split row whose retry window starts anew."""
    sends = []
    for _ in range(30):
        alice, bob = uid("alice"), uid("bob")
        sends += [(thread_id(alice, bob), alice, f"m{n}") for n in range(5)]
    ids = asyncio.run(send_many(redis_url, pkeys, sends))
    expected = {f"{t}/{i}" for (t, _, _), i in zip(sends, ids, strict=True)}
    env = webhook_env(receiver)
    fleet.burst(**env)  # enqueues, sends nothing (a batch job has no sender)
    rows = _rows(db)
    assert len(rows) < len(expected) / 10, rows  # a row per batch, not per notification
    assert sum(n for n, _ in rows) == len(expected)
    assert {r[0] for r in outbox(db)} == expected
    found = json.loads(duologue(ops_env, "status", "--json").stdout)
    assert found["webhooks"] == {"pending": len(expected), "dead": 0}

    receiver.plan = lambda _id, n: (500, 0.0) if n == 1 else (204, 0.0)  # one retry each
    for _ in range(2):
        fleet.start(**{**env, "DUOLOGUE_WEBHOOK_BACKOFF": "0.2"})
    wait_until(lambda: receiver.delivered() >= expected, 30, "every notification delivered")
    wait_until(lambda: outbox(db) == [], 10, "the outbox emptied")
    arrivals = Counter(r.delivery for r in receiver.requests)
    assert set(arrivals) == expected
    assert set(arrivals.values()) == {2}, arrivals.most_common(3)  # a 500, then a 204
    for request in receiver.requests:
        assert json.loads(request.body)["id"] == request.delivery  # one notification a POST


def test_a_split_notification_keeps_the_bundles_retry_window(
        fleet, receiver, redis_url, pkeys, db):
    """Attacks: split rows given a fresh created_at, so a delivery is retried for longer
    than DUOLOGUE_WEBHOOK_RETRY_FOR after its event was projected."""
    alice, bob = uid("alice"), uid("bob")
    sends = [(thread_id(alice, bob), alice, f"m{n}") for n in range(3)]
    asyncio.run(send_many(redis_url, pkeys, sends))
    fleet.burst(**webhook_env(receiver))
    (bundle_created,) = db.execute("SELECT created_at FROM webhook_outbox").fetchone()
    receiver.plan = lambda _id, _n: (503, 0.0)
    fleet.start(**webhook_env(receiver, DUOLOGUE_WEBHOOK_BACKOFF="5"))
    wait_until(lambda: len(receiver.requests) >= 3, 15, "first attempts")
    rows = db.execute("SELECT created_at, deliveries FROM webhook_outbox").fetchall()
    assert rows == [(bundle_created, 1)] * 3


def _session(lag: float) -> _Session:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://unused",
                                  "REDIS_URL": "redis://unused"})
    return _Session(Sender(settings, threading.Event(), lambda: lag))


def test_the_sender_holds_its_claims_while_the_projector_is_behind() -> None:
    """Attacks: a sender that competes with a projector catching up (the projection must
    come first), and one that stops delivering for as long as the projector is behind."""
    now = time.monotonic()
    caught_up, behind = _session(YIELD_LAG_S / 2), _session(YIELD_LAG_S * 5)
    assert not caught_up._holding(now)
    assert not behind._holding(now)  # it has not claimed for a while: the trickle's turn
    behind.claimed_at = now
    assert behind._holding(now + TRICKLE_S / 2)
    assert not behind._holding(now + TRICKLE_S)
    caught_up.claimed_at = now
    assert not caught_up._holding(now + 0.001)


def test_the_projectors_lag_is_the_age_of_the_oldest_entry_it_read() -> None:
    """Attacks: a lag read off the newest entry (a backlog would look caught up), an empty
    read that keeps the last lag (the sender would hold forever)."""
    from projector.reading import Chunk

    now_ms = int(time.time() * 1000)
    chunks = [Chunk(None, "0", [(f"{now_ms - 5000}-0".encode(), None),  # type: ignore[arg-type]
                                (f"{now_ms}-0".encode(), None)], [None]),  # type: ignore[list-item]
              Chunk(None, "0", [(f"{now_ms - 100}-0".encode(), None)], [None])]  # type: ignore[arg-type,list-item]
    now = now_ms / 1000
    assert _behind(chunks, now) == pytest.approx(5.0)
    assert _behind(chunks, now + 60) == pytest.approx(65.0)
    assert _behind([], now + 60) == 0.0


def test_the_lag_is_read_on_redis_clock_not_this_machines(rclient) -> None:
    """Attacks: a projector whose clock runs ahead of Redis's looking behind for ever (its
    senders would hold every delivery), or one running behind looking caught up."""
    clock = RedisClock()
    seconds, micros = rclient.time()
    redis_now = seconds + micros / 1e6
    assert clock.now(rclient) == pytest.approx(redis_now, abs=0.5)
    clock.offset, clock.read_at = 3600.0, time.monotonic()  # as if this clock were an hour off
    assert clock.now(rclient) == pytest.approx(redis_now + 3600, abs=0.5)  # cached ...
    clock.read_at -= RedisClock.EVERY_S
    assert clock.now(rclient) == pytest.approx(redis_now, abs=0.5)  # ... then read again
