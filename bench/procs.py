"""Subprocesses of a figure (gateway, echo server, projector): start, wait until up, stop.

Every process started here is registered, so ``stop_all`` (run from ``__main__``'s
``finally``) can kill whatever is left after an error or Ctrl-C. Each logs to a
temporary file, deleted when it stops (kept with ``DLBENCH_KEEP_LOGS=1``).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import HOST, REDIS_URL, ROOT, SECRET, free_port

NOFILE = 16384
_started: list[Child] = []


def _raise_nofile() -> None:  # runs in the child between fork and exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class Child:
    """One subprocess with its log. ``group``: in a process group of its own, which
    ``stop`` kills whole (a projector's ``--workers`` children)."""

    argv: list[str]
    env: dict[str, str]
    group: bool = False
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def spawn(self) -> None:
        fd, name = tempfile.mkstemp(prefix="dlbench-", suffix=".log")
        self.log_path = Path(name)
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=_raise_nofile,
                start_new_session=self.group)
        _started.append(self)

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
        if self in _started:
            _started.remove(self)
        if self.log_path is not None and not os.environ.get("DLBENCH_KEEP_LOGS"):
            with contextlib.suppress(OSError):
                self.log_path.unlink()


@dataclass
class Server(Child):
    """A child serving HTTP on ``port``: ``start`` returns once ``/healthz`` answers."""

    port: int = field(default_factory=free_port)

    def start(self, timeout: float = 20.0) -> Server:
        self.argv = [*self.argv, "--port", str(self.port)]
        self.spawn()
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if not self.alive() or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"{self.argv} did not come up:\n{tail}")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=0.5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def gateway(prefix: str, experiment: dict[str, str] | None = None,
            database_url: str = "") -> Server:
    """The gateway as it is in the tree; ``experiment`` adds ``DUOLOGUE_*`` settings."""
    env = {"REDIS_URL": REDIS_URL, "DUOLOGUE_SECRET": SECRET, "DUOLOGUE_PREFIX": prefix,
           "DUOLOGUE_RATE": "0", **(experiment or {})}
    if database_url:
        env["DATABASE_URL"] = database_url
    return Server([sys.executable, "-m", "duologue.cli", "gateway"], env)


def echo_server() -> Server:
    return Server([sys.executable, "-m", "bench.echo_server"], {})


class Projector(Child):
    """``duologue projector [--workers N]`` in a process group of its own."""

    def __init__(self, prefix: str, database_url: str, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "duologue.cli", "projector"]
        super().__init__(argv + (["--workers", str(workers)] if workers > 1 else []),
                         {"REDIS_URL": REDIS_URL, "DATABASE_URL": database_url,
                          "DUOLOGUE_PREFIX": prefix, **(env or {})}, group=True)

    def start(self) -> Projector:
        self.spawn()
        return self


def stop_all() -> None:
    """Kill every child this process started and has not stopped yet."""
    for child in list(_started):
        if child.process is not None and child.process.poll() is None:
            child.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=5)
        child.stop(timeout=1)
