"""The projector under faults: SIGKILL at random points, a dead worker among two, SIGTERM,
Postgres down, Redis restarted. After each, the projection equals the domain fold of the
thread streams exactly (guarantee 5: every event exactly once in effect, in order)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from typing import Any

import psycopg
import redis

from adapters.record import Keys
from projector.tables import PROJECTION_LOCK
from tests.projection_support import (
    PARTITIONS,
    Fleet,
    assert_done,
    assert_projection,
    checkpoint_events,
    checkpoints,
    drain_problems,
    log_entries,
    log_lines,
    owned_now,
    projector_env,
    streams_up_to,
    tail,
    wait_drained,
)
from tests.workload_support import Workload


async def wait_progress(db, before: int, timeout: float, done: Any = None) -> bool:
    """Until the checkpoints count more events than ``before`` (False on timeout/done())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if checkpoint_events(db) > before:
            return True
        if done is not None and done():
            return False
        await asyncio.sleep(0.02)
    return False


# --- 1. SIGKILL at random points, restarted, several rounds -----------------------------


async def test_killed_at_random_points_then_burst_projects_every_event_once(
        gateway, fleet, rclient, db, pkeys):
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    kills: list[str] = []
    async with Workload(gateway.ws_url, seed=seed) as work:
        writing = asyncio.create_task(work.run(5000, rate=800))
        rounds = 0
        while rounds < 5 or (not writing.done() and rounds < 12):
            rounds += 1
            process = fleet.start()
            before = checkpoint_events(db)
            if rounds % 3 == 0:  # now and then while it starts up or takes partitions
                await asyncio.sleep(rng.uniform(0.05, 0.8))
            else:  # else while it projects: after its first commit of this round
                await wait_progress(db, before, 15, lambda: writing.done() and not
                                    drain_problems(rclient, db, pkeys))
                await asyncio.sleep(rng.uniform(0, 0.3))
            process.kill()
            kills.append(f"round {rounds}: {checkpoint_events(db) - before} events")
            await asyncio.sleep(rng.uniform(0, 0.2))
        assert await writing == 5000
    assert sum(1 for k in kills if not k.endswith(": 0 events")) >= 3, (seed, kills)
    fleet.burst()
    assert_done(rclient, db, pkeys)
    assert db.execute("SELECT count(*), sum(events) FROM threads").fetchone() == (50, 5000)
    assert db.execute("SELECT count(*) FROM events").fetchone() == (5000,)
    assert work.kinds["edit"] > 300 and work.kinds["delete"] > 200 and work.kinds["read"] > 500


async def test_burst_right_after_a_worker_was_killed_drains_every_partition(
        gateway, fleet, rclient, db, pkeys):
    """The killed worker's heartbeat row is still fresh: the burst worker must not take it
    for a live worker that owns half the partitions, and exit with those undrained."""
    async with Workload(gateway.ws_url, seed=11) as work:
        await work.run(200)
        first = fleet.start()
        wait_drained(rclient, db, pkeys, 30, "by the first worker")
        first.kill()
        await work.run(400)
    started = time.monotonic()
    fleet.burst()
    assert_done(rclient, db, pkeys)
    assert time.monotonic() - started < 20


# --- 3. two workers, one SIGKILLed while events flow -------------------------------------


async def test_two_workers_one_killed_the_survivor_takes_over_in_order(
        gateway, fleet, rclient, db, pkeys):
    victim, survivor = fleet.start(), fleet.start()
    async with Workload(gateway.ws_url, seed=3) as work:
        writing = asyncio.create_task(work.run(3000, rate=600))
        deadline = time.monotonic() + 30
        while not (owned_now(victim) and owned_now(survivor)):  # both hold partitions
            assert time.monotonic() < deadline, (tail(victim), tail(survivor))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        # Freeze the victim (it may have read entries it will never commit), then
        # SIGKILL it: the survivor reads those partitions again from their checkpoints.
        assert victim.process is not None
        os.kill(victim.process.pid, signal.SIGSTOP)
        await asyncio.sleep(0.2)  # new entries wait in the victim's partitions
        parts = owned_now(victim)
        victim.kill()
        killed_at = time.monotonic()
        assert await writing == 3000
        # On a slow machine the workload may be over before the kill: more is written after
        # it, so that the victim's partitions surely get entries only the survivor can drain.
        assert await work.run(1000, rate=600) == 1000
    took = wait_drained(rclient, db, pkeys, 40, "by the survivor")
    # Liveness is the victim's Postgres session: takeover at the survivor's next
    # rebalance (2 s), not after a heartbeat timeout.
    assert took < 6, f"survivor took {took:.1f}s after the last append to drain"
    assert survivor.process is not None and survivor.process.poll() is None
    assert_done(rclient, db, pkeys)  # includes: archive order per thread == stream order
    assert parts <= owned_now(survivor), (parts, tail(survivor))
    print(f"survivor drained {time.monotonic() - killed_at:.1f}s after the kill "
          f"({took:.1f}s after the last append)")


# --- 7. SIGTERM mid-run -------------------------------------------------------------------


async def test_sigterm_finishes_the_batch_and_exits_0_nothing_half_applied(
        gateway, fleet, rclient, db, pkeys):
    async with Workload(gateway.ws_url, seed=7) as work:
        assert await work.run(4000) == 4000
    entries = log_entries(rclient, pkeys)  # before anything is trimmed
    process = fleet.start()
    assert await wait_progress(db, 0, 20), tail(process)
    assert process.process is not None
    process.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    assert process.wait(20) == 0, tail(process)
    assert time.monotonic() - signalled < 10
    assert log_lines(process, "projector_stopped")
    assert db.execute("SELECT count(*) FROM projector_workers").fetchone() == (0,)  # retired
    # Exactly the entries up to each partition's checkpoint are applied, no more, no less.
    marks = checkpoints(db)
    assert_projection(db, streams_up_to(entries, marks))
    print(f"stopped at {checkpoint_events(db)} of 4000 events")
    fleet.burst()
    assert_done(rclient, db, pkeys)


# --- 5. Postgres unavailable mid-run ------------------------------------------------------


async def test_postgres_down_mid_run_retries_with_backoff_and_catches_up(
        gateway, redis_url, prefix, log_dir, rclient, pkeys, private_postgres):
    fleet = Fleet(projector_env(redis_url, private_postgres.url, prefix), log_dir)
    try:
        db = psycopg.connect(private_postgres.url, autocommit=True)
        process = fleet.start()
        async with Workload(gateway.ws_url, seed=5) as work:
            writing = asyncio.create_task(work.run(2000, rate=700))
            assert await wait_progress(db, 0, 20), tail(process)
            db.close()
            private_postgres.stop()
            await asyncio.sleep(3)  # events keep coming; the projector keeps retrying
            private_postgres.start()
            assert await writing == 2000
        with psycopg.connect(private_postgres.url, autocommit=True) as db:
            wait_drained(rclient, db, pkeys, 40, f"after Postgres came back:\n{tail(process)}")
            assert_done(rclient, db, pkeys)
        assert process.process is not None and process.process.poll() is None, tail(process)
        delays = [r["retry_in"] for r in log_lines(process, "projector_retry")]
        assert len(delays) >= 3, tail(process)
        assert delays[:4] == [0.1, 0.2, 0.4, 0.8], delays  # backing off, doubling
        assert process.terminate() == 0
    finally:
        fleet.stop_all()


async def next_waiting_backends(db, seen: set[int], process) -> list[int]:
    """Projector sessions (not in ``seen``) waiting on a lock, as soon as there are any."""
    deadline = time.monotonic() + 20
    while True:
        pids = [pid for (pid,) in db.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'duologue-projector' AND wait_event_type = 'Lock'")
            if pid not in seen]
        if pids:
            return pids
        assert time.monotonic() < deadline, tail(process)
        await asyncio.sleep(0.02)


async def test_connection_dropped_mid_batch_again_and_again_buries_nothing(
        gateway, fleet, rclient, db, pkeys, fresh_database):
    """Postgres drops the projector's connection in the middle of its batch six times in
    a row (pg_terminate_backend: a flapping server, a proxy, a failover). Each retry
    re-claims and re-reads the same pending entries, but a retry is not a crash loop:
    not one valid event may end up a dead letter."""
    async with Workload(gateway.ws_url, seed=55) as work:
        assert await work.run(300) == 300
    # Hold the projection lock (as replay and rebuild's swap do): each batch waits on
    # it, so every termination lands while the batch is in hand.
    holder = psycopg.connect(fresh_database, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (PROJECTION_LOCK,))
        process = fleet.start(DUOLOGUE_PROJECTOR_LANES="1")  # one backend per session
        terminated: set[int] = set()
        while len(terminated) < 6:
            for pid in await next_waiting_backends(db, terminated, process):
                db.execute("SELECT pg_terminate_backend(%s)", (pid,))
                terminated.add(pid)
        # The seventh session waits with the same entries in hand: let it through.
        await next_waiting_backends(db, terminated, process)
    finally:
        holder.close()
    wait_drained(rclient, db, pkeys, 30)
    assert len(log_lines(process, "projector_retry")) >= 6
    assert_done(rclient, db, pkeys)  # includes: no dead letters


# --- 6. Redis restarted mid-run -------------------------------------------------------------


async def test_redis_restarted_mid_run_the_projector_heals(
        start_gateway, private_redis, prefix, log_dir, fresh_database):
    gateway = start_gateway(REDIS_URL=private_redis.url, DUOLOGUE_PARTITIONS=str(PARTITIONS))
    fleet = Fleet(projector_env(private_redis.url, fresh_database, prefix), log_dir)
    keys = Keys(prefix, PARTITIONS)
    client = redis.Redis.from_url(private_redis.url)
    db = psycopg.connect(fresh_database, autocommit=True)
    try:
        process = fleet.start()
        async with Workload(gateway.ws_url, seed=6) as work:
            writing = asyncio.create_task(work.run(2000, rate=700))
            assert await wait_progress(db, 0, 20), tail(process)
            private_redis.stop()
            await asyncio.sleep(1.5)
            private_redis.start()
            assert await writing == 2000
        wait_drained(client, db, keys, 40, f"after Redis came back:\n{tail(process)}")
        assert_done(client, db, keys)
        assert process.process is not None and process.process.poll() is None, tail(process)
        assert log_lines(process, "projector_retry"), tail(process)
        assert process.terminate() == 0
    finally:
        fleet.stop_all()
        db.close()
        client.close()
