"""protocol.md section 4: `duologue status` and `verify` report lag as lag, not as a
difference; status shows partitions, workers and totals.
"""

from __future__ import annotations

import time
from typing import Any

from adapters.redis_connect import async_redis
from domain.ids import thread_id
from gateway.store import EventStore
from tests.ops_support import (
    Seeder,
    assert_projection_is_fold,
    differing,
    duologue,
    pairs_of,
    project_burst,
    seed,
    status_json,
    stream_of,
)
from tests.projection_support import PARTITIONS
from tests.support import ProjectorProcess

# --- 2. lag is reported, not a difference ---------------------------------------------

async def test_verify_reports_lag_without_failing(ops_env, ops_keys, redis_url, rclient, db,
                                                  log_dir):
    [(a, b), (c, d)] = pairs_of(2)
    first = await seed(redis_url, ops_keys, [(a, b)], 5)
    project_burst(ops_env, log_dir)
    projected = len(stream_of(rclient, ops_keys, thread_id(a, b)))

    client = async_redis(redis_url)
    try:
        seeder = Seeder(EventStore(client, ops_keys, 86400))
        ab = thread_id(a, b)
        await seeder.send(ab, a, "late 1")
        await seeder.edit(ab, b, first[ab][1], "late edit")
        await seeder.read(ab, a, first[ab][-1])
        new = await seed(redis_url, ops_keys, [(c, d)], 3)
    finally:
        await client.aclose()
    cd = thread_id(c, d)
    lagging = 3 + len(stream_of(rclient, ops_keys, cd))

    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert differing(done) == set()
    total = projected + lagging
    assert f"2 threads, {total} events checked; 0 differ; {lagging} events not yet projected" \
        in done.stdout
    done = duologue(ops_env, "verify", "--thread", ab)
    assert done.returncode == 0 and "3 events not yet projected" in done.stdout, done.stdout

    # once projected, there is no lag and still no difference
    project_burst(ops_env, log_dir)
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{total} events checked; 0 differ; 0 events not yet projected" in done.stdout
    assert_projection_is_fold(db, rclient, ops_keys, sorted([ab, cd]))
    assert len(new[cd]) == 3


# --- 3. status -------------------------------------------------------------------------

async def test_status_shows_partitions_workers_and_totals(ops_env, ops_keys, redis_url,
                                                          rclient, db, log_dir):
    threads = await seed(redis_url, ops_keys, pairs_of(6), 8)
    events = sum(len(stream_of(rclient, ops_keys, t)) for t in threads)
    messages = sum(len(ids) for ids in threads.values())
    poisoned = ops_keys.partition(next(iter(threads)))
    rclient.xadd(ops_keys.log(poisoned), {"garbage": "1"})

    # nothing projected yet: everything is lag, nobody owns anything
    found = status_json(ops_env)
    assert [p["partition"] for p in found["partitions"]] == list(range(PARTITIONS))
    assert found["workers"] == []
    assert all(p["owner"] is None and p["checkpoint"] == "0" for p in found["partitions"])
    assert found["totals"]["lag_events"] == events + 1
    assert found["totals"]["stream_events"] == events
    assert found["totals"]["archived_events"] == 0
    for p in found["partitions"]:
        assert p["lag_events"] == rclient.xlen(ops_keys.log(p["partition"])), p
        assert (p["lag_seconds"] > 0) == (p["lag_events"] > 0), p

    projector = ProjectorProcess(ops_env).start(log_dir)
    try:
        deadline = time.monotonic() + 30
        while True:
            found = status_json(ops_env)
            totals = found["totals"]
            # a worker's row lists its partitions from its next heartbeat on (<= 2 s)
            owning = sum(w["partitions"] for w in found["workers"])
            if (totals["lag_events"], totals["pending"], totals["archived_events"],
                    owning) == (0, 0, events, PARTITIONS):
                break
            assert projector.process and projector.process.poll() is None, projector.log()
            assert time.monotonic() < deadline, found
            time.sleep(0.2)
        [worker] = found["workers"]
        assert worker["alive"] is True and worker["partitions"] == PARTITIONS
        assert worker["pid"] == projector.process.pid
        for p in found["partitions"]:
            log: Any = rclient.xrevrange(ops_keys.log(p["partition"]), "+", "-", count=1)
            assert p["stream"] == ops_keys.log(p["partition"])
            assert p["checkpoint"] == (log[0][0].decode() if log else "0"), p
            assert p["lag_events"] == 0 and p["lag_seconds"] == 0 and p["pending"] == 0, p
            assert p["dead_letters"] == (1 if p["partition"] == poisoned else 0), p
            assert p["owner"] == worker["name"], p
        assert sum(p["projected"] for p in found["partitions"]) == events + 1
        # what Redis holds per partition: the thread streams' events, every key's bytes
        assert sum(p["redis_events"] for p in found["partitions"]) == events
        assert all(p["redis_bytes"] > 0 for p in found["partitions"] if p["redis_events"])
        assert totals.pop("redis_bytes") == sum(p["redis_bytes"] for p in found["partitions"])
        assert totals == {"stream_threads": len(threads), "stream_events": events,
                          "archived_events": events, "projected_messages": messages,
                          "projected_threads": len(threads), "dead_letters": 1,
                          "lag_events": 0, "pending": 0}

        human = duologue(ops_env, "status")
        assert human.returncode == 0, human.stderr
        for title in ("Partition logs", "Workers", "Log and projection"):
            assert title in human.stdout
        assert worker["name"] in human.stdout
        every = duologue(ops_env, "status", "--all")
        assert every.returncode == 0, every.stderr
        shown = _partition_rows(human.stdout)
        assert _partition_rows(every.stdout) == list(range(PARTITIONS))
        active = sorted({ops_keys.partition(t) for t in threads})
        assert shown == active
    finally:
        stopped = projector.terminate()
    assert stopped == 0, projector.log()

    # the worker left: no owner, no live worker, the checkpoints stay
    found = status_json(ops_env)
    assert all(p["owner"] is None for p in found["partitions"])
    assert not any(w["alive"] for w in found["workers"])
    assert found["totals"]["lag_events"] == 0
    assert_projection_is_fold(db, rclient, ops_keys, sorted(threads))


def _partition_rows(text: str) -> list[int]:
    """The partition numbers listed in the human status output's first table."""
    table = text.split("Workers")[0]
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if cells and cells[0].isdigit():
            rows.append(int(cells[0]))
    return rows


def test_status_and_verify_on_an_empty_database(ops_env):
    found = status_json(ops_env)
    assert found["workers"] == [] and len(found["partitions"]) == PARTITIONS
    assert found["totals"] == {"stream_threads": 0, "stream_events": 0, "archived_events": 0,
                               "projected_messages": 0, "projected_threads": 0,
                               "dead_letters": 0, "lag_events": 0, "pending": 0,
                               "redis_bytes": 0}
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stderr
    assert "0 threads, 0 events checked; 0 differ" in done.stdout

