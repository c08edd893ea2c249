"""Presence (protocol.md section 5, docs/presence.md): what watching costs the chat, and
presence under connect/disconnect churn.

- ``presence_sends``: acked sends/s (closed loop, as ``throughput``) with every peer of
  the ``pairs`` watching its partner, beside the same run without watches; the threads
  exist before the peers connect, so every watch is of a visible user. Target: >= 0.9x.
- ``presence_churn``: ``churn_users`` users, each watched by one watcher socket, their
  sockets opened and closed round robin at ``churn_rate`` changes/s for
  ``churn_duration`` s: the p99 of each change's latency to its watcher's presence frame
  (target <= 2 s), and the gateway's VmRSS after the churn stopped (every churned socket
  closed, 2 s settled) minus before it: no growth. The churn runs twice; "before" is read
  after the first round (a warm-up: first-use allocations and allocator pools), "after"
  after the second, so what grows is what each round leaves behind.
"""

from __future__ import annotations

import asyncio
import math
from functools import partial
from typing import Any

import redis

from adapters.record import Keys
from bench.backlog import append_all
from bench.fig_chat import chat_run
from bench.harness import (
    REDIS_URL,
    Result,
    Row,
    counted_runs,
    loads,
    percentile,
    rss_kib,
    scratch,
    value,
)
from bench.options import Options
from gateway.store import append_call
from schemas.events import MessageSent

SETTLE = 2.0  # seconds before each VmRSS reading


def make_threads(pairs: list[tuple[str, str]], prefix: str) -> None:
    """One message from the first user of each pair to the second: their thread exists."""
    keys = Keys(prefix, 64)
    calls = []
    for a, b in pairs:
        thread = "dm:" + ":".join(sorted((a, b), key=str.encode))
        calls.append(append_call(keys, 86400, thread, a, f"pre-{a}",
                                 MessageSent(sender=a, body="hi", client_msg_id=f"pre-{a}")))
    client = redis.Redis.from_url(REDIS_URL)
    try:
        for start in range(0, len(calls), 500):
            append_all(client, calls[start:start + 500])
    finally:
        client.close()


def chat_pairs(n: int) -> list[tuple[str, str]]:
    return [(f"u{i:04d}a", f"u{i:04d}b") for i in range(n)]  # bench.chatload's users


async def presence_sends(opts: Options) -> Result:
    result = Result()
    prepare = partial(make_threads, chat_pairs(opts.pairs))
    series = {}
    for watch in (False, True):
        series[watch] = await counted_runs(
            opts, result, "chat" + (" with watches" if watch else ""),
            partial(chat_run, opts, 0.0, opts.pairs, watch=watch, prepare=prepare),
            lambda r: (f"{r['rate']:,.0f} acked sends/s, exactly-once ok={r['check']['ok']}, "
                       f"cpu={r['cpu']}"))
    rates = {w: [value(r, "rate", ok=r.get("check", {}).get("ok")) for r in runs]
             for w, runs in series.items()}
    plain = Row("", "", rates[False]).median
    result.rows += [
        Row(f"acked sends/s, {opts.pairs} pairs, no watches", "sends/s", rates[False]),
        Row(f"acked sends/s, {opts.pairs} pairs, each peer watching its partner", "sends/s",
            rates[True]),
        Row("  with watches / without (median of the runs without)", "x",
            [r / plain if plain else math.nan for r in rates[True]], 0.9, digits=2)]
    return result


async def churn_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "presence", gateway=True, settings=opts.experiment) as world:
        pairs = [(f"w{i:05d}", f"c{i:05d}") for i in range(opts.churn_users)]
        await asyncio.to_thread(make_threads, pairs, world.prefix)
        pid = world.server.pid
        spec = {"mode": "presence_churn", "port": world.server.port,
                "users": opts.churn_users, "rate": opts.churn_rate,
                "duration": opts.churn_duration}
        async with loads([spec]) as (worker,):
            await worker.expect("ready", 120)
            await worker.say("go")
            await worker.expect("churned", opts.churn_duration + 120)  # the warm-up round
            await asyncio.sleep(SETTLE)
            before = rss_kib(pid)
            await worker.say("go")
            await worker.expect("churned", opts.churn_duration + 120)
            await asyncio.sleep(SETTLE)
            after = rss_kib(pid)
            await worker.say("go")
            run = await worker.result(60)
    samples = run.pop("latency_ms") + [math.inf] * run["unanswered"]
    samples.sort()
    return run | {"rss_before_kib": before, "rss_after_kib": after,
                  "rss_growth_kib": after - before, "answered": len(samples),
                  "p50_ms": percentile(samples, 50), "p99_ms": percentile(samples, 99)}


async def presence_churn(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "presence churn", partial(churn_run, opts),
        lambda r: (f"{r['rate']:,.0f} changes/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                   f"unanswered {r['unanswered']}, RSS {r['rss_before_kib']} -> "
                   f"{r['rss_after_kib']} KiB"))
    label = f"{opts.churn_users} watched users, {opts.churn_rate:,.0f} socket changes/s"
    result.rows += [
        Row(f"presence change to watcher p99, {label}", "ms",
            [value(r, "p99_ms") for r in runs], 2000, lower=True),
        Row(f"  gateway RSS after the churn minus before, {label}", "KiB",
            [value(r, "rss_growth_kib") for r in runs], 1024, lower=True)]
    return result
