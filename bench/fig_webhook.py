"""Webhook figure (protocol.md section 6, docs/webhooks.md): offline notifications.

``webhook``, two parts per run, each on a database and key prefix of its own:

- latency: ``bench.webhook_receiver`` (uvicorn, answers 204 at once) and one
  ``duologue projector`` with ``DUOLOGUE_WEBHOOK_URL`` pointing at it. The driver appends
  ``MessageSent`` events through ``gateway/append.lua`` (``gateway.store.EventStore``,
  what a gateway does for an acked send) at ``--webhook-rate`` sends/s for
  ``--webhook-duration`` s over ``--webhook-pairs`` pairs whose recipients are offline (no
  presence record). Latency of a send = its first POST's arrival at the receiver minus
  the event's ``ts`` (the Redis clock at the append, its id's ms: the ack is sent right
  after, on the same machine's clock). Sends never delivered within 30 s are counted.
- throughput: the projector figure's backlog (``bench.backlog``, ``--webhook-backlog``
  events over ``--backlog-threads`` threads, 85% of them sends to offline recipients)
  projected by one ``duologue projector`` without webhooks, then with webhooks to the
  receiver (every send enqueued, and POSTed while the backlog is projected); the ratio
  of the two rates is the cost of webhooks to the projection.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
import urllib.request
from dataclasses import replace
from typing import Any

import psycopg
import redis.asyncio as aioredis

from bench.backlog import project_backlog
from bench.harness import (
    HOST,
    REDIS_URL,
    Child,
    CpuMeter,
    Result,
    Row,
    counted_runs,
    free_port,
    percentile,
    projector,
    scratch,
    value,
)
from bench.options import Options
from domain.ids import ms_of, thread_id
from gateway.store import EventStore
from schemas.events import MessageSent

TARGET_P99_MS = 1000.0  # event ts -> POST arrival
TARGET_RATIO = 0.9  # projector events/s with webhooks / without
SECRET = "bench-webhook-secret"


def receiver() -> Child:
    return Child([sys.executable, "-m", "bench.webhook_receiver"], {}, port=free_port())


def webhook_env(server: Child) -> dict[str, str]:
    return {"DUOLOGUE_WEBHOOK_URL": f"http://{HOST}:{server.port}/hook",
            "DUOLOGUE_WEBHOOK_SECRET": SECRET}


def arrivals(server: Child) -> dict[str, list[float]]:
    with urllib.request.urlopen(f"http://{HOST}:{server.port}/arrivals", timeout=30) as r:
        found: dict[str, list[float]] = json.loads(r.read())
        return found


# ---------------------------------------------------------------- latency


async def _drive(opts: Options, store: EventStore, prefix: str) -> list[str]:
    """Append sends at ``opts.webhook_rate``/s for ``opts.webhook_duration`` s, in ticks of
    10 ms; the delivery ids of those appended."""
    pairs = [(f"wa{n}-{prefix[-6:]}", f"wb{n}-{prefix[-6:]}") for n in range(opts.webhook_pairs)]
    sent: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    count = int(opts.webhook_rate * opts.webhook_duration)

    async def one(n: int) -> None:
        alice, bob = pairs[n % len(pairs)]
        sender = alice if n % 2 == 0 else bob
        thread = thread_id(alice, bob)
        cmid = f"w{n}"
        appended = await store.append(thread, sender, cmid, MessageSent(
            sender=sender, body=f"message {n} for you", client_msg_id=cmid))
        sent.append(f"{thread}/{appended.id}")

    started = time.perf_counter()
    for n in range(count):
        due = started + n / opts.webhook_rate
        delay = due - time.perf_counter()
        if delay > 0.01:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return sent


async def latency_run(opts: Options) -> dict[str, Any]:
    async with scratch(opts, "hook", database=True) as world:
        server = receiver()
        child = projector(world.prefix, world.database_url, 1, webhook_env(server))
        client = aioredis.Redis.from_url(REDIS_URL)
        try:
            await asyncio.to_thread(server.start)
            await asyncio.to_thread(child.start)
            await _owning(world.database_url, 64, child)
            await _sending(world.database_url, child)
            meter = CpuMeter({"projector": child.pid, "receiver": server.pid},
                             redis_url=REDIS_URL, postgres=True, me="driver")
            cpu0, t0 = meter.sample(), time.perf_counter()
            sent = await _drive(opts, EventStore(client, world.keys, 86400), world.prefix)
            drive_seconds = time.perf_counter() - t0
            cpu1 = meter.sample()
            meter.close()
            deadline = time.perf_counter() + 30
            found = arrivals(server)
            while time.perf_counter() < deadline and not all(d in found for d in sent):
                await asyncio.sleep(0.2)
                found = arrivals(server)
        finally:
            await client.aclose()
            await asyncio.to_thread(child.stop)
            await asyncio.to_thread(server.stop)
    late = sorted((min(found[d]) - ms_of(d.rsplit("/", 1)[1]) / 1000) * 1000
                  for d in sent if d in found)
    cpu = {name: round((cpu1[name] - cpu0[name]) / drive_seconds, 3)
           for name in cpu0 if name in cpu1}
    return {"sent": len(sent), "rate": len(sent) / drive_seconds,
            "delivered": len(late), "missing": len(sent) - len(late),
            "posts": sum(len(found.get(d, [])) for d in sent),
            **{q: percentile(late, float(q[1:])) if late else math.nan
               for q in ("p50", "p90", "p99")},
            "max": late[-1] if late else math.nan, "cpu": cpu,
            "busy_before": world.busy_before}


async def _owning(url: str, partitions: int, child: Child) -> None:
    """Until the projector has taken every partition (its checkpoints exist)."""
    deadline = time.perf_counter() + 30
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(
                "SELECT count(*) FROM projector_checkpoints")).fetchone()
            if row and row[0] >= partitions:
                return
            if time.perf_counter() > deadline or not child.alive():
                raise RuntimeError(f"the projector did not take the partitions:\n"
                                   f"{child.log_tail()}")
            await asyncio.sleep(0.1)


async def _sending(url: str, child: Child) -> None:
    """Until the projector's webhook sender listens (its process is up): the latency is
    measured in steady state, not behind the sender's start."""
    deadline = time.perf_counter() + 30
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            row = await (await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'duologue-webhook-listen'")).fetchone()
            if row and row[0] >= 1:
                return
            if time.perf_counter() > deadline or not child.alive():
                raise RuntimeError(f"the webhook sender did not start:\n{child.log_tail()}")
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------- throughput


async def throughput_run(opts: Options) -> dict[str, Any]:
    """The same backlog projected without, then with webhooks (the receiver up)."""
    sized = replace(opts, backlog=opts.webhook_backlog)
    without = await project_backlog(sized, 1)
    server = receiver()
    try:
        await asyncio.to_thread(server.start)
        with_hooks = await project_backlog(sized, 1, webhook_env(server))
        posted = len(arrivals(server))
    finally:
        await asyncio.to_thread(server.stop)
    ok = without["check"]["ok"] and with_hooks["check"]["ok"]
    # a backlog committed before the first poll has no rate after it (--smoke): wall rates
    key = "rate" if all(r["rate"] > 0 for r in (without, with_hooks)) else "wall_rate"
    return {"without": without[key], "with": with_hooks[key],
            "ratio": with_hooks[key] / without[key], "rate_of": key, "posted_meanwhile": posted,
            "ok": ok, "cpu": with_hooks["cpu"], "cpu_without": without["cpu"]}


# ---------------------------------------------------------------- the figure


def _say_latency(run: dict[str, Any]) -> str:
    return (f"{run['sent']:,} sends at {run['rate']:,.0f}/s, ts->POST p50 {run['p50']:.1f} ms, "
            f"p99 {run['p99']:.1f} ms, max {run['max']:.1f} ms, missing {run['missing']}, "
            f"POSTs {run['posts']:,}, cpu={run['cpu']}")


def _say_throughput(run: dict[str, Any]) -> str:
    return (f"projector {run['without']:,.0f} events/s without webhooks, {run['with']:,.0f} "
            f"with (x{run['ratio']:.2f}; {run['posted_meanwhile']:,} POSTed meanwhile), "
            f"ok={run['ok']}, cpu with={run['cpu']}")


async def webhook(opts: Options) -> Result:
    result = Result()
    lat = await counted_runs(opts, result, "webhook latency", lambda: latency_run(opts),
                             _say_latency)
    thr = await counted_runs(opts, result, "webhook throughput",
                             lambda: throughput_run(opts), _say_throughput)
    label = f"@ {opts.webhook_rate:,.0f} sends/s to offline recipients"
    result.rows += [
        Row(f"event ts -> webhook POST arrives p50 {label}", "ms",
            [value(r, "p50") for r in lat], lower=True, digits=1),
        Row(f"event ts -> webhook POST arrives p99 {label}", "ms",
            [value(r, "p99") for r in lat], TARGET_P99_MS, lower=True, digits=1),
        Row("  sends never delivered (30 s)", "sends", [value(r, "missing") for r in lat],
            0, lower=True),
        Row("  achieved send rate", "sends/s", [value(r, "rate") for r in lat]),
        Row("  projector CPU (projection + sender)", "cores",
            [value(r, "cpu", "projector") for r in lat], digits=2),
        Row(f"projector events/s with webhooks / without, backlog of "
            f"{opts.webhook_backlog:,}", "x", [value(r, "ratio", ok=r.get("ok")) for r in thr],
            TARGET_RATIO, digits=2),
        Row("  projector events/s without webhooks", "events/s",
            [value(r, "without") for r in thr]),
        Row("  projector events/s with webhooks", "events/s", [value(r, "with") for r in thr]),
    ]
    for n, run in enumerate(lat):
        if run.get("missing"):
            result.notes.append(f"latency run {n + 1}: {run['missing']} sends never "
                                f"delivered within 30 s")
    return result
