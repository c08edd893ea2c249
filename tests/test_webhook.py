"""Offline notifications (protocol.md section 6, docs/webhooks.md): what is sent, to whom,
and what is not. Real projector processes, a real HTTP receiver, real Redis and Postgres.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from domain.ids import ms_of, thread_id
from tests.ops_support import duologue
from tests.support import uid
from tests.webhook_support import (
    SECRET,
    Receiver,
    online,
    outbox,
    projected,
    send,
    verify,
    wait_until,
    webhook_env,
)


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def post(redis_url, keys, thread, sender, body, reply_to=None) -> str:
    return asyncio.run(send(redis_url, keys, thread, sender, body, reply_to))


def test_an_offline_recipient_gets_a_signed_notification_with_the_exact_fields(
        fleet, receiver, redis_url, pkeys, db):
    """Attacks: a wrong or missing field, the recipient taken for the sender, reply_to lost,
    a ts that is not the event's, a signature over other bytes or with another key, a
    missing header."""
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    fleet.start(**webhook_env(receiver))
    first = post(redis_url, pkeys, thread, alice, "hello 👋 \"bob\"")
    reply = post(redis_url, pkeys, thread, bob, "hi", reply_to=first)
    wait_until(lambda: receiver.delivered() >= {f"{thread}/{first}", f"{thread}/{reply}"},
               15, "both notifications delivered")
    by_id = {r.delivery: r for r in receiver.requests}
    for event_id, sender, recipient, body, reply_to in (
            (first, alice, bob, "hello 👋 \"bob\"", None), (reply, bob, alice, "hi", first)):
        request = by_id[f"{thread}/{event_id}"]
        assert json.loads(request.body) == {
            "id": f"{thread}/{event_id}", "thread": thread, "event_id": event_id,
            "recipient": recipient, "sender": sender, "body": body, "reply_to": reply_to,
            "ts": ms_of(event_id)}
        assert list(json.loads(request.body)) == ["id", "thread", "event_id", "recipient",
                                                  "sender", "body", "reply_to", "ts"]
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Duologue-Delivery"] == f"{thread}/{event_id}"
        signature = request.headers["Duologue-Signature"]
        assert signature.startswith("sha256=")
        assert verify(SECRET, request.body, signature)
        assert not verify("another secret", request.body, signature)
        assert not verify(SECRET, request.body + b" ", signature)
    wait_until(lambda: outbox(db) == [], 5, "delivered rows leave the outbox")


def test_no_notification_to_an_online_recipient_or_to_oneself(
        fleet, receiver, redis_url, pkeys, rclient, prefix, db):
    """Attacks: presence ignored (a live lease must stop the notification), a lease that
    expired still counted as online, a note-to-self thread notified."""
    alice, carol, dave = uid("alice"), uid("carol"), uid("dave")
    online(rclient, prefix, carol)  # a live lease: online
    online(rclient, prefix, dave, age_ms=46_000)  # a lease past LEASE_MS: offline
    fleet.start(**webhook_env(receiver))
    to_carol = post(redis_url, pkeys, thread_id(alice, carol), alice, "you are online")
    to_self = post(redis_url, pkeys, thread_id(alice, alice), alice, "note to self")
    to_dave = post(redis_url, pkeys, thread_id(alice, dave), alice, "you are away")
    wait_until(lambda: receiver.delivered() == {f"{thread_id(alice, dave)}/{to_dave}"}, 15,
               "the offline recipient notified")
    wait_until(lambda: projected(db, thread_id(alice, carol), to_carol)
               and projected(db, thread_id(alice, alice), to_self), 10, "all projected")
    time.sleep(1.0)  # a notification enqueued by mistake would be POSTed by now
    assert receiver.delivered() == {f"{thread_id(alice, dave)}/{to_dave}"}
    assert outbox(db) == []
    assert len(receiver.requests) == 1


def test_replay_and_rebuild_enqueue_nothing(fleet, receiver, redis_url, pkeys, db, ops_env):
    """Attacks: the outbox written by project() itself (replay and rebuild re-project
    every MessageSent of the log and would notify them all again)."""
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    ids = [post(redis_url, pkeys, thread, alice, f"m{n}") for n in range(3)]
    fleet.burst()  # projected with no webhook configured: nothing enqueued
    assert outbox(db) == []
    env = {**ops_env, **webhook_env(receiver)}
    done = duologue(env, "replay", "--thread", thread)
    assert done.returncode == 0, done.stderr
    done = duologue(env, "rebuild")
    assert done.returncode == 0, done.stderr
    assert outbox(db) == []
    # the live path, same settings, does enqueue (--burst runs no sender: the row stays)
    late = post(redis_url, pkeys, thread, bob, "late")
    fleet.burst(**webhook_env(receiver))
    assert [row[0] for row in outbox(db)] == [f"{thread}/{late}"]
    assert receiver.requests == []
    assert ids


def test_a_presence_read_that_fails_counts_as_offline(fleet, receiver, redis_url, pkeys,
                                                      rclient, prefix, db):
    """Attacks: a failed presence read that drops the batch's notifications (or fails the
    batch: the projection would stall). A presence key of the wrong type makes Redis refuse
    the read for real."""
    from adapters import presence

    alice, erin = uid("alice"), uid("erin")
    rclient.set(presence.key(prefix, erin), "not a hash")  # HGETALL: WRONGTYPE
    fleet.start(**webhook_env(receiver))
    event = post(redis_url, pkeys, thread_id(alice, erin), alice, "hello?")
    wait_until(lambda: receiver.delivered() == {f"{thread_id(alice, erin)}/{event}"}, 15,
               "notified although Redis refused the presence read")
    assert projected(db, thread_id(alice, erin), event)


def test_a_webhook_url_without_a_secret_is_refused(ops_env):
    """Attacks: unsigned (forgeable) notifications sent because the secret was forgotten."""
    done = duologue({**ops_env, "DUOLOGUE_WEBHOOK_URL": "http://127.0.0.1:9/hook"},
                    "projector", timeout=30)
    assert done.returncode != 0
    assert "DUOLOGUE_WEBHOOK_SECRET is not set" in done.stderr
