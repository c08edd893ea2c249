"""Small shared helpers: statistics, unique prefixes, Redis clean-up, limits."""

from __future__ import annotations

import asyncio
import math
import os
import resource
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("DLBENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "bench-secret-" + "k" * 40
HOST = "127.0.0.1"


def new_prefix(tag: str) -> str:
    """A Redis key prefix no other run (or figure) shares."""
    return f"dlbench-{tag}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def delete_prefix(prefix: str, url: str = REDIS_URL) -> int:
    """SCAN MATCH prefix* and DEL, in batches; returns the number of keys deleted."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def raise_nofile(want: int = 16384) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want``; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def rss_kib(pid: int) -> int:
    """VmRSS of a process in KiB (from /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


async def wait_quiet(max_wait: float, threshold: float = 0.3, probe: float = 1.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle: other sessions share
    these 2 cores. Returns the busy cores of the last probe."""
    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu()[0]
        await asyncio.sleep(probe)
        busy = (machine_cpu()[0] - before) / probe
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 3)


class CpuMeter:
    """CPU seconds of named processes, Redis (with ``redis_url``), this process (as
    ``me``) and the whole machine (busy, steal): two samples make ``utilisation``."""

    def __init__(self, processes: dict[str, Callable[[], float]], redis_url: str | None,
                 me: str = "load") -> None:
        self.processes, self.me = processes, me
        self.redis = redis.Redis.from_url(redis_url) if redis_url else None

    def sample(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        busy, steal = machine_cpu()
        out = {self.me: usage.ru_utime + usage.ru_stime, "machine": busy, "steal": steal}
        out |= {name: read() for name, read in self.processes.items()}
        if self.redis is not None:
            info = self.redis.info("cpu")
            out["redis"] = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return out

    def close(self) -> None:
        if self.redis is not None:
            self.redis.close()


def utilisation(a: dict[str, float], b: dict[str, float], seconds: float,
                extra: float = 0.0) -> dict[str, float]:
    """Cores each process used between two samples; ``other``: the rest of the machine
    (``extra``: cores of our own processes measured elsewhere, e.g. a load worker)."""
    used = {name: round((b[name] - a[name]) / seconds, 3) for name in a if name in b}
    ours = sum(v for k, v in used.items() if k not in ("machine", "steal")) + extra
    used["other"] = round(max(0.0, used["machine"] - ours), 3)
    return used
