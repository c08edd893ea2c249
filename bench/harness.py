"""The one run harness every figure uses.

- where things are: ``REDIS_URL`` (``DLBENCH_REDIS_URL``), ``ADMIN_URL``
  (``DLBENCH_POSTGRES_URL``, a maintenance database to create databases from);
- CPU accounting: ``cpu_of`` (a process tree), ``postgres_cpu``, ``machine_cpu``, and
  ``CpuMeter``, whose two samples make ``utilisation`` (``other``: other sessions);
- processes: ``Child`` (gateway, echo server, projector) and ``LoadProcess`` (a
  ``bench.load`` worker); every one is registered, so ``stop_all`` ends what an error
  or Ctrl-C left, and drops the databases too;
- a run's world: ``scratch`` waits for a quiet machine, gives the run a key prefix of
  its own, optionally a Postgres database and a gateway, and removes them afterwards;
- the figure's loop: ``counted_runs`` runs ``opts.runs`` counted runs; a run during
  which other sessions kept more than ``NOISY`` cores busy is kept in the details but
  redone (at most ``opts.redo_noisy`` times); a run that fails counts as n/a.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from adapters.postgres import migrate
from adapters.record import Keys
from adapters.redis_connect import SyncRedis, scan_keys, sync_redis
from bench.options import Options

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REDIS_URL = os.environ.get("DLBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_URL = os.environ.get("DLBENCH_POSTGRES_URL",
                           "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = "bench-secret-" + "k" * 40
HOST = "127.0.0.1"
NOISY = 0.25  # cores used by other sessions that disturb a run enough to redo it
HZ = os.sysconf("SC_CLK_TCK")
Run = dict[str, Any]


# -- numbers ---------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    return float(sorted_values[max(1, math.ceil(q / 100 * len(sorted_values))) - 1])


def value(run: Run, *path: str, ok: object = True) -> float:
    """A number from a run's details; NaN for a failed run (or one not ``ok``)."""
    if not ok:
        return math.nan
    found: Any = run
    for name in path:
        if not isinstance(found, dict) or name not in found:
            return math.nan
        found = found[name]
    return float(found)


# -- CPU and memory --------------------------------------------------------------------
def _stat(pid: int) -> tuple[str, float]:
    """(name, utime + stime in seconds) of a process, from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return raw[raw.index("(") + 1:raw.rindex(")")], (int(fields[11]) + int(fields[12])) / HZ


def cpu_of(pid: int) -> float:
    """CPU seconds of a process and its living descendants (a projector's workers)."""
    total, todo, seen = _stat(pid)[1], [pid], {pid}
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in map(int, task.read_text().split()):
                    if child not in seen:
                        seen.add(child)
                        todo.append(child)
                        total += _stat(child)[1]
    return total


def postgres_cpu() -> float:
    """CPU seconds of every ``postgres`` process on the machine (other sessions' backends
    included: compare with the machine's ``other``)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError):
                name, seconds = _stat(int(entry.name))
                total += seconds if name == "postgres" else 0.0
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq) / HZ, steal / HZ


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU seconds of named process trees, Redis and Postgres (if asked), this process
    (as ``me``) and the whole machine (busy, steal): two samples make ``utilisation``.
    Redis is the server at ``redis_url`` (its ``INFO cpu``) or, for servers started here
    (every node of a cluster), the sum of the processes ``redis_pids``."""

    def __init__(self, pids: dict[str, int | None], *, redis_url: str | None = None,
                 redis_pids: Sequence[int] = (), postgres: bool = False,
                 me: str = "load") -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.postgres, self.me = postgres, me
        self.redis_pids = tuple(redis_pids)
        self.redis = redis.Redis.from_url(redis_url) if redis_url and not redis_pids else None

    def sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        busy, steal = machine_cpu()
        out = {self.me: usage.ru_utime + usage.ru_stime, "machine": busy, "steal": steal}
        out |= {name: cpu_of(pid) for name, pid in self.pids.items()}
        if self.postgres:
            out["postgres"] = postgres_cpu()
        if self.redis_pids:
            out["redis"] = sum(_stat(pid)[1] for pid in self.redis_pids)
        elif self.redis is not None:
            info = self.redis.info("cpu")
            out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    async def window(self, start: float, until: float,
                     count: Callable[[], int] = lambda: 0) -> Window:
        """Sample at ``start`` and ``until`` (``time.perf_counter`` times); closes the meter."""
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        c1, t1, a = count(), time.perf_counter(), self.sample()
        await asyncio.sleep(max(0.0, until - time.perf_counter()))
        c2, t2, b = count(), time.perf_counter(), self.sample()
        self.close()
        return Window(t1, t2, c2 - c1, a, b)

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


@dataclass
class Window:
    """A measurement window: its times, how far the count moved, two CPU samples."""

    t1: float
    t2: float
    counted: int
    a: dict[str, float]
    b: dict[str, float]

    @property
    def seconds(self) -> float:
        return self.t2 - self.t1

    def cpu(self, extra: float = 0.0) -> dict[str, float]:
        return utilisation(self.a, self.b, self.seconds, extra)


def utilisation(a: dict[str, float], b: dict[str, float], seconds: float,
                extra: float = 0.0) -> dict[str, float]:
    """Cores each process used between two samples; ``other``: the rest of the machine
    (``extra``: cores of our own processes measured elsewhere, e.g. a load worker)."""
    used = {name: round((b[name] - a[name]) / seconds, 3) for name in a if name in b}
    ours = sum(v for k, v in used.items() if k not in ("machine", "steal")) + extra
    used["other"] = round(max(0.0, used["machine"] - ours), 3)
    return used


async def wait_quiet(max_wait: float, threshold: float = 0.3, probe: float = 1.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: other sessions share
    these 2 cores. Returns the busy cores of the last probe."""
    deadline = time.monotonic() + max_wait
    while max_wait > 0:
        before = machine_cpu()[0]
        await asyncio.sleep(probe)
        busy = (machine_cpu()[0] - before) / probe
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 3)
    return math.nan


def raise_nofile(want: int = 16384) -> None:
    """Raise the soft RLIMIT_NOFILE towards ``want`` (also run in children before exec)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# -- processes -------------------------------------------------------------------------
_children: list[Child] = []
_loads: set[asyncio.subprocess.Process] = set()
_databases: list[str] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Child:
    """A subprocess with its log (a temporary file, kept with ``DLBENCH_KEEP_LOGS=1``).
    ``port``: it serves HTTP there and ``start`` waits for ``/healthz``; ``group``: in a
    process group of its own, killed whole (a projector's ``--workers`` children)."""

    argv: list[str]
    env: dict[str, str]
    port: int = 0  # 0: serves nothing
    group: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0) -> Child:
        fd, name = tempfile.mkstemp(prefix="dlbench-", suffix=".log")
        self.log_path = Path(name)
        argv = [*self.argv, "--port", str(self.port)] if self.port else self.argv
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **self.env}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=raise_nofile, start_new_session=self.group)
        _children.append(self)
        deadline = time.monotonic() + timeout
        while self.port and not self._healthy():
            if not self.alive() or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{argv} did not come up:\n{tail}")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=0.5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a projector finishes its batch), then SIGKILL; the group too."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process is not None and self.group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # a worker left behind
        if self in _children:
            _children.remove(self)
        if self.log_path is not None and not os.environ.get("DLBENCH_KEEP_LOGS"):
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def duologue(command: str, prefix: str, database_url: str = "",
             **env: str) -> tuple[list[str], dict[str, str]]:
    """argv and settings of ``python -m duologue.cli <command>`` on this run's prefix."""
    return [sys.executable, "-m", "duologue.cli", command], {
        "REDIS_URL": REDIS_URL, "DUOLOGUE_SECRET": SECRET, "DUOLOGUE_PREFIX": prefix,
        **({"DATABASE_URL": database_url} if database_url else {}), **env}


def run_duologue(args: list[str], env: dict[str, str], timeout: float = 600) -> float:
    """``python -m duologue.cli <args>`` to its end, logging warnings only; its wall time
    in seconds (process start included). Raises with its output if it fails."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=ROOT,
                          env={**os.environ, "DUOLOGUE_LOG_LEVEL": "WARNING", **env},
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"duologue {' '.join(args)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def gateway_child(prefix: str, settings: dict[str, str] | None = None, database_url: str = "",
                  argv: list[str] | None = None) -> Child:
    """The gateway as it is in the tree (``DUOLOGUE_RATE=0``), plus ``settings``;
    ``argv``: another command line serving it (an experiment's)."""
    shipped = {"DUOLOGUE_RATE": "0", "DUOLOGUE_READ_RATE": "0"}  # the load is no attack
    command, env = duologue("gateway", prefix, database_url, **(shipped | (settings or {})))
    return Child(argv or command, env, port=free_port())


def projector(prefix: str, database_url: str, workers: int = 1,
              settings: dict[str, str] | None = None) -> Child:
    """``duologue projector [--workers N]`` in a process group of its own."""
    argv, env = duologue("projector", prefix, database_url, **(settings or {}))
    return Child(argv + (["--workers", str(workers)] if workers > 1 else []), env, group=True)


def listeners(port: int) -> int:
    """Sockets listening on ``port`` (IPv4): one per ``--workers`` process (SO_REUSEPORT)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


def wait_listening(child: Child, workers: int, timeout: float = 30.0) -> None:
    """Until each of a ``--workers`` gateway's processes listens (the first answering
    ``/healthz`` is not enough: sockets opened before the others listen all go to it)."""
    deadline = time.monotonic() + timeout
    while listeners(child.port) < workers:
        if not child.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{listeners(child.port)} of {workers} workers listen on "
                               f"{child.port}:\n{child.log_tail()}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Backend:
    """The Redis a run uses: ``url``, and the server processes when they were started
    here (every node of a local cluster: their CPU is read from /proc)."""

    url: str = REDIS_URL
    pids: tuple[int, ...] = ()
    name: str = "one Redis"


DEFAULT_BACKEND = Backend()  # the Redis at REDIS_URL (DLBENCH_REDIS_URL)


def echo_server() -> Child:
    return Child([sys.executable, "-m", "bench.echo_server"], {}, port=free_port())


class LoadProcessError(RuntimeError):
    """The load worker reported an error or went away."""


class LoadProcess:
    """One load-generating process (``python -m bench.load``), driven line by line: a
    JSON spec in; ``{"stage": ...}`` lines out, each answered with ``go``; a result."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, spec: dict[str, Any]) -> LoadProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.load", cwd=ROOT, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, limit=2**26)
        _loads.add(process)
        worker = cls(process)
        await worker.say(json.dumps(spec))
        return worker

    async def say(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, stage: str, timeout: float) -> dict[str, Any]:
        message = await self._next(timeout)
        if message.get("stage") != stage:
            raise LoadProcessError(f"expected stage {stage!r}, got {message}")
        return message

    async def result(self, timeout: float) -> dict[str, Any]:
        message = await self._next(timeout)
        if "result_file" not in message:
            raise LoadProcessError(f"expected a result, got {message}")
        path = Path(message["result_file"])
        try:
            result: dict[str, Any] = json.loads(path.read_text())
        finally:
            path.unlink(missing_ok=True)
        await asyncio.wait_for(self.process.wait(), 10)
        _loads.discard(self.process)
        return result

    async def _next(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise LoadProcessError(f"worker exited (code {await self.process.wait()})")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise LoadProcessError(message["error"])
        return message


@contextlib.asynccontextmanager
async def loads(specs: list[dict[str, Any]]) -> AsyncIterator[list[LoadProcess]]:
    """One load worker per spec; any still running on the way out is killed."""
    started: list[LoadProcess] = []
    try:
        for spec in specs:
            started.append(await LoadProcess.start(spec))
        yield started
    finally:
        for worker in started:
            with contextlib.suppress(ProcessLookupError):
                worker.process.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.process.wait(), 5)
            _loads.discard(worker.process)


async def go_all(ws: list[LoadProcess], stage: str, timeout: float) -> list[dict[str, Any]]:
    """Wait until every worker reached ``stage``, then release them together."""
    reached = await asyncio.gather(*(w.expect(stage, timeout) for w in ws))
    for w in ws:
        await w.say("go")
    return list(reached)


async def load(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One worker: wait until it is ``ready``, release it, its result within ``timeout``."""
    async with loads([spec]) as (worker,):
        await go_all([worker], "ready", 120)
        return await worker.result(timeout)


# -- Redis prefixes and Postgres databases ---------------------------------------------
def delete_keys(pattern: str, url: str = REDIS_URL) -> None:
    """``delete_matching`` on the Redis or cluster at ``url``."""
    client = sync_redis(url)
    try:
        delete_matching(client, pattern)
    finally:
        client.close()


def delete_matching(client: SyncRedis, pattern: str) -> None:
    """SCAN MATCH pattern and DEL (freed at once, not in the background as UNLINK), in
    batches of 500 (a cluster: every primary; the client splits each DEL by slot)."""
    keys = list(scan_keys(client, pattern))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start:start + 500])


def used_memory(client: redis.Redis) -> int:
    """INFO used_memory of one Redis server, in bytes."""
    info: Any = client.info("memory")
    return int(info["used_memory"])


def _admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.encode())  # names made here, never input


def create_database(tag: str, schema: bool = True) -> tuple[str, str]:
    """CREATE DATABASE bench_<tag>_<random> (migrated unless ``schema`` is false)."""
    name = f"bench_{tag}_{uuid.uuid4().hex[:10]}"
    _admin(f'CREATE DATABASE "{name}"')
    _databases.append(name)
    url = psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)
    if schema:
        migrate(url)
    return name, url


def drop_database(name: str) -> None:
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if name in _databases:
        _databases.remove(name)


def stop_all() -> None:
    """Kill every process started here and not stopped yet; drop every database left."""
    for process in list(_loads):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    _loads.clear()
    for child in list(_children):
        if child.process is not None and child.process.poll() is None:
            child.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
        child.stop(timeout=1)
    for name in list(_databases):
        with contextlib.suppress(psycopg.Error):
            drop_database(name)


# -- a run's world, and the figure's runs ----------------------------------------------
@dataclass
class Scratch:
    prefix: str
    busy_before: float  # cores the machine kept busy just before the run
    database_url: str = ""
    gateway: Child | None = None
    keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.prefix, 64)

    @property
    def server(self) -> Child:
        assert self.gateway is not None, "scratch(..., gateway=True) starts one"
        return self.gateway


@contextlib.asynccontextmanager
async def scratch(opts: Options, tag: str, *, database: bool = False, schema: bool = True,
                  gateway: bool = False, settings: dict[str, str] | None = None,
                  gateway_argv: list[str] | None = None, workers: int = 1,
                  backend: Backend = DEFAULT_BACKEND) -> AsyncIterator[Scratch]:
    """After up to ``opts.quiet_wait`` s waiting for a quiet machine: a run's own key
    prefix on ``backend`` (+ a database, + a gateway with ``settings``, ``workers``
    processes), all removed afterwards."""
    world = Scratch(f"dlbench-{tag}-{uuid.uuid4().hex[:12]}", await wait_quiet(opts.quiet_wait))
    name = ""
    try:
        if database:
            name, world.database_url = await asyncio.to_thread(create_database, tag, schema)
        if gateway:
            if workers > 1:
                gateway_argv = [*(gateway_argv or duologue("gateway", "")[0]),
                                "--workers", str(workers)]
            world.gateway = gateway_child(world.prefix, {"REDIS_URL": backend.url} | (
                settings or {}), world.database_url, gateway_argv)
            await asyncio.to_thread(world.gateway.start)
            await asyncio.to_thread(wait_listening, world.gateway, workers)
        yield world
    finally:
        if world.gateway is not None:
            await asyncio.to_thread(world.gateway.stop)
        if name:
            await asyncio.to_thread(drop_database, name)
        await asyncio.to_thread(delete_keys, f"{world.prefix}*", backend.url)


async def counted_runs(opts: Options, result: Result, what: str,
                       one: Callable[[], Awaitable[Run]], say: Callable[[Run], str],
                       ) -> list[Run]:
    """``opts.runs`` counted runs of ``one``, each printed with ``say`` and kept in
    ``result.runs``; noisy runs redone, failed ones counted as n/a (an ``error``)."""
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


# -- the figure's rows: median of the counted runs, target and verdict -----------------
@dataclass
class Row:
    label: str
    unit: str
    runs: list[float]
    target: float | None = None
    lower: bool = False  # lower is better
    digits: int = 0
    ceiling: bool = False  # a same-run reference, printed in its own table
    figure: str = ""  # the --only name that produced it (set by ``python -m bench``)

    @property
    def median(self) -> float:
        return median(self.runs)

    def fmt(self, number: float) -> str:
        return "n/a" if math.isnan(number) else f"{number:,.{self.digits}f}"

    @property
    def target_text(self) -> str:
        if self.target is None:
            return "-"
        return f"{'<=' if self.lower else '>='} {self.fmt(self.target)}"

    @property
    def verdict(self) -> str:
        if self.target is None or math.isnan(self.median):
            return "-"
        return "met" if (self.median <= self.target if self.lower
                         else self.median >= self.target) else "MISSED"


@dataclass
class Result:
    rows: list[Row] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)  # per-run details
    notes: list[str] = field(default_factory=list)


def table(rows: list[Row]) -> str:
    header = ("figure", "median", "runs", "target", "verdict")
    body = [(f"{r.label} [{r.unit}]", r.fmt(r.median), ", ".join(r.fmt(v) for v in r.runs),
             r.target_text, r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths),
                      *(line(b) for b in body)])
