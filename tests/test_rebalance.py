"""Partitions change owner under light, bursty traffic: nothing acked is ever lost.

Workers join and leave at random moments (started, SIGTERMed, SIGKILLed) while a
workload sends in bursts with pauses between them, so a worker is often blocked in a
read when it gives a partition up. In v1 the entries such a read returned were dropped
and later skipped: acked events never reached ``events``/``messages``. Each round ends
with every acked event exactly once in the archive and the projection equal to the fold
of the streams, and ``duologue verify`` clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import psycopg
import redis

from duologue.keys import Keys
from projector.ledger import lock_id
from tests.projection_support import (
    Fleet,
    Workload,
    assert_done,
    drain_problems,
    tail,
    wait_drained,
)
from tests.support import Client, thread_of, uid
from tests.test_ops_cli import duologue
from tests.test_projector_faults import owned_now


async def _churn(fleet: Fleet, rng: random.Random, until: asyncio.Event,
                 actions: list[str]) -> None:
    """Between one and three workers at a time; one joins or leaves every 0.3-1.5 s."""
    running = [fleet.start()]
    while not until.is_set():
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        running = [p for p in running if p.process is not None and p.process.poll() is None]
        if len(running) < 3 and (len(running) <= 1 or rng.random() < 0.5):
            running.append(fleet.start())
            actions.append("join")
        else:
            leaving = running.pop(rng.randrange(len(running)))
            if rng.random() < 0.5:
                leaving.kill()
                actions.append("kill")
            else:
                await asyncio.to_thread(leaving.terminate)
                actions.append("term")
    for process in running:
        await asyncio.to_thread(process.terminate)


async def _bursts(work: Workload, rng: random.Random, total: int) -> int:
    sent = 0
    while sent < total:
        size = min(rng.randint(30, 200), total - sent)
        sent += await work.run(size, rate=rng.choice((300, 600, 1200)))
        await asyncio.sleep(rng.uniform(0.1, 1.0))
    return sent


async def test_workers_joining_and_leaving_under_bursty_load_lose_nothing(
        gateway, fleet, rclient, db, pkeys):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    async with Workload(gateway.ws_url, seed=seed, threads=60) as work:
        for round_ in range(3):
            done = asyncio.Event()
            actions: list[str] = []
            churn = asyncio.create_task(_churn(fleet, rng, done, actions))
            try:
                sent = await _bursts(work, rng, 1200)
            finally:
                done.set()
                await churn
            fleet.burst()
            assert_done(rclient, db, pkeys)  # every event once, projection == fold
            archived = db.execute("SELECT count(*) FROM events").fetchone()
            assert archived == (work.appended,), (seed, round_, actions)
            assert sent == 1200
            print(f"round {round_}: {len(actions)} joins/leaves: {actions}")
    verify = duologue(fleet.env, "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


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
    ghost = redis.Redis.from_url(redis_url)
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


def wait_drained_except(client: redis.Redis, conn: psycopg.Connection, keys: Keys,
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
