"""Server subprocesses (gateway, echo server, projector): start, wait until up, stop.

Every process started here is registered, so ``stop_all`` (run from ``__main__``'s
``finally``) can kill whatever is left after an error or Ctrl-C.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import HOST, REDIS_URL, ROOT, SECRET, free_port

NOFILE = 16384
_started: list[subprocess.Popen[bytes]] = []


def _raise_nofile() -> None:  # runs in the child between fork and exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class Server:
    argv: list[str]
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0) -> Server:
        fd, name = tempfile.mkstemp(prefix="dlbench-", suffix=".log")
        self.log_path = Path(name)
        argv = [*self.argv, "--port", str(self.port)]
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **self.env}, cwd=ROOT, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=_raise_nofile)
        _started.append(self.process)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
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

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if process in _started:
            _started.remove(process)
        if self.log_path is not None and not os.environ.get("DLBENCH_KEEP_LOGS"):
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def gateway(prefix: str, experiment: dict[str, str] | None = None,
            database_url: str = "") -> Server:
    """The gateway as it is in the tree; ``experiment`` adds ``DUOLOGUE_*`` settings."""
    env = {"REDIS_URL": REDIS_URL, "DUOLOGUE_SECRET": SECRET, "DUOLOGUE_PREFIX": prefix,
           "DUOLOGUE_RATE": "0", **(experiment or {})}
    if database_url:
        env["DATABASE_URL"] = database_url
    return Server([sys.executable, "-m", "duologue.cli", "gateway"], env)


@dataclass
class Projector:
    """``duologue projector`` in a process group of its own (``--workers N`` forks N
    workers under a supervisor), so stopping it stops every worker it started."""

    prefix: str
    database_url: str
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)  # extra DUOLOGUE_* settings
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Projector:
        fd, name = tempfile.mkstemp(prefix="dlbench-projector-", suffix=".log")
        self.log_path = Path(name)
        env = {**os.environ, "REDIS_URL": REDIS_URL, "DATABASE_URL": self.database_url,
               "DUOLOGUE_PREFIX": self.prefix, **self.env}
        argv = [sys.executable, "-m", "duologue.cli", "projector"]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        with os.fdopen(fd, "wb") as out:
            self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        _started.append(self.process)
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (each worker finishes its batch), then SIGKILL to the whole group."""
        process = self.process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            _kill_group(process.pid)  # a worker left behind by its supervisor
            if process in _started:
                _started.remove(process)
        if self.log_path is not None and not os.environ.get("DLBENCH_KEEP_LOGS"):
            with contextlib.suppress(OSError):
                self.log_path.unlink()


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (a group this module created), if any is left."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def echo_server() -> Server:
    return Server([sys.executable, "-m", "bench.echo_server"], {})


@contextlib.contextmanager
def running(server: Server) -> Iterator[Server]:
    server.start()
    try:
        yield server
    finally:
        server.stop()


def stop_all() -> None:
    """Kill every server this process started and has not stopped yet (by pid)."""
    for process in list(_started):
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if process.args[3:4] == ["projector"]:  # type: ignore[index]
            _kill_group(process.pid)  # its workers
        _started.remove(process)
