"""The world the JavaScript client's tests run against: real gateways (and a projector)
on this run's own Redis key prefix and Postgres database, driven line by line.

Started by ``test/world.js``; one JSON command per line on stdin, one JSON answer per
line on stdout:

    {"op": "gateway", "env": {...}}       -> {"name": "g1", "port": 41234}
    {"op": "kill", "name": "g1"}          -> {}  (SIGKILL)
    {"op": "start", "name": "g1"}         -> {"port": ...}  (again, on the same port)
    {"op": "projector"}                   -> {}
    {"op": "token", "user": "u", "ttl": 60} -> {"token": "..."}

At the end of stdin every process is stopped, the key prefix deleted and the database
dropped. Redis at 127.0.0.1:6379 and Postgres at 127.0.0.1:5432 (user postgres, trust)
when they answer, else embedded ones (as ``tests/conftest.py`` does).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import redis  # noqa: E402

from adapters import logs  # noqa: E402
from adapters.postgres import migrate  # noqa: E402
from adapters.tokens import mint  # noqa: E402
from duologue.embedded import EmbeddedRedis, answers, free_port, start_postgres  # noqa: E402

SECRET = "js-client-test-secret-" + "y" * 40



def _log_file() -> Path:
    fd, name = tempfile.mkstemp(prefix="dljs-", suffix=".log")
    os.close(fd)
    return Path(name)


@dataclass
class Process:
    argv: list[str]
    env: dict[str, str]
    port: int = 0
    log: Path = field(default_factory=lambda: _log_file())
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [*self.argv, "--port", str(self.port)] if self.port else self.argv
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env={**os.environ, **self.env}, cwd=ROOT,
                                          stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while self.port and not self._healthy():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv} did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=0.5) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class World:
    def __init__(self) -> None:
        self.prefix = f"dljs{uuid.uuid4().hex[:10]}"
        self.embedded: list[Any] = []
        if answers(6379):
            self.redis_url = "redis://127.0.0.1:6379/0"
        else:
            server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="dljs-redis-")), persist=False)
            self.embedded.append(server.start())
            self.redis_url = server.url
        if answers(5432):
            self.admin = "postgresql://postgres@127.0.0.1:5432/postgres"
        else:
            pg, self.admin = start_postgres(Path(tempfile.mkdtemp(prefix="dljs-pg-")))
            self.embedded.append(pg)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.prefix}"'.encode())
        self.database_url = psycopg.conninfo.make_conninfo(self.admin, dbname=self.prefix)
        migrate(self.database_url)
        self.processes: dict[str, Process] = {}

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return {"REDIS_URL": self.redis_url, "DATABASE_URL": self.database_url,
                "DUOLOGUE_PREFIX": self.prefix, "DUOLOGUE_SECRET": SECRET,
                "DUOLOGUE_RATE": "0", "DUOLOGUE_LOG_LEVEL": "WARNING", **extra}

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "gateway":
            name = f"g{len(self.processes) + 1}"
            argv = [sys.executable, "-m", "duologue.cli", "gateway"]
            process = Process(argv, self.env(cmd.get("env", {})), port=free_port())
            self.processes[name] = process
            process.start()
            return {"name": name, "port": process.port}
        if op == "projector":
            name = f"p{len(self.processes) + 1}"
            argv = [sys.executable, "-m", "duologue.cli", "projector"]
            process = Process(argv, self.env(cmd.get("env", {})))
            self.processes[name] = process
            process.start()
            return {"name": name}
        if op == "kill":
            self.processes[cmd["name"]].kill()
            return {}
        if op == "start":
            self.processes[cmd["name"]].start()
            return {"port": self.processes[cmd["name"]].port}
        if op == "token":
            return {"token": mint(cmd["user"], SECRET, int(cmd.get("ttl", 3600)))}
        raise ValueError(f"unknown op {op!r}")

    def close(self) -> None:
        for process in self.processes.values():
            process.stop()
            process.log.unlink(missing_ok=True)
        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start:start + 500])
        client.close()
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.prefix}" WITH (FORCE)'.encode())
        for server in self.embedded:
            (server.stop if hasattr(server, "stop") else server.cleanup)()


def main() -> None:
    out, sys.stdout = sys.stdout, sys.stderr  # stdout carries answers only
    logs.configure("WARNING")
    world = World()
    try:
        print(json.dumps({"ready": True, "prefix": world.prefix}), file=out, flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                answer = world.command(json.loads(line))
            except Exception as exc:  # reported to the test, which fails with it
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            print(json.dumps(answer), file=out, flush=True)
    finally:
        world.close()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    main()
