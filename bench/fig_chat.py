"""Figures 1 and 2: acked sends/s (closed loop) and latency at a fixed rate (open loop)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import profiling
from bench.chatload import Check
from bench.harness import (
    DEFAULT_BACKEND,
    Backend,
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


def _specs(
    opts: Options, port: int, pid: int, rate: float, active: int, watch: bool = False,
    backend: Backend = DEFAULT_BACKEND,
) -> list[dict[str, Any]]:
    procs_n = max(1, min(opts.load_procs, opts.pairs))
    base, extra = divmod(opts.pairs, procs_n)
    specs, first = [], 0
    for n in range(procs_n):
        pairs = base + (1 if n < extra else 0)
        specs.append({
            "mode": "chat", "port": port, "first": first, "pairs": pairs, "active_below": active,
            "senders": opts.senders, "window": opts.window, "rate": rate / procs_n,
            "watch": watch,
            "cap": 200_000, "warmup": opts.warmup, "duration": opts.duration, "drain": 20.0,
            "server_pid": pid if n == 0 else None,
            "redis_url": backend.url if n == 0 else None, "redis_pids": backend.pids})
        first += pairs
    return specs


SUMMED = ("rate", "sent", "acked_in_window", "retried_unavailable", "rate_limited", "senders",
          "starved_senders", "ack_unanswered", "delivery_unanswered")


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The load workers' results as one; the first one metered the gateway and Redis."""
    check = Check()
    for part in parts:
        check.add(Check(**{k: v for k, v in part["check"].items()
                           if k not in ("ok", "complete")}))
    cpu = dict(parts[0]["cpu"])
    extra = sum(p["cpu"]["load"] for p in parts[1:])  # the other workers: not "other"
    cpu["load"] = round(cpu["load"] + extra, 3)
    cpu["other"] = round(max(0.0, cpu["other"] - extra), 3)
    merged: dict[str, Any] = {k: sum(p[k] for p in parts) for k in SUMMED}
    for name in ("ack", "delivery"):  # every sample, sorted; an unanswered send: infinite
        merged[f"{name}_ms"] = sorted(x for p in parts for x in p[f"{name}_ms"]) + [
            math.inf] * merged[f"{name}_unanswered"]
    return merged | {
        "drain_seconds": max(p["drain_seconds"] for p in parts), "check": check.as_dict(),
        "cpu": cpu, "load_cpu": [p["cpu"]["load"] for p in parts],
        "error_samples": [e for p in parts for e in p["error_samples"]][:5],
        "retry_samples": [e for p in parts for e in p["retry_samples"]][:5]}


async def chat_run(opts: Options, rate: float, active: int, profile: bool = False,
                   watch: bool = False,
                   prepare: Callable[[str], None] | None = None,
                   beside: Callable[[int], dict[str, Any]] | None = None,
                   backend: Backend = DEFAULT_BACKEND, processes: int = 1) -> dict[str, Any]:
    """One run on a fresh gateway (``processes``: its ``--workers``, on ``backend``) and
    prefix; keys deleted and processes stopped after.
    ``watch``: every peer watches its partner's presence; ``prepare(prefix)`` runs first;
    ``beside(port)``: the spec of a worker run beside the chat (the hostile user), whose
    result is ``run["beside"]``, with the gateway's RSS when every worker was ready and 2 s
    after that worker ``left``."""
    profile_task = None
    async with scratch(opts, "chat", gateway=True, settings=opts.experiment,
                       workers=processes, backend=backend) as world:
        server = world.server
        if prepare is not None:
            await asyncio.to_thread(prepare, world.prefix)
        specs = _specs(opts, server.port, server.pid, rate, active, watch, backend)
        extra = [beside(server.port)] if beside is not None else []
        async with loads(specs + extra) as workers:
            ws, others = workers[:len(specs)], workers[len(specs):]
            await asyncio.gather(*(w.expect("ready", 120) for w in workers))
            rss_ready = rss_kib(server.pid)
            for w in workers:
                await w.say("go")
            if profile:
                profile_task = asyncio.create_task(profiling.record(
                    server.pid, min(opts.profile_seconds, opts.duration), opts.warmup + 0.2))
            timeout = opts.warmup + opts.duration + 120
            beside_run: dict[str, Any] | None = None
            if others:
                await others[0].expect("left", timeout)
                await asyncio.sleep(2.0)
                rss_left = rss_kib(server.pid)
                await others[0].say("go")
                beside_run = (await others[0].result(60)) | {
                    "rss_ready_kib": rss_ready, "rss_left_kib": rss_left}
            run = _merge(list(await asyncio.gather(*(w.result(timeout) for w in ws))))
            if beside_run is not None:
                run["beside"] = beside_run
        run |= {"gateway_rss_kib": rss_kib(server.pid), "busy_before": world.busy_before,
                "active_pairs": active}
    for name in ("ack_ms", "delivery_ms"):  # the samples are summed up in the details
        values = run.pop(name)
        if values:
            run[name] = {"n": len(values), "p50": percentile(values, 50),
                         "p99": percentile(values, 99), "p99.9": percentile(values, 99.9),
                         "max": values[-1]}
    if profile_task is not None:
        path = await profile_task
        run["profile"] = (f"{profiling.summary(path)}\n\nraw collapsed stacks: "
                          f"{profiling.keep(path)}" if path else
                          "no profile: py-spy missing (pip install py-spy) or failed")
    return run


def _tag(opts: Options) -> str:
    return " EXPERIMENT " + ",".join(f"{k}={v}" for k, v in opts.experiment.items()) \
        if opts.experiment else ""


def _cpu_us(run: dict[str, Any]) -> float:
    """Gateway CPU time per acked send; 5,000/s on one core needs <= 200 us."""
    return value(run, "cpu", "server") / run["rate"] * 1e6 if run.get("rate") else math.nan


def _notes(result: Result, what: str, runs: list[dict[str, Any]]) -> None:
    for n, run in enumerate(runs):
        if "check" in run and (not run["check"]["complete"] or run["retried_unavailable"]
                               or run["ack_unanswered"]):
            result.notes.append(
                f"{what} run {n + 1}: {run['check']}; refusals retried: "
                f"{run['retried_unavailable']} {run['retry_samples'][:2]} "
                f"{run['error_samples'][:2]}; sends never acked: {run['ack_unanswered']} "
                f"(infinite latency)")


async def throughput(opts: Options) -> Result:
    result = Result()
    both = "pairs both" if opts.senders == "both" else "pairs one side"
    for active in dict.fromkeys((opts.pairs, opts.active_pairs)):
        if not active:
            continue
        runs = await counted_runs(
            opts, result, "chat", partial(chat_run, opts, 0.0, active),
            lambda r: (f"{r['senders']} senders, {r['rate']:,.0f} acked sends/s, exactly-once "
                       f"ok={r['check']['ok']}, refusals retried={r['retried_unavailable']}, "
                       f"starved senders={r['starved_senders']}, cpu={r['cpu']}"))
        who = f"{active} {both} sending{_tag(opts)}"
        _notes(result, who, runs)
        result.rows += [
            Row(f"acked sends/s, {opts.pairs} pairs connected, {who}", "sends/s",
                [value(r, "rate", ok=r.get("check", {}).get("ok")) for r in runs], 5000),
            Row(f"  gateway CPU per acked send, {who}", "us", [_cpu_us(r) for r in runs], 200,
                lower=True)]
    if opts.profile:
        active = opts.active_pairs or opts.pairs
        run = await chat_run(opts, 0.0, active, profile=True)
        result.notes.append(f"profiled run ({active} pairs sending): {run['rate']:,.0f} sends/s "
                            f"under py-spy (not counted)\n" + str(run.get("profile")))
    return result


async def latency(opts: Options) -> Result:
    result = Result()
    runs = await counted_runs(
        opts, result, "chat", lambda: chat_run(opts, opts.rate, opts.pairs),
        lambda r: (f"{r['rate']:,.0f} sends/s, ack {r.get('ack_ms')}, delivery "
                   f"{r.get('delivery_ms')}, exactly-once ok={r['check']['ok']}, refusals "
                   f"retried={r['retried_unavailable']}, cpu={r['cpu']}"))
    label = f"@ {opts.rate:,.0f}/s{_tag(opts)}"
    _notes(result, "latency", runs)
    for name, text in (("ack_ms", "ack latency"), ("delivery_ms", "delivery latency")):
        for q, target in (("p50", None), ("p99", 15.0)):
            result.rows.append(Row(f"{text} {q} {label}", "ms",
                                   [value(r, name, q) for r in runs], target, lower=True,
                                   digits=2))
    result.rows += [Row(f"achieved send rate {label}", "sends/s", [value(r, "rate") for r in runs]),
                    Row(f"  gateway CPU per acked send {label}", "us", [_cpu_us(r) for r in runs])]
    return result
