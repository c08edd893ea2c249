"""A partition changing owner while a read is in flight loses nothing (deterministic).

In v1 the entry a read returned to a worker that had just given its partition up was
dropped, and the new owner moved the checkpoint past it. The randomised form, workers
joining and leaving under bursty load, is in ``test_worker_churn.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import psycopg
import redis

from adapters.record import Keys
from adapters.redis_connect import SyncRedis, sync_redis
from projector.ledger import lock_id
from tests.projection_support import (
    assert_done,
    drain_problems,
    owned_now,
    tail,
    wait_drained,
)
from tests.support import Client, thread_of, uid


async def test_an_entry_a_stale_read_took_is_still_projected(
        gateway, fleet, rclient, db, pkeys, fresh_database, redis_url):
    """Deterministic form of the v1 loss. A read that was in flight when its worker gave
    a partition up returned the partition's next entry to that worker, after the new
    owner had taken the partition over; the new owner read newer entries and moved the
    checkpoint past it. Here the stale read is played by a consumer "ghost" that blocks
    on the partition log before the worker takes it (so Redis serves it first)."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    partition = pkeys.partition(thread)
    stream = pkeys.log(partition)
    a = await Client.connect(gateway.ws_url, alice)
    holder = psycopg.connect(fresh_database, autocommit=True)
    ghost = sync_redis(redis_url)
    try:
        before = await a.say(bob, "before")
        assert before["type"] == "ack"
        holder.execute("SELECT pg_advisory_lock(%s)", (lock_id(stream),))  # not the worker's
        worker = fleet.start()
        wait_drained_except(rclient, db, pkeys, partition)
        with contextlib.suppress(redis.ResponseError):  # v1 made it; v1.1 has no group
            rclient.xgroup_create(stream, "projector", id="$", mkstream=True)
        stale = asyncio.create_task(asyncio.to_thread(
            ghost.xreadgroup, "projector", "ghost", {stream: ">"}, count=1, block=0))
        await asyncio.sleep(0.3)  # the ghost waits first
        holder.execute("SELECT pg_advisory_unlock(%s)", (lock_id(stream),))
        deadline = time.monotonic() + 10
        while partition not in owned_now(worker):
            assert time.monotonic() < deadline, tail(worker)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.6)  # the worker waits on the log too, after the ghost
        taken = await a.say(bob, "the stale read takes this one")
        [[_, [(log_id, _)]]] = await asyncio.wait_for(stale, 10)
        later = [await a.say(bob, f"later {n}") for n in range(3)]
        wait_drained(rclient, db, pkeys, 20, tail(worker))
        await asyncio.to_thread(worker.terminate)
        fleet.burst()
        ids = [i for i, in db.execute("SELECT id FROM events WHERE thread = %s ORDER BY key",
                                      (thread,))]
        assert ids == [before["id"], taken["id"], *[x["id"] for x in later]], log_id
        assert_done(rclient, db, pkeys)
    finally:
        await a.close()
        holder.close()
        ghost.close()


def wait_drained_except(client: SyncRedis, conn: psycopg.Connection, keys: Keys,
                        partition: int, timeout: float = 20) -> None:
    """Until every log but ``partition``'s is projected to its head."""
    deadline = time.monotonic() + timeout
    skip = keys.log(partition)
    while True:
        problems = [p for p in drain_problems(client, conn, keys) if not p.startswith(skip)]
        if not problems:
            return
        assert time.monotonic() < deadline, problems
        time.sleep(0.05)
