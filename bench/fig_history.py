"""History figure: ``GET /v1/threads/{thread}/messages`` latency under a steady request rate.

``history_read``: one thread of ``--history-messages`` messages is written straight
into ``messages`` and ``threads`` with COPY (as the projector would leave them), the
tables are ANALYZEd, a gateway with ``DATABASE_URL`` starts, and a load worker
(``bench.httpload``) sends ``--history-rate`` GET/s for ``--history-duration`` s with
``limit=50`` and a random ``before`` cursor (always at least 50 messages below it, so
every page is full), over keep-alive connections, open loop.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench import pg, procs
from bench.common import percentile
from bench.driver import go_all, workers
from bench.harness import counted_runs, scratch, value
from bench.options import Options
from bench.report import Result, Row
from domain.ids import ms_of, sort_key

TARGET_P99 = 10.0  # ms
LIMIT = 50
A, B = "hist0a", "hist0b"
THREAD = f"dm:{A}:{B}"


def seed(url: str, messages: int) -> list[str]:
    """``messages`` messages of THREAD (a few edited or deleted), newest last; their ids."""
    rng = random.Random(3)
    base = 1_764_000_000_000
    ids: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY messages (thread, id, key, sender, body, sent_at, edited_at, "
                          "deleted_at) FROM STDIN") as copy:
                for n in range(messages):
                    ms, event_id = base + n * 7, f"{base + n * 7}-0"
                    ids.append(event_id)
                    at = datetime.fromtimestamp(ms / 1000, UTC)
                    roll = rng.random()
                    edited = at if roll < 0.05 else None
                    deleted = at if 0.05 <= roll < 0.08 else None
                    body = None if deleted else f"history message {n}: the quick brown fox"
                    copy.write_row((THREAD, event_id, sort_key(event_id), A if n % 2 else B,
                                    body, at, edited, deleted))
            last = ids[-1]
            cur.execute(
                "INSERT INTO threads (thread, user_a, user_b, last_id, last_key, first_at, "
                "last_at, events) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (THREAD, A, B, last, sort_key(last), datetime.fromtimestamp(base / 1000, UTC),
                 datetime.fromtimestamp(ms_of(last) / 1000, UTC), messages))
        conn.execute("ANALYZE messages")
        conn.execute("ANALYZE threads")
    return ids


async def history_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "hist", database=True) as world:
        url, busy_before = world.database_url, world.busy_before
        ids = await asyncio.to_thread(seed, url, opts.history_messages)
        server = procs.gateway(world.prefix, database_url=url)
        world.gateway = server  # stopped with the rest
        await asyncio.to_thread(server.start)
        rng = random.Random(5)
        paths = [f"/v1/threads/{THREAD}/messages?limit={LIMIT}&before={rng.choice(ids[LIMIT:])}"
                 for _ in range(5000)]
        spec = {"mode": "http_get", "port": server.port, "user": A, "paths": paths,
                "rate": opts.history_rate, "limit": LIMIT, "connections": 16,
                "warmup": opts.warmup, "duration": opts.history_duration,
                "server_pid": server.pid}
        async def postgres_cores() -> float:
            await asyncio.sleep(opts.warmup)
            a, t = pg.server_cpu(), time.perf_counter()
            await asyncio.sleep(opts.history_duration)
            return (pg.server_cpu() - a) / (time.perf_counter() - t)

        async with workers([spec]) as ws:
            await go_all(ws, "ready", 60)
            postgres, got = await asyncio.gather(
                postgres_cores(), ws[0].result(opts.warmup + opts.history_duration + 60))
        run: dict[str, Any] = got
        run["cpu"]["postgres"] = round(postgres, 3)
        run["cpu"]["other"] = round(max(0.0, run["cpu"]["other"] - postgres), 3)
        values = run.pop("ms") + [math.inf] * max(0, run["unanswered"])
        values.sort()
        run.update({"p50": percentile(values, 50), "p99": percentile(values, 99),
                    "p99.9": percentile(values, 99.9), "max": values[-1] if values else math.nan,
                    "requests": len(values), "busy_before": busy_before})
        return run


def _say(run: dict[str, Any]) -> str:
    return (f"{run['requests']:,} GETs at {run['rate']:,.0f}/s, p50 {run['p50']:.2f} ms, "
            f"p99 {run['p99']:.2f} ms, max {run['max']:.1f} ms, errors {run['errors']} "
            f"{run['error_samples'][:1]}, short pages {run['short_pages']}, connections "
            f"{run['connections_opened']} (closed keep-alive retried: {run['stale_retried']}), "
            f"cpu={run['cpu']}")


async def history_read(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(opts, result, "history_read", lambda: history_run(opts), _say)
    label = (f"GET .../messages?limit={LIMIT}&before=<random>, {opts.history_messages:,}-message "
             f"thread, @ {opts.history_rate:g}/s")
    ok = [not r.get("errors") and not r.get("short_pages") for r in runs]
    result.rows += [
        Row("history_read", f"{label} p50", "ms",
            [value(r, "p50") if good else math.nan for r, good in zip(runs, ok, strict=True)],
            higher_is_better=False, digits=2),
        Row("history_read", f"{label} p99", "ms",
            [value(r, "p99") if good else math.nan for r, good in zip(runs, ok, strict=True)],
            TARGET_P99, higher_is_better=False, digits=2),
        Row("history_read", "  gateway CPU", "cores", [value(r, "cpu", "server") for r in runs],
            digits=2),
        Row("history_read", "  Postgres CPU", "cores",
            [value(r, "cpu", "postgres") for r in runs], digits=2),
    ]
    for n, run in enumerate(runs):
        if run.get("errors") or run.get("short_pages"):
            result.notes.append(f"history_read run {n + 1}: {run.get('errors')} errors "
                                f"{run.get('error_samples')}, {run.get('short_pages')} pages "
                                f"shorter than {LIMIT}")
    return result
