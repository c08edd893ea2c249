"""Webhook retries (protocol.md section 6): failed deliveries come again with doubling
backoff, and dead ones are recorded and counted in ``duologue status``.

The projectors here run with ``DUOLOGUE_WEBHOOK_TIMEOUT=1`` and
``DUOLOGUE_WEBHOOK_BACKOFF=0.2`` (webhook_support.webhook_env) to keep the test short.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from domain.ids import thread_id
from tests.ops_support import duologue
from tests.support import uid
from tests.webhook_support import Receiver, outbox, send, wait_until, webhook_env

BACKOFF = 0.2
TIMEOUT = 1.0


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def post(redis_url, keys, thread, sender, body) -> str:
    return asyncio.run(send(redis_url, keys, thread, sender, body))


def test_retries_after_500s_and_timeouts_with_doubling_backoff(
        fleet, receiver, redis_url, pkeys, db):
    """Attacks: no retry after a 5xx or after no answer, a fixed (or no) delay between
    attempts, a body that changes between attempts, a delivery retried after its 2xx."""
    # attempts 1-3 answer 500, the 4th answers too late (2 s > the 1 s timeout), the 5th 200
    receiver.plan = lambda _id, n: (500, 0.0) if n <= 3 else (200, 2.0) if n == 4 else (200, 0)
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    fleet.start(**webhook_env(receiver))
    event = post(redis_url, pkeys, thread, alice, "knock knock")
    delivery = f"{thread}/{event}"
    wait_until(lambda: len(receiver.attempts(delivery)) >= 5, 20, "five attempts")
    wait_until(lambda: outbox(db) == [], 5, "the delivered row leaves the outbox")
    time.sleep(BACKOFF * 4)
    attempts = receiver.attempts(delivery)
    assert [a.attempt for a in attempts] == [1, 2, 3, 4, 5]  # none after the 2xx
    assert len({a.body for a in attempts}) == 1
    assert len({a.headers["Duologue-Signature"] for a in attempts}) == 1
    # the wait before each retry, from the end of the failed attempt (for the timed-out
    # 4th: its start + the timeout): 0.2, 0.4, 0.8, 1.6 s
    failed_at = [a.ended for a in attempts[:3]] + [attempts[3].started + TIMEOUT]
    waits = [b.started - a for a, b in zip(failed_at, attempts[1:], strict=True)]
    for n, wait in enumerate(waits):  # each within scheduling noise of its due time
        expected = BACKOFF * 2 ** n
        assert expected * 0.8 <= wait <= expected + 0.6, (n, waits)
    assert all(a < b for a, b in itertools.pairwise(waits)), waits  # growing
    assert waits[3] / waits[0] >= 4, waits  # 8 when exact: doubling, not a fixed delay


def test_dead_after_retry_for_and_counted_in_status(fleet, receiver, redis_url, pkeys, db,
                                                     ops_env):
    """Attacks: retrying forever, a dead row deleted (or still retried), status not
    counting pending or dead deliveries."""
    receiver.plan = lambda _id, _n: (503, 0.0)
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    env = webhook_env(receiver, DUOLOGUE_WEBHOOK_RETRY_FOR="2.5")
    fleet.start(**env)
    event = post(redis_url, pkeys, thread, alice, "are you there")
    delivery = f"{thread}/{event}"
    wait_until(lambda: receiver.arrived(delivery) >= 1, 10, "a first attempt")
    found = json.loads(duologue(ops_env, "status", "--json").stdout)
    assert found["webhooks"] == {"pending": 1, "dead": 0}
    started = time.monotonic()
    wait_until(lambda: outbox(db) and outbox(db)[0][2], 15, "the delivery recorded as dead")
    assert time.monotonic() - started < 2.5 + 2  # not long after RETRY_FOR
    tries = receiver.arrived(delivery)
    assert 3 <= tries <= 6, tries  # 0.2, 0.4, 0.8, then the deadline: about 5 attempts
    found = json.loads(duologue(ops_env, "status", "--json").stdout)
    assert found["webhooks"] == {"pending": 0, "dead": 1}
    human = duologue(ops_env, "status")
    assert "webhook dead" in human.stdout and "webhook pending" in human.stdout
    time.sleep(1.0)
    assert receiver.arrived(delivery) == tries  # a dead delivery is never tried again
    row = db.execute("SELECT last_error FROM webhook_outbox").fetchone()
    assert row == ("HTTP 503",)
