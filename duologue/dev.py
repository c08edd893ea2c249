"""``duologue dev``: embedded Redis and Postgres unless configured, the schema
migrated, then the projector (a child process) and the gateway."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from types import FrameType

import structlog

from adapters.postgres import migrate
from adapters.settings import DEV_DIR, Settings
from duologue.embedded import EmbeddedRedis, die_with_parent, free_port, start_postgres

log = structlog.get_logger("duologue.dev")
DEMO_USERS = ("alice", "bob")
DEV_REDIS_PORT = 6390


def run_dev(host: str, port: int) -> int:
    from gateway.runner import serve

    redis: EmbeddedRedis | None = None
    postgres: object | None = None
    if not os.environ.get("REDIS_URL"):
        redis = EmbeddedRedis(DEV_DIR / "redis", port=_port_or_free(DEV_REDIS_PORT)).start()
        os.environ["REDIS_URL"] = redis.url
        log.info("embedded_redis", url=redis.url, data=str(DEV_DIR / "redis"))
    if not os.environ.get("DATABASE_URL"):
        postgres, url = start_postgres(DEV_DIR / "postgres")
        os.environ["DATABASE_URL"] = url
        log.info("embedded_postgres", data=str(DEV_DIR / "postgres"))
    settings = Settings.from_env().require("redis_url", "database_url", "secret")
    migrate(settings.database_url)
    projector = subprocess.Popen([sys.executable, "-m", "duologue.cli", "projector"],
                                 env=os.environ.copy(), preexec_fn=die_with_parent)
    # uvicorn re-raises SIGTERM after its graceful shutdown; make that an exit that
    # still runs the cleanup below instead of killing the process outright.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        serve(settings, host, port, on_ready=lambda: print(banner(settings, host, port),
                                                           flush=True))
    finally:
        _stop(projector)
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.cleanup()  # type: ignore[attr-defined]
    return 0


def banner(settings: Settings, host: str, port: int) -> str:
    from adapters.tokens import mint

    base = f"http://{host}:{port}"
    lines = ["", f"Duologue is up: {base}  (WebSocket ws://{host}:{port}/v1/ws)", ""]
    for user in DEMO_USERS:
        token = mint(user, settings.secret, 86400)
        lines += [f"  {user}: {base}/#token={token}", f"    token: {token}", ""]
    lines.append("Open the two links in two browser tabs to chat. Ctrl-C stops everything.")
    return "\n".join(lines)


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
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred
