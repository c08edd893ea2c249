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
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.harness import Result, Row, counted_runs, gateway_child, load, percentile, scratch, value
from bench.options import Options
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
        ids = await asyncio.to_thread(seed, world.database_url, opts.history_messages)
        world.gateway = server = gateway_child(world.prefix, database_url=world.database_url)
        await asyncio.to_thread(server.start)  # after the seed: stopped with the rest
        rng = random.Random(5)
        paths = [f"/v1/threads/{THREAD}/messages?limit={LIMIT}&before={rng.choice(ids[LIMIT:])}"
                 for _ in range(5000)]
        run = await load({"mode": "http_get", "port": server.port, "user": A, "paths": paths,
                          "rate": opts.history_rate, "limit": LIMIT, "connections": 16,
                          "warmup": opts.warmup, "duration": opts.history_duration,
                          "server_pid": server.pid, "postgres": True},
                         opts.warmup + opts.history_duration + 60)
    values = sorted(run.pop("ms") + [math.inf] * max(0, run["unanswered"]))
    return run | {"p50": percentile(values, 50), "p99": percentile(values, 99),
                  "p99.9": percentile(values, 99.9), "max": values[-1] if values else math.nan,
                  "requests": len(values), "busy_before": world.busy_before}


async def history_read(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "history_read", lambda: history_run(opts),
        lambda r: (f"{r['requests']:,} GETs at {r['rate']:,.0f}/s, p50 {r['p50']:.2f} ms, "
                   f"p99 {r['p99']:.2f} ms, max {r['max']:.1f} ms, errors {r['errors']} "
                   f"{r['error_samples'][:1]}, short pages {r['short_pages']}, connections "
                   f"{r['connections_opened']} (closed keep-alive retried: "
                   f"{r['stale_retried']}), cpu={r['cpu']}"))
    label = (f"GET .../messages?limit={LIMIT}&before=<random>, {opts.history_messages:,}-message "
             f"thread, @ {opts.history_rate:g}/s")
    ok = [not r.get("errors") and not r.get("short_pages") for r in runs]
    result.rows += [
        Row(f"{label} p50", "ms", [value(r, "p50", ok=g) for r, g in zip(runs, ok, strict=True)],
            lower=True, digits=2),
        Row(f"{label} p99", "ms", [value(r, "p99", ok=g) for r, g in zip(runs, ok, strict=True)],
            TARGET_P99, lower=True, digits=2),
        Row("  gateway CPU", "cores", [value(r, "cpu", "server") for r in runs], digits=2),
        Row("  Postgres CPU", "cores", [value(r, "cpu", "postgres") for r in runs], digits=2),
    ]
    for n, run in enumerate(runs):
        if run.get("errors") or run.get("short_pages"):
            result.notes.append(f"history_read run {n + 1}: {run.get('errors')} errors "
                                f"{run.get('error_samples')}, {run.get('short_pages')} pages "
                                f"shorter than {LIMIT}")
    return result
