"""The one run harness every figure uses: a scratch world per run, and counted runs.

- ``scratch``: waits for a quiet machine, then gives the run a Redis key prefix of its
  own, optionally a Postgres database (migrated) and a gateway process, and removes
  all of them afterwards, whatever happened.
- ``counted_runs``: ``opts.runs`` runs; a run during which other sessions kept more
  than ``NOISY`` cores busy is kept in the details but redone (at most
  ``opts.redo_noisy`` times); a run that fails counts as n/a with its error noted.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from bench import pg, procs
from bench.common import REDIS_URL, CpuMeter, delete_prefix, new_prefix, wait_quiet
from bench.options import Options
from bench.report import Result

NOISY = 0.25  # cores used by other sessions that disturb a run enough to redo it
Run = dict[str, Any]


@dataclass
class Scratch:
    prefix: str
    busy_before: float  # cores other sessions kept busy just before the run
    database_url: str = ""
    gateway: procs.Server | None = None

    @property
    def server(self) -> procs.Server:
        assert self.gateway is not None, "scratch(..., gateway=True) starts one"
        return self.gateway


@asynccontextmanager
async def scratch(opts: Options, tag: str, *, database: bool = False, gateway: bool = False,
                  settings: dict[str, str] | None = None) -> AsyncIterator[Scratch]:
    """A run's own prefix (+ database, + gateway with ``settings``), removed after."""
    busy = await wait_quiet(opts.quiet_wait)
    world = Scratch(new_prefix(tag), busy)
    name = ""
    try:
        if database:
            name, world.database_url = await asyncio.to_thread(pg.create, tag)
        if gateway:
            world.gateway = procs.gateway(world.prefix, settings, world.database_url)
            await asyncio.to_thread(world.gateway.start)
        yield world
    finally:
        if world.gateway is not None:
            await asyncio.to_thread(world.gateway.stop)
        if name:
            await asyncio.to_thread(pg.drop, name)
        await asyncio.to_thread(delete_prefix, world.prefix)


async def counted_runs(opts: Options, result: Result, what: str,
                       one: Callable[[], Awaitable[Run]], say: Callable[[Run], str],
                       ) -> list[Run]:
    counted: list[Run] = []
    redos = opts.redo_noisy
    while len(counted) < opts.runs:
        try:
            run = await one()
        except Exception as exc:  # reported in the notes; the figure goes on
            run = {"error": f"{type(exc).__name__}: {exc}"[:2000], "counted": True}
            result.runs.append(run)
            counted.append(run)
            result.notes.append(f"{what} run {len(counted)} failed: {run['error']}")
            print(f"  {what} run {len(counted)} FAILED: {run['error']}", flush=True)
            continue
        other = run.get("cpu", {}).get("other", 0.0)
        run["counted"] = other <= NOISY or redos <= 0
        result.runs.append(run)
        tag = f"run {len(counted) + 1}" if run["counted"] else "disturbed run, redone"
        print(f"  {what}, {tag}: {say(run)}", flush=True)
        if run["counted"]:
            counted.append(run)
        else:
            redos -= 1
            result.notes.append(f"{what}: redone, other sessions used {other} cores "
                                f"during a run ({say(run)})")
    return counted


def projector_meter(projector_pid: int, gateway_pid: int | None = None) -> CpuMeter:
    """CPU of the projector (its process tree), Postgres (every ``postgres`` process),
    Redis, the gateway, this driver and the whole machine."""
    processes: dict[str, Callable[[], float]] = {
        "projector": functools.partial(pg.tree_cpu, projector_pid), "postgres": pg.server_cpu}
    if gateway_pid:
        processes["gateway"] = functools.partial(pg.tree_cpu, gateway_pid)
    return CpuMeter(processes, REDIS_URL, me="driver")


def value(run: Run, *path: str) -> float:
    """A number from a run's details; NaN for a failed run."""
    found: Any = run
    for name in path:
        if not isinstance(found, dict) or name not in found:
            return math.nan
        found = found[name]
    return float(found)
