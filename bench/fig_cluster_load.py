"""The chat and the projector on a Redis Cluster beside one Redis (issue 11's benchmark;
the per-process and per-shard figures of docs/capacity.md).

Each figure starts, once, a 3-master cluster (``duologue.local_cluster.LocalCluster``)
and one plain Redis server from the same ``redis-server`` binary, neither persisting,
on free ports; every run has a key prefix of its own on them. A **round** runs every
configuration of the figure once, one after the other, so that a ratio is taken
between runs minutes apart, never between one figure's runs and another's; the
median of ``--runs`` rounds is reported. Redis CPU is the sum of the nodes' processes
(from /proc); gateway CPU counts every ``--workers`` process.

``cluster_chat``: the closed-loop chat load of ``throughput`` (``--pairs`` pairs, both
participants sending, ``--window`` sends in flight each) through one gateway process on
one Redis (the reference), one process on the cluster, ``--workers 2`` on one Redis and
``--workers 2`` on the cluster. Each round also measures its ceilings: the bare
Starlette echo under the gateway's uvicorn options, and ``redis-benchmark`` running
``append.lua`` on the plain Redis. Rows: acked sends/s and its ratio to the reference,
gateway and Redis CPU per acked send, the load generator's cores.

``cluster_projector``: the backlog of ``projector`` (``--backlog`` events over
``--backlog-threads`` threads, appended through ``append.lua``) applied by ``duologue
projector --workers 2`` from one Redis and from the cluster: events/s and the ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.backlog import project_backlog
from bench.ceilings import append_lua_ceiling, echo_ceiling
from bench.fig_chat import chat_run
from bench.harness import Backend, Result, Row, counted_runs, scratch, value
from bench.options import Options
from duologue.embedded import EmbeddedRedis
from duologue.local_cluster import LocalCluster, LocalClusterError, require_redis_7

Config = tuple[str, Backend, int]  # (label, where Redis is, gateway or projector workers)


@dataclass
class Backends:
    single: Backend
    cluster: Backend


@contextlib.asynccontextmanager
async def backends() -> AsyncIterator[Backends]:
    """A 3-master cluster and one plain Redis (the same binary), stopped afterwards."""
    require_redis_7()
    with tempfile.TemporaryDirectory(prefix="dlbench-cluster-") as base:
        single = EmbeddedRedis(Path(base) / "single", persist=False)
        cluster = LocalCluster(Path(base) / "cluster")
        try:
            await asyncio.to_thread(single.start)
            await asyncio.to_thread(cluster.start)
            yield Backends(
                Backend(single.url, (_pid(single),), "one Redis"),
                Backend(cluster.url, tuple(_pid(s) for s in cluster.servers),
                        f"{cluster.masters_count}-master cluster"))
        finally:
            await asyncio.to_thread(cluster.stop)
            await asyncio.to_thread(single.stop)


def _pid(server: EmbeddedRedis) -> int:
    assert server.process is not None
    return server.process.pid


def _who(label: str) -> str:
    return label.split(": ", 1)[-1]


async def _rounds(opts: Options, result: Result, what: str,
                  one_round: Callable[[Backends], Awaitable[dict[str, Any]]],
                  say: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]] | None:
    """``opts.runs`` counted rounds on one pair of backends; None (and a note) when this
    machine has no Redis 7 to start a cluster from."""
    try:
        async with backends() as where:
            return await counted_runs(opts, result, what, lambda: one_round(where), say)
    except LocalClusterError as exc:
        result.notes.append(f"{what}: {exc}")
        return None


def _disturbed(runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """A round's ``cpu``: the most any of its runs saw other sessions use (a noisy
    round is redone whole)."""
    return {"other": max((r.get("cpu", {}).get("other", 0.0) for r in runs.values()),
                         default=0.0)}


def _ok(run: dict[str, Any], label: str) -> bool:
    found = run.get(label, {})
    return bool(found.get("ok", found.get("check", {}).get("ok")))


def _ratio(run: dict[str, Any], label: str, reference: str, *path: str) -> float:
    """``label``'s figure over the reference's, in one round (NaN unless both are ok)."""
    mine = value(run, label, *path, ok=_ok(run, label))
    ref = value(run, reference, *path, ok=_ok(run, reference))
    return mine / ref if ref and not math.isnan(ref) else math.nan


# ---------------------------------------------------------------- cluster_chat


def _chat_configs(where: Backends) -> list[Config]:
    return [("reference: 1 gateway process, one Redis", where.single, 1),
            ("1 gateway process, cluster", where.cluster, 1),
            ("--workers 2, one Redis", where.single, 2),
            ("--workers 2, cluster", where.cluster, 2)]


def _chat_figures(run: dict[str, Any]) -> dict[str, Any]:
    rate = run.get("rate") or math.nan
    cpu = run.get("cpu", {})
    return {"rate": rate, "ok": run.get("check", {}).get("ok", False),
            "gateway_us": cpu.get("server", math.nan) / rate * 1e6,
            "redis_us": cpu.get("redis", math.nan) / rate * 1e6,
            "load_cores": sum(run.get("load_cpu", [math.nan])), "cpu": cpu,
            "refusals_retried": run.get("retried_unavailable"),
            "check": run.get("check")}


async def chat_round(opts: Options, where: Backends) -> dict[str, Any]:
    async with scratch(opts, "ceil", backend=where.single) as world:
        append_lua = await append_lua_ceiling(world, where.single.url)
    out: dict[str, Any] = {"echo": await echo_ceiling(opts), "append_lua": append_lua}
    runs: dict[str, dict[str, Any]] = {}
    for label, backend, workers in _chat_configs(where):
        run = await chat_run(opts, 0.0, opts.pairs, backend=backend,
                             processes=workers)
        runs[label] = run
        out[label] = _chat_figures(run)
    return out | {"cpu": _disturbed(runs)}


def _say_chat(where: list[Config]) -> Callable[[dict[str, Any]], str]:
    def say(r: dict[str, Any]) -> str:
        return "; ".join(
            f"{_who(label)}: {r[label]['rate']:,.0f}/s ok={r[label]['ok']} gw "
            f"{r[label]['gateway_us']:.0f} us redis {r[label]['redis_us']:.0f} us load "
            f"{r[label]['load_cores']:.2f}" for label, _, _ in where) + (
            f"; echo {r['echo']['rate']:,.0f}/s, append.lua {r['append_lua']:,.0f}/s")
    return say


async def cluster_chat(opts: Options) -> Result:
    result = Result()
    if shutil.which("redis-benchmark") is None:  # its ceiling
        result.notes.append("cluster chat: redis-benchmark is not on PATH")
        return result
    labels = _chat_configs(Backends(Backend(), Backend()))
    runs = await _rounds(opts, result, "cluster chat", lambda w: chat_round(opts, w),
                         _say_chat(labels))
    if runs is None:
        return result
    reference = labels[0][0]
    for label, _, _ in labels:
        for n, run in enumerate(runs):
            if label in run and not run[label]["ok"]:
                result.notes.append(f"{label}, round {n + 1}: {run[label]['check']}")
        result.rows += [
            Row(f"acked sends/s, {opts.pairs} pairs both sending, {label}", "sends/s",
                [value(r, label, "rate", ok=r.get(label, {}).get("ok")) for r in runs]),
            Row(f"  ratio to the reference, same round, {_who(label)}", "x",
                [_ratio(r, label, reference, "rate") for r in runs], digits=2),
            Row(f"  gateway CPU per acked send, {_who(label)}", "us",
                [value(r, label, "gateway_us") for r in runs], lower=True),
            Row(f"  Redis CPU per acked send (every node), {_who(label)}", "us",
                [value(r, label, "redis_us") for r in runs], lower=True),
            Row(f"  load generator, {_who(label)}", "cores",
                [value(r, label, "load_cores") for r in runs], digits=2)]
    result.rows += [
        Row(f"Starlette echo, {opts.echo_clients} clients (cluster_chat's rounds)", "msgs/s",
            [value(r, "echo", "rate") for r in runs], ceiling=True),
        Row("redis-benchmark EVALSHA append.lua on the plain Redis (cluster_chat's rounds)",
            "ops/s", [value(r, "append_lua") for r in runs], ceiling=True)]
    return result


# ---------------------------------------------------------------- cluster_projector


def _projector_configs(where: Backends) -> list[Config]:
    return [("reference: --workers 2, one Redis", where.single, 2),
            ("--workers 2, cluster", where.cluster, 2)]


async def projector_round(opts: Options, where: Backends) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    for label, backend, workers in _projector_configs(where):
        runs[label] = await project_backlog(opts, workers, backend=backend)
    return runs | {"cpu": _disturbed(runs)}


def _say_projector(r: dict[str, Any]) -> str:
    return "; ".join(f"{_who(label)}: {run['rate']:,.0f} events/s ok={run['check']['ok']} "
                     f"cpu={run['cpu']}" for label, run in r.items()
                     if isinstance(run, dict) and label != "cpu")


async def cluster_projector(opts: Options) -> Result:
    result = Result()
    labels = _projector_configs(Backends(Backend(), Backend()))
    runs = await _rounds(opts, result, "cluster projector", lambda w: projector_round(opts, w),
                         _say_projector)
    if runs is None:
        return result
    reference = labels[0][0]
    for label, _, _ in labels:
        for n, run in enumerate(runs):
            if label in run and not run[label]["check"]["ok"]:
                result.notes.append(f"{label}, round {n + 1}: projection differs from the "
                                    f"backlog: {run[label]['check']['differs']}")
        ok = [r.get(label, {}).get("check", {}).get("ok") for r in runs]
        result.rows += [
            Row(f"projector events/s, backlog of {opts.backlog:,} events, {label}", "events/s",
                [value(r, label, "rate", ok=k) for r, k in zip(runs, ok, strict=True)]),
            Row(f"  ratio to the reference, same round, {_who(label)}", "x",
                [_ratio(r, label, reference, "rate") for r in runs], digits=2),
            Row(f"  projector CPU, {_who(label)}", "cores",
                [value(r, label, "cpu", "projector") for r in runs], digits=2),
            Row(f"  Redis CPU (every node), {_who(label)}", "cores",
                [value(r, label, "cpu", "redis") for r in runs], digits=2)]
    return result

