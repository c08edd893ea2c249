"""``duologue dev``: embedded Redis and Postgres unless configured, the schema
migrated, then the projector (a child process) and the gateway.

The console shows one line per thing a person needs and the banner last: the demo
links, then the operator block (``export`` lines, the analyst ``psql`` line). While it
runs, ``.duologue/env`` tells every other ``duologue`` command where Redis and Postgres
are (``duologue.devenv``). Ctrl-C stops the gateway, then the projector, then Redis and
Postgres, in that order: the children run in sessions of their own, so the terminal's
SIGINT reaches only this process.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import FrameType

import structlog
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres import migrate
from adapters.settings import Settings
from duologue import devenv
from duologue.embedded import EmbeddedRedis, die_with_parent, free_port, start_postgres
from duologue.local_cluster import LocalCluster, LocalClusterError

log = structlog.get_logger("duologue.dev")
DEMO_USERS = ("alice", "bob")
DEV_REDIS_PORT = 6390
ANALYST = "duologue_analyst"


def run_dev(host: str, port: int, state: Path, redis_cluster: bool = False) -> int:
    from gateway.runner import serve

    if not _can_listen(host, port):  # before anything starts, not after Redis and Postgres
        print(f"duologue dev: {host}:{port} is in use by another program: stop it, or pass "
              "--port", file=sys.stderr)
        return 1
    # the banner says it all: not pgserver's internals, not uvicorn's start-up lines
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")  # pgserver's platformdirs
    redis: EmbeddedRedis | LocalCluster | None = None
    postgres: object | None = None
    if redis_cluster and os.environ.get("REDIS_URL"):
        print("duologue dev: --redis-cluster starts its own cluster; unset REDIS_URL",
              file=sys.stderr)
        return 2
    if redis_cluster:  # three masters from the redis-server on PATH, gone when dev stops
        try:
            redis = LocalCluster(state / "redis-cluster", own_session=True).start()
        except LocalClusterError as exc:
            print(f"duologue dev: {exc}", file=sys.stderr)
            return 2
        os.environ["REDIS_URL"] = redis.url
        log.info("local_redis_cluster", url=redis.url, masters=len(redis.nodes),
                 note="not persisted: the archive in Postgres restores it")
    elif not os.environ.get("REDIS_URL"):
        redis_port = _port_or_free(devenv.remembered_port(state, DEV_REDIS_PORT))
        redis = EmbeddedRedis(state / "redis", port=redis_port, own_session=True).start()
        devenv.remember_port(state, redis_port)  # the next start takes it again
        os.environ["REDIS_URL"] = redis.url
        log.info("embedded_redis", url=redis.url, data=str(state / "redis"))
    projector: subprocess.Popen[bytes] | None = None
    try:
        if not os.environ.get("DATABASE_URL"):
            postgres, url = start_postgres(state / "postgres")
            os.environ["DATABASE_URL"] = url
            log.info("embedded_postgres", data=str(state / "postgres"))
        settings = Settings.from_env().require("redis_url", "database_url", "secret")
        migrate(settings.database_url)
        projector = _start_projector()
        devenv.write_env(state, {"REDIS_URL": settings.redis_url,
                                 "DATABASE_URL": settings.database_url})
        # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that
        # still runs the cleanup below instead of killing the process outright.
        signal.signal(signal.SIGTERM, _exit_on_signal)
        serve(settings, host, port, on_ready=lambda: print(banner(settings, host, port),
                                                           flush=True))
    finally:
        devenv.remove_env(state)
        if projector is not None:
            _stop(projector)
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.cleanup()  # type: ignore[attr-defined]
        log.info("dev_stopped")
    return 0


def _start_projector() -> subprocess.Popen[bytes]:
    env = os.environ.copy()
    env.setdefault("DUOLOGUE_LOG_LEVEL", "WARNING")  # not a line per partition taken
    process = subprocess.Popen([sys.executable, "-m", "duologue.cli", "projector"], env=env,
                               preexec_fn=die_with_parent, start_new_session=True)
    log.info("projector_started", pid=process.pid)
    return process


def banner(settings: Settings, host: str, port: int) -> str:
    from adapters.tokens import mint

    base = f"http://{host}:{port}"
    lines = ["", f"Duologue is up: {base}  (WebSocket ws://{host}:{port}/v1/ws)", ""]
    for user in DEMO_USERS:
        token = mint(user, settings.secret, 86400)
        lines += [f"  {user}: {base}/#token={token}", f"    token: {token}", ""]
    lines += [
        "Operators: `duologue status`, `verify`, `replay`, `rebuild` find this system from",
        "any directory of the project (they read .duologue/env).",
        *_not_on_path(),
        "Elsewhere, export:",
        f"  export REDIS_URL='{settings.redis_url}'",
        f"  export DATABASE_URL='{settings.database_url}'",
        "Analysts (read-only SQL, docs/schema.md):",
        f"  psql '{analyst_conninfo(settings.database_url)}'",
        "",
        "Open the two links in two browser tabs to chat. Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _not_on_path() -> list[str]:
    """A line saying where ``duologue`` is when the shell would not find it."""
    bin_dir = Path(sys.executable).parent
    found = shutil.which("duologue")
    if not (bin_dir / "duologue").exists() or (
            found and Path(found).resolve() == (bin_dir / "duologue").resolve()):
        return []
    here = Path.cwd()
    shown = bin_dir.relative_to(here) if bin_dir.is_relative_to(here) else bin_dir
    return [f"`duologue` is {shown}/duologue; `source {shown}/activate` puts it on your PATH."]


def analyst_conninfo(database_url: str) -> str:
    """The same database as the read-only analyst role."""
    params = {k: v for k, v in conninfo_to_dict(database_url).items() if k != "password"}
    params["user"] = ANALYST
    return make_conninfo(**params)  # type: ignore[arg-type]


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the projector finishes its batch and exits."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _exit_on_signal(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _port_or_free(preferred: int) -> int:
    """``preferred`` unless something listens there."""
    return preferred if _can_listen("127.0.0.1", preferred) else free_port()


def _can_listen(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now. SO_REUSEADDR, as redis-server
    and uvicorn bind: the sockets a quick restart leaves in TIME_WAIT do not count. Any
    other failure (a host that does not resolve) is left for the server to report."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            return True
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE
