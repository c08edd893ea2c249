"""``duologue rebuild`` of 1,000,000 events over 10,000 threads (target <= 60 s).

The archive is seeded once per invocation with COPY (valid histories: sends, edits and
deletes by their senders, forward read receipts), then the command runs ``--runs``
times against it as an operator would (a subprocess, wall time from start to exit).
After each run the swapped-in tables are checked against what was seeded.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from bench.harness import Result, Row, counted_runs, run_duologue, scratch, value, wait_quiet
from bench.options import Options
from domain.ids import sort_key
from schemas.events import MessageDeleted, MessageEdited, MessageSent, ReadUpTo, encode_event

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def seed(url: str, events: int, threads: int) -> dict[str, int]:
    """COPY a consistent archive; return what the projection must hold."""
    rng = random.Random(7)
    sent: list[list[tuple[str, str]]] = [[] for _ in range(threads)]  # (id, sender) alive
    messages = deleted = 0
    base = 1_700_000_000_000
    with psycopg.connect(url) as conn, conn.cursor() as cur, cur.copy(
            "COPY events (thread, id, key, kind, payload, ts) FROM STDIN") as copy:
        for n in range(events):
            t = n % threads
            a, b = f"a{t}", f"b{t}"
            thread = f"dm:{a}:{b}"
            event_id = f"{base + n}-0"
            roll = rng.random()
            alive = sent[t]
            if roll < 0.04 and alive:
                target, sender = alive[rng.randrange(len(alive))]
                event: Any = MessageEdited(sender=sender, target=target, body=f"edited {n}",
                                           client_msg_id=f"e{n}")
            elif roll < 0.07 and alive:
                target, sender = alive.pop(rng.randrange(len(alive)))
                event = MessageDeleted(sender=sender, target=target, client_msg_id=f"d{n}")
                deleted += 1
            elif roll < 0.10 and alive:
                event = ReadUpTo(reader=rng.choice((a, b)), up_to=alive[-1][0])
            else:
                sender = rng.choice((a, b))
                event = MessageSent(sender=sender, body=f"message {n} " + "x" * 40,
                                    client_msg_id=f"m{n}")
                alive.append((event_id, sender))
                messages += 1
            copy.write_row((thread, event_id, sort_key(event_id), type(event).__name__,
                            encode_event(event).decode(),
                            EPOCH + timedelta(milliseconds=base + n)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE events")
    return {"threads": threads, "messages": messages, "deleted": deleted}


def check(url: str, expected: dict[str, int]) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM threads), (SELECT count(*) FROM messages), "
            "(SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL)").fetchone()
    got = {"threads": row[0], "messages": row[1], "deleted": row[2]} if row else {}
    if got != expected:
        raise RuntimeError(f"rebuilt tables hold {got}, expected {expected}")


async def rebuild(opts: Options) -> Result:
    result = Result()
    async with scratch(opts, "rebuild", database=True) as world:
        started = time.perf_counter()
        expected = await asyncio.to_thread(seed, world.database_url, opts.rebuild_events,
                                           opts.rebuild_threads)
        print(f"  seeded {opts.rebuild_events:,} events / {opts.rebuild_threads:,} threads in "
              f"{time.perf_counter() - started:.1f} s", flush=True)

        async def one() -> dict[str, Any]:
            busy_before = await wait_quiet(opts.quiet_wait)
            seconds = await asyncio.to_thread(run_duologue, ["rebuild"],
                                              {"DATABASE_URL": world.database_url})
            await asyncio.to_thread(check, world.database_url, expected)
            return {"seconds": seconds, "busy_before": busy_before, **expected}

        runs = await counted_runs(opts, result, "rebuild", one,
                                  lambda r: f"{r['seconds']:.1f} s")
    result.rows.append(Row(
        f"duologue rebuild, {opts.rebuild_events:,} events / {opts.rebuild_threads:,} threads "
        "(wall, process start included)", "s", [value(r, "seconds") for r in runs], 60.0,
        lower=True, digits=1))
    return result
