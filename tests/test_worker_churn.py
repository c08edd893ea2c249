"""protocol.md section 7 and guarantee 5: projector workers join and leave (SIGTERM,
SIGKILL) under a light, bursty load, aimed at the moment a worker gives partitions up;
every acked event is archived and projected exactly once. (The deterministic form of the
v1 loss is in test_rebalance.py.)
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from typing import Any

import psycopg

from adapters.record import Keys
from tests.projection_support import (
    PARTITIONS,
    Fleet,
    assert_projection,
    dead_letters,
    drain_problems,
    log_lines,
    tail,
    thread_streams,
)
from tests.record_support import acked_problems, duologue, shown
from tests.workload_support import Workload

# --- 1. partitions change owner under light, bursty traffic ------------------------------

REBALANCE_EVERY = 2.0  # docs/projector.md: every 2 s each worker heartbeats and rebalances
FILL_EVERY = 0.08  # the trickle: one command every 80 ms


class Watch:
    """The projector workers as Postgres shows them to an operator: ``projector_workers``
    (process id, session, last heartbeat) and the partition locks their sessions hold
    (``pg_locks``), polled."""

    def __init__(self, url: str, prefix: str, keys: Keys) -> None:
        from projector.ledger import lock_id  # the name of each partition's lock

        self.conn = psycopg.connect(url, autocommit=True)
        self.prefix = prefix
        self.partition_of = {lock_id(keys.log(p)) & (2**64 - 1): p
                             for p in range(keys.partitions)}

    def workers(self) -> dict[int, tuple[int, float]]:
        """Process id -> (its session's backend pid, its last heartbeat as Unix time)."""
        return {int(pid): (int(backend), float(beat)) for pid, backend, beat in
                self.conn.execute(
                    "SELECT pid, backend_pid, extract(epoch FROM heartbeat_at) "
                    "FROM projector_workers WHERE prefix = %s", (self.prefix,))}

    def held(self) -> dict[int, set[int]]:
        """Backend pid -> the partitions whose lock it holds."""
        out: dict[int, set[int]] = defaultdict(set)
        for backend, key in self.conn.execute(
                "SELECT pid, (classid::int8 << 32) | objid::int8 FROM pg_locks "
                "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
                "AND database = (SELECT oid FROM pg_database "
                "                WHERE datname = current_database())"):
            partition = self.partition_of.get(int(key) & (2**64 - 1))
            if partition is not None:
                out[int(backend)].add(partition)
        return out

    def sole_owner(self) -> int | None:
        """The process id of the one worker holding every partition, if that is the state."""
        held = self.held()
        workers = self.workers()
        full = [pid for pid, (backend, _) in workers.items()
                if len(held.get(backend, ())) == PARTITIONS]
        return full[0] if full and len(held) == 1 else None

    async def until(self, what: str, test: Any, timeout: float, every: float = 0.005) -> Any:
        """Poll until ``test()`` is truthy; return it (None on timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = test()
            if found:
                return found
            await asyncio.sleep(every)
        print(f"  gave up waiting for {what}: {self.workers()} {dict(self.held())}")
        return None

    def close(self) -> None:
        self.conn.close()


class Trickle:
    """One command every ``FILL_EVERY`` on threads of the partitions a worker keeps when
    another joins: a worker that reads them is always blocked in a read, waiting."""

    def __init__(self, work: Workload, models: list[Any]) -> None:
        self.work = work
        self.models = models
        self.on = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while True:
            await self.on.wait()
            await self.work._step(self.models[n % len(self.models)])
            n += 1
            await asyncio.sleep(FILL_EVERY)

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Churn:
    """Projector processes joining and leaving, a join aimed from the heartbeats."""

    def __init__(self, fleet: Fleet, watch: Watch, work: Workload, keys: Keys,
                 rng: random.Random) -> None:
        self.fleet, self.watch, self.work, self.keys, self.rng = fleet, watch, work, keys, rng
        self.cold = [m for m in work.models if keys.partition(m.thread) < PARTITIONS // 2]
        self.hot = [m for m in work.models if keys.partition(m.thread) >= PARTITIONS // 2]
        assert len(self.cold) >= 8 and len(self.hot) >= 8, (len(self.cold), len(self.hot))
        self.trickle = Trickle(work, self.cold)
        self.processes: dict[int, Any] = {}
        self.latencies = [0.3]  # from start to first heartbeat, measured as we go
        self.hits = 0
        self.log: list[str] = []

    def start(self) -> int:
        process = self.fleet.start()
        assert process.process is not None
        self.processes[process.process.pid] = process
        return process.process.pid

    async def sole_owner(self) -> int:
        pid = await self.watch.until("one worker owning everything", self.watch.sole_owner, 20)
        assert pid is not None, [tail(p) for p in self.processes.values()]
        return int(pid)

    async def aimed_join(self, old: int) -> int:
        """Start a worker whose first heartbeat comes 0.2 s after one of ``old``'s: both
        rebalance again 2 s later, ``old`` a little earlier, giving partitions 4-7 up just
        after a trickle entry (a read is in flight), the newcomer taking them a fraction
        of a second later. Then one command on a thread of those at once, and more."""
        watch, trickle = self.watch, self.trickle
        trickle.on.set()
        old_backend, beat = watch.workers()[old]
        latency = sorted(self.latencies)[len(self.latencies) // 2]
        start_at = beat + 0.2 - latency
        while start_at < time.time() + 0.02:
            start_at += REBALANCE_EVERY + FILL_EVERY / 2
        await asyncio.sleep(start_at - time.time())
        started = time.time()
        new = self.start()
        seen = await watch.until("the newcomer's heartbeat",
                                 lambda: watch.workers().get(new), 10, every=0.01)
        assert seen is not None, tail(self.processes[new])
        new_backend, first_beat = seen
        self.latencies.append(first_beat - started)
        lead = first_beat - watch.workers()[old][1]
        given = await watch.until(
            "the first worker giving partitions up",
            lambda: len(watch.held().get(old_backend, ())) < PARTITIONS and time.time(), 5)
        trickle.on.clear()
        taken = await watch.until(
            "the newcomer taking them",
            lambda: (parts := watch.held().get(new_backend)) and (time.time(), parts), 5)
        gap = None
        if given and taken:
            gap = taken[0] - given
            await self._probe(new, taken[1])
            self.hits += gap < 0.4
        self.log.append(f"start latency {self.latencies[-1]:.2f}s, heartbeat lead "
                        f"{lead:+.2f}s, gap {gap if gap is None else round(gap, 3)}")
        return new

    async def _probe(self, new: int, partitions: set[int]) -> None:
        model = self.rng.choice([m for m in self.hot
                                 if self.keys.partition(m.thread) in partitions])
        partition = self.keys.partition(model.thread)
        newcomer = self.processes[new]
        # its lock is the start of a takeover; its log line, the end
        await self.watch.until("the takeover's end", lambda: any(
            r["partition"] == partition for r in log_lines(newcomer, "partition_taken")),
            0.3, every=0.003)
        for _ in range(4):  # the first is the one a read in flight may have taken
            await self.work._step(model)

    async def leave(self, *pids: int) -> None:
        for pid in pids:
            if self.rng.random() < 0.5:
                self.processes[pid].kill()
                self.log.append(f"SIGKILL {pid}")
            else:
                await asyncio.to_thread(self.processes[pid].terminate)
                self.log.append(f"SIGTERM {pid}")

    async def close(self) -> None:
        await self.trickle.close()
        for process in self.processes.values():
            await asyncio.to_thread(process.terminate)


async def test_workers_joining_and_leaving_under_a_light_bursty_load_lose_no_acked_event(
        gateway, fleet, rclient, db, pkeys, fresh_database, prefix):
    """Defect 1, black box: projector processes, a gateway, WebSocket clients, and what
    Postgres shows an operator of the workers (``projector_workers``, ``pg_locks``).

    Each round: a burst of 50-200 commands over 60 threads; then a trickle on threads of
    partitions 0-3 while a second worker starts, timed from the heartbeats so that it
    takes partitions 4-7 over a fraction of a second after the first worker gave them up
    (the first being blocked in a read meanwhile); the moment it has, commands on a
    thread of 4-7; now and then a third worker joins too; then workers leave (SIGTERM or
    SIGKILL, at random) until one is left. v1 dropped the entry that the first worker's
    read returned and then skipped it. Every acked event must be archived exactly once,
    the projection must be the fold of the streams, nothing pending, no dead letter,
    ``verify`` clean."""
    seed = int(os.environ.get("DUOLOGUE_TEST_SEED") or random.randrange(1 << 30))
    print(f"seed {seed}")
    rng = random.Random(seed)
    watch = Watch(fresh_database, prefix, pkeys)
    rounds = 7
    async with Workload(gateway.ws_url, users=24, threads=60, seed=seed) as work:
        churn = Churn(fleet, watch, work, pkeys, rng)
        try:
            churn.start()
            for round_ in range(rounds):
                mark = len(churn.log)
                await work.run(rng.randint(50, 200), rate=rng.choice((300, 600, 1200)))
                old = await churn.sole_owner()
                new = await churn.aimed_join(old)
                pids = [old, new]
                if rng.random() < 0.3:  # a third joins, at a random moment
                    await asyncio.sleep(rng.uniform(0, 1))
                    pids.append(churn.start())
                    churn.log.append(f"third worker {pids[-1]}")
                    await work.run(rng.randint(20, 60), rate=50)
                else:
                    await asyncio.sleep(0.3)
                rng.shuffle(pids)
                await churn.leave(*pids[1:])
                print(f"round {round_}: {'; '.join(churn.log[mark:])}")
        finally:
            await churn.close()
            watch.close()
    fleet.burst()
    acked = {m.thread: m.ids for m in work.models}
    problems = acked_problems(db, acked)
    assert not problems, (f"seed {seed}: acked events lost or doubled while partitions "
                          "changed owner:\n  " + "\n  ".join(problems + churn.log))
    assert_projection(db, thread_streams(rclient, pkeys))
    assert drain_problems(rclient, db, pkeys) == [], seed
    assert dead_letters(db) == [], seed
    verify = duologue(fleet.env, "verify")
    assert verify.returncode == 0, shown(verify)
    assert churn.hits >= 1, (f"seed {seed}: no newcomer took partitions over within 0.4 s "
                             "of their release, so this run tested nothing:\n  "
                             + "\n  ".join(churn.log))


