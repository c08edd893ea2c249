"""Figures 1 and 2: acked sends/s (closed loop) and latency at a fixed rate (open loop)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from bench import profiling
from bench.common import (
    REDIS_URL,
    percentile,
    rss_kib,
)
from bench.driver import go_all, workers
from bench.harness import counted_runs, scratch
from bench.options import Options
from bench.report import Result, Row
from bench.verify import Check


def _specs(
    opts: Options, port: int, pid: int, rate: float, active: int
) -> list[dict[str, Any]]:
    procs_n = max(1, min(opts.load_procs, opts.pairs))
    base, extra = divmod(opts.pairs, procs_n)
    specs, first = [], 0
    for n in range(procs_n):
        pairs = base + (1 if n < extra else 0)
        specs.append({
            "mode": "chat", "port": port, "first": first, "pairs": pairs, "active_below": active,
            "senders": opts.senders, "window": opts.window, "rate": rate / procs_n,
            "cap": 200_000, "warmup": opts.warmup, "duration": opts.duration, "drain": 20.0,
            "server_pid": pid if n == 0 else None, "redis_url": REDIS_URL if n == 0 else None})
        first += pairs
    return specs


def _with_other(cpu: dict[str, float], more: list[dict[str, Any]]) -> dict[str, float]:
    """Add the CPU of other load workers and what nobody here used (other sessions)."""
    cpu = dict(cpu)
    extra = sum(p["cpu"]["load"] for p in more)
    cpu["load"] = round(cpu["load"] + extra, 3)
    cpu["other"] = round(max(0.0, cpu["other"] - extra), 3)
    return cpu


def _with_unanswered(parts: list[dict[str, Any]], name: str) -> list[float]:
    """All latency samples, sorted, with an infinite one per unanswered send."""
    values = sorted(x for p in parts for x in p[f"{name}_ms"])
    return values + [math.inf] * sum(p[f"{name}_unanswered"] for p in parts)


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    check = Check()
    for part in parts:
        fields = {k: v for k, v in part["check"].items() if k not in ("ok", "complete")}
        check.add(Check(**fields))
    merged = {
        "rate": sum(p["rate"] for p in parts), "sent": sum(p["sent"] for p in parts),
        "acked_in_window": sum(p["acked_in_window"] for p in parts),
        "drain_seconds": max(p["drain_seconds"] for p in parts),
        "retried_unavailable": sum(p["retried_unavailable"] for p in parts),
        "senders": sum(p["senders"] for p in parts),
        "starved_senders": sum(p["starved_senders"] for p in parts),
        "check": check.as_dict(), "cpu": _with_other(parts[0]["cpu"], parts[1:]),
        "load_cpu": [p["cpu"]["load"] for p in parts],
        "error_samples": [e for p in parts for e in p["error_samples"]][:5],
        "retry_samples": [e for p in parts for e in p["retry_samples"]][:5],
        "ack_ms": _with_unanswered(parts, "ack"),
        "delivery_ms": _with_unanswered(parts, "delivery"),
        "ack_unanswered": sum(p["ack_unanswered"] for p in parts),
        "delivery_unanswered": sum(p["delivery_unanswered"] for p in parts),
    }
    return merged


async def chat_run(
    opts: Options, rate: float, active: int | None = None, profile: bool = False
) -> dict[str, Any]:
    """One run on a fresh gateway and prefix; keys deleted and processes stopped after."""
    profile_task = None
    async with scratch(opts, "chat", gateway=True, settings=opts.experiment) as world:
        server = world.server
        specs = _specs(opts, server.port, server.pid, rate,
                       opts.pairs if active is None else active)
        async with workers(specs) as ws:
            await go_all(ws, "ready", 120)
            if profile:
                profile_task = asyncio.create_task(profiling.record(
                    server.pid, min(opts.profile_seconds, opts.duration), opts.warmup + 0.2))
            timeout = opts.warmup + opts.duration + 120
            parts = await asyncio.gather(*(w.result(timeout) for w in ws))
        result = _merge(list(parts))
        result["gateway_rss_kib"] = rss_kib(server.pid)
        result["busy_before"] = world.busy_before
        if profile_task is not None:
            path = await profile_task
            result["profile"] = (profiling.summarize(path).text() if path else
                                 "no profile: py-spy missing (pip install py-spy) or failed")
            if path:
                kept = profiling.keep(path)
                result["profile"] += f"\n\nraw collapsed stacks: {kept}"
        return result


def _tag(opts: Options) -> str:
    return " EXPERIMENT " + ",".join(f"{k}={v}" for k, v in opts.experiment.items()) \
        if opts.experiment else ""


def _describe(run: dict[str, Any]) -> dict[str, Any]:
    slim = {k: v for k, v in run.items() if k not in ("ack_ms", "delivery_ms", "profile")}
    for name in ("ack_ms", "delivery_ms"):
        values = run[name]
        if values:
            slim[name] = {"n": len(values), "p50": percentile(values, 50),
                          "p99": percentile(values, 99), "p99.9": percentile(values, 99.9),
                          "max": values[-1]}
    return slim


async def _runs(
    opts: Options, rate: float, active: int, result: Result, say: Callable[[dict[str, Any]], str]
) -> list[dict[str, Any]]:
    async def one() -> dict[str, Any]:
        return _describe(await chat_run(opts, rate, active)) | {"active_pairs": active}

    return await counted_runs(opts, result, "chat", one, say)


def _say_throughput(run: dict[str, Any]) -> str:
    check = run["check"]
    return (f"{run['senders']} senders, {run['rate']:,.0f} acked sends/s, exactly-once "
            f"ok={check['ok']}, refusals retried={run['retried_unavailable']}, starved "
            f"senders={run['starved_senders']}, cpu={run['cpu']}")


def _cpu_us(run: dict[str, Any]) -> float:
    """Gateway CPU time per acked send; 5,000/s on one core needs <= 200 us."""
    return run["cpu"]["server"] / run["rate"] * 1e6 if run["rate"] else math.nan


async def _series(opts: Options, active: int, result: Result) -> list[dict[str, Any]]:
    runs = await _runs(opts, 0.0, active, result, _say_throughput)
    for n, run in enumerate(runs):
        if not run["check"]["complete"] or run["retried_unavailable"]:
            result.notes.append(f"{run['senders']} senders, run {n + 1}: {run['check']}; "
                                f"refusals retried: {run['retried_unavailable']} "
                                f"{run['retry_samples'][:2]} {run['error_samples'][:2]}")
    return runs


async def throughput(opts: Options) -> Result:
    result = Result()
    both = opts.senders == "both"
    for active in dict.fromkeys((opts.pairs, opts.active_pairs)):
        if not active:
            continue
        runs = await _series(opts, active, result)
        who = f"{active} {'pairs both' if both else 'pairs one side'} sending"
        rates = [r["rate"] if r["check"]["ok"] else math.nan for r in runs]
        result.rows.append(Row("throughput", f"acked sends/s, {opts.pairs} pairs connected, {who}"
                               + _tag(opts), "sends/s", rates, 5000))
        result.rows.append(Row("throughput", f"  gateway CPU per acked send, {who}" + _tag(opts),
                               "us", [_cpu_us(r) for r in runs], 200, higher_is_better=False))
    if opts.profile:
        active = opts.active_pairs or opts.pairs
        run = await chat_run(opts, 0.0, active, profile=True)
        result.notes.append(f"profiled run ({active} pairs sending): {run['rate']:,.0f} sends/s "
                            f"under py-spy (not counted)\n" + str(run.get("profile")))
    return result


def _say_latency(run: dict[str, Any]) -> str:
    return (f"{run['rate']:,.0f} sends/s, ack {run.get('ack_ms')}, delivery "
            f"{run.get('delivery_ms')}, exactly-once ok={run['check']['ok']}, refusals "
            f"retried={run['retried_unavailable']}, cpu={run['cpu']}")


async def latency(opts: Options) -> Result:
    result = Result()
    runs = await _runs(opts, opts.rate, opts.pairs, result, _say_latency)
    label = f"@ {opts.rate:,.0f}/s" + _tag(opts)
    for name, text in (("ack_ms", "ack latency"), ("delivery_ms", "delivery latency")):
        for q, target in (("p50", None), ("p99", 15.0)):
            values = [r[name][q] if name in r else float("nan") for r in runs]
            result.rows.append(Row("latency", f"{text} {q} {label}", "ms", values, target,
                                   higher_is_better=False, digits=2))
    result.rows.append(Row("latency", f"achieved send rate {label}", "sends/s",
                           [r["rate"] for r in runs]))
    result.rows.append(Row("latency", f"  gateway CPU per acked send {label}", "us",
                           [_cpu_us(r) for r in runs]))
    for n, run in enumerate(runs):
        if not run["check"]["complete"] or run["ack_unanswered"] or run["retried_unavailable"]:
            result.notes.append(f"latency run {n + 1}: {run['check']}, "
                                f"refusals retried={run['retried_unavailable']}, sends never "
                                f"acked={run['ack_unanswered']} (counted as infinite latency) "
                                f"{run['retry_samples'][:2]} {run['error_samples'][:2]}")
    return result
