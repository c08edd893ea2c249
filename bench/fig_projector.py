"""Projector figures: sustained throughput from a backlog, and end-to-end freshness.

``projector``: a backlog of ``--backlog`` events over ``--backlog-threads`` threads is
appended through ``gateway/append.lua`` (``bench.backlog``), then ``duologue
projector`` (one worker, then ``--workers 2``) starts and the sum of
``projector_checkpoints.events`` is polled every 50 ms until it reaches the backlog.
The rate counts from the first poll that sees a committed batch to the poll that sees
the last one; the wall time counts from the process start.

``freshness``: a gateway (with ``DATABASE_URL``) and a projector run; the chat load
sends ``--fresh-rate`` sends/s over 100 pairs for ``--fresh-duration`` s and records
each ack's time and event id; a poller reads ``threads.last_key`` (one row per thread,
updated in the same transaction as the thread's ``messages`` rows) every
``--poll-ms`` ms from a connection of its own. Freshness of an ack = the end of the
first poll that shows the thread at or beyond the acked id, minus the ack's arrival.

Each run has its own database (``bench_<figure>_<random>``, dropped after) and Redis
key prefix (deleted after).
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import math
import time
from collections import defaultdict
from typing import Any

import psycopg

from bench.backlog import project_backlog
from bench.harness import (
    REDIS_URL,
    CpuMeter,
    Result,
    Row,
    Scratch,
    counted_runs,
    cpu_of,
    go_all,
    loads,
    percentile,
    projector,
    scratch,
    value,
)
from bench.options import Options
from domain.ids import sort_key

TARGET_RATE = 25_000.0  # events/s, one worker
TARGET_FRESH_P99 = 250.0  # ms


# ---------------------------------------------------------------- 1. throughput


def _say_projector(run: dict[str, Any]) -> str:
    return (f"{run['rate']:,.0f} events/s ({run['events']:,} in {run['seconds']} s after the "
            f"first commit at {run['first_commit_after']} s; wall {run['wall_seconds']} s = "
            f"{run['wall_rate']:,.0f}/s), ok={run['check']['ok']}, cpu={run['cpu']}, "
            f"fill {run['backlog']['fill_seconds']} s")


async def projector_rate(opts: Options) -> Result:
    result = Result()
    for workers_n in (1, 2):
        who = "1 worker" if workers_n == 1 else f"--workers {workers_n}"
        runs = await counted_runs(opts, result, f"projector, {who}",
                                  functools.partial(project_backlog, opts, workers_n),
                                  _say_projector)
        for n, run in enumerate(runs):
            if "check" in run and not run["check"]["ok"]:
                result.notes.append(f"{who} run {n + 1}: projection differs from the "
                                    f"backlog: {run['check']['differs']}")
        label = f"{opts.backlog:,} events / {opts.backlog_threads:,} threads"
        result.rows += [
            Row(f"projector events/s, {who}, backlog of {label}", "events/s",
                [value(r, "rate", ok=r.get("check", {}).get("ok")) for r in runs], TARGET_RATE),
            Row(f"  wall time incl. process start, {who}", "s",
                [value(r, "wall_seconds") for r in runs], lower=True, digits=2),
            Row(f"  projector CPU, {who}", "cores", [value(r, "cpu", "projector") for r in runs],
                digits=2),
            Row(f"  Postgres CPU, {who}", "cores", [value(r, "cpu", "postgres") for r in runs],
                digits=2),
            Row(f"  Postgres WAL per event, {who}", "B",
                [value(r, "wal_bytes_per_event") for r in runs], lower=True),
            Row(f"  database growth per event, {who}", "B",
                [value(r, "db_bytes_per_event") for r in runs], lower=True),
        ]
    return result


# ---------------------------------------------------------------- 2. freshness


class Poller:
    """``SELECT thread, last_key FROM threads`` every ``period`` s; keeps, per thread,
    each new last_key with the time the poll that first showed it returned."""

    def __init__(self, url: str, period: float) -> None:
        self.url, self.period = url, period
        self.seen: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.polls = 0
        self.query_seconds = 0.0
        self.backend_pid = 0
        self.running = True
        self.started = self.stopped = 0.0

    async def run(self) -> None:
        async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
            cur = await conn.execute("SELECT pg_backend_pid()")
            row = await cur.fetchone()
            self.backend_pid = int(row[0]) if row else 0
            last: dict[str, int] = {}
            self.started = time.perf_counter()
            while self.running:
                start = time.perf_counter()
                cur = await conn.execute("SELECT thread, last_key::text FROM threads")
                rows = await cur.fetchall()
                now = time.perf_counter()
                self.polls += 1
                self.query_seconds += now - start
                for thread, key_text in rows:
                    key = int(key_text)
                    if last.get(thread) != key:
                        last[thread] = key
                        self.seen[thread].append((key, now))
                await asyncio.sleep(max(0.0, self.period - (time.perf_counter() - start)))
            self.stopped = time.perf_counter()

    def stats(self, backend_cpu: float) -> dict[str, float]:
        span = max(1e-9, self.stopped - self.started)
        return {"polls": self.polls, "per_s": round(self.polls / span, 1),
                "mean_query_ms": round(self.query_seconds / max(1, self.polls) * 1000, 3),
                "backend_cores": round(backend_cpu / span, 3)}

    def visible_at(self, thread: str, key: int) -> float:
        """When the first poll showing ``thread`` at or beyond ``key`` returned (inf: never)."""
        seen = self.seen.get(thread, [])
        i = bisect.bisect_left(seen, key, key=lambda s: s[0])
        return seen[i][1] if i < len(seen) else math.inf

    def covers(self, acks: list[tuple[float, str, str]]) -> bool:
        return all(math.isfinite(self.visible_at(t, sort_key(i))) for _, t, i in acks)


async def _row(url: str, sql: str, *params: Any) -> tuple[Any, ...]:
    """The one row of a query, on a connection of its own; stats snapshots are fresh."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        row = await (await conn.execute(sql.encode(), params)).fetchone()
    return tuple(row or ())


COMMITS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
TABLE_STATS = ("SELECT pg_total_relation_size(relid), n_live_tup, n_dead_tup, n_tup_upd, "
               "n_tup_hot_upd, autovacuum_count FROM pg_stat_user_tables WHERE relname = %s")


def _series(timed: list[tuple[float, float]]) -> list[list[float]]:
    """Per second of the window: [second, acks, p50, p99, max] of ack -> visible (ms)."""
    by_second: dict[int, list[float]] = defaultdict(list)
    for at, ms in timed:  # in the order the acks came
        by_second[int(at - timed[0][0])].append(ms)
    out = []
    for second, values in sorted(by_second.items()):
        values.sort()
        out.append([second, len(values), round(percentile(values, 50), 1),
                    round(percentile(values, 99), 1), round(values[-1], 1)])
    return out


async def freshness_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "fresh", database=True, gateway=True) as world:
        return await _freshness(opts, world)


async def _freshness(opts: Options, world: Scratch) -> dict[str, Any]:
    url, server = world.database_url, world.server
    child = projector(world.prefix, url, 1)
    poller = Poller(url, opts.poll_ms / 1000)
    poll_task: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(child.start)
        deadline = time.perf_counter() + 30
        while (await _row(url, "SELECT count(*) FROM projector_checkpoints"))[0] < 64:
            if time.perf_counter() > deadline:
                raise RuntimeError("the projector did not take the 64 partitions in 30 s")
            await asyncio.sleep(0.1)
        commits0 = (await _row(url, COMMITS))[0]
        poll_task = asyncio.create_task(poller.run())
        spec = {"mode": "chat", "port": server.port, "first": 0, "pairs": opts.pairs,
                "active_below": opts.pairs, "senders": "both", "window": opts.window,
                "rate": opts.fresh_rate, "cap": 200_000, "warmup": opts.warmup,
                "duration": opts.fresh_duration, "drain": 20.0, "server_pid": server.pid,
                "redis_url": None, "record_acks": True}
        meter = CpuMeter({"projector": child.pid, "gateway": server.pid}, redis_url=REDIS_URL,
                         postgres=True, me="driver")

        async with loads([spec]) as ws:
            await go_all(ws, "ready", 120)
            start = time.perf_counter() + opts.warmup
            window, run = await asyncio.gather(
                meter.window(start, start + opts.fresh_duration),
                ws[0].result(opts.warmup + opts.fresh_duration + 120))
        raw = run.pop("acks")
        acks = [(float(a[0]), str(a[1]), str(a[2])) for a in raw]
        deadline = time.perf_counter() + 30
        while not poller.covers(acks) and time.perf_counter() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.1)
        backend0 = cpu_of(poller.backend_pid)  # the poller's own Postgres backend
        poller.running = False
        await asyncio.wait_for(poll_task, 5)
        # stats are flushed by each backend at most every 500 ms (up to 1 s later)
        await asyncio.sleep(1.0)
        commits = (await _row(url, COMMITS))[0] - commits0 - poller.polls - 2  # 2: our reads
        timed = [(at, (poller.visible_at(t, sort_key(i)) - at) * 1000) for at, t, i in acks]
        latencies = sorted(ms for _, ms in timed)
        from_send = sorted(ms + (at - float(a[3])) * 1000
                           for (at, ms), a in zip(timed, raw, strict=True))
        table = await _row(url, TABLE_STATS, "threads")
        names = ("bytes", "live", "dead", "updates", "hot_updates", "autovacuums")
        return {
            "acks": len(acks), "rate": run["rate"], "check_ok": run["check"]["ok"],
            **{q: percentile(latencies, float(q[1:])) for q in ("p50", "p90", "p99", "p99.9")},
            "min": latencies[0] if latencies else math.nan,
            "max": latencies[-1] if latencies else math.nan,
            "send_p50": percentile(from_send, 50), "send_p99": percentile(from_send, 99),
            "never_visible": sum(1 for v in latencies if math.isinf(v)),
            "ack_p99_ms": percentile(run["ack_ms"], 99),
            "cpu": window.cpu(extra=run["cpu"]["load"]) | {"load": run["cpu"]["load"]},
            "poll": poller.stats(backend0),
            "projector_commits": commits,  # about: heartbeats and checks are counted too
            "events_per_commit": round(run["sent"] / commits, 1) if commits > 0 else math.nan,
            "series": _series(timed), "threads_table": dict(zip(names, table, strict=False)),
            "busy_before": world.busy_before,
        }
    finally:
        poller.running = False
        if poll_task is not None and not poll_task.done():
            poll_task.cancel()
        await asyncio.to_thread(child.stop)


def _say_freshness(run: dict[str, Any]) -> str:
    return (f"{run['acks']:,} acks at {run['rate']:,.0f}/s, ack->row p50 {run['p50']:.1f} ms, "
            f"p99 {run['p99']:.1f} ms, max {run['max']:.1f} ms (send->row p50 "
            f"{run['send_p50']:.1f}, p99 {run['send_p99']:.1f} ms), never visible "
            f"{run['never_visible']}, exactly-once ok={run['check_ok']}, poll {run['poll']}, "
            f"cpu={run['cpu']}")


async def freshness(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(opts, result, "freshness", lambda: freshness_run(opts),
                              _say_freshness)
    label = f"@ {opts.fresh_rate:,.0f} sends/s, {opts.pairs} pairs, poll {opts.poll_ms:g} ms"
    result.rows += [
        Row(f"ack -> row visible p50 {label}", "ms", [value(r, "p50") for r in runs],
            lower=True, digits=1),
        Row(f"ack -> row visible p99 {label}", "ms", [value(r, "p99") for r in runs],
            TARGET_FRESH_P99, lower=True, digits=1),
        Row("  send -> row visible p99 (includes the ack's own latency)", "ms",
            [value(r, "send_p99") for r in runs], lower=True, digits=1),
        Row("  achieved send rate", "sends/s", [value(r, "rate") for r in runs]),
        Row("  projector CPU", "cores", [value(r, "cpu", "projector") for r in runs], digits=2),
    ]
    for n, run in enumerate(runs):
        if run.get("never_visible") or run.get("check_ok") is False:
            result.notes.append(f"freshness run {n + 1}: {run['never_visible']} acked sends "
                                f"never became visible (counted as infinite); chat check "
                                f"ok={run['check_ok']}")
    return result
