"""``duologue dev``: embedded Redis and Postgres unless configured, then the gateway."""

from __future__ import annotations

import os

import structlog

from duologue.embedded import EmbeddedRedis, start_postgres
from duologue.settings import DEV_DIR, Settings

log = structlog.get_logger("duologue.dev")
DEMO_USERS = ("alice", "bob")


def run_dev(host: str, port: int) -> int:
    from gateway.auth import mint
    from gateway.server import serve

    redis: EmbeddedRedis | None = None
    postgres: object | None = None
    if not os.environ.get("REDIS_URL"):
        redis = EmbeddedRedis(DEV_DIR / "redis", port=_dev_port(6390)).start()
        os.environ["REDIS_URL"] = redis.url
        log.info("embedded_redis", url=redis.url, data=str(DEV_DIR / "redis"))
    if not os.environ.get("DATABASE_URL"):
        postgres, url = start_postgres(DEV_DIR / "postgres")
        os.environ["DATABASE_URL"] = url
        log.info("embedded_postgres", data=str(DEV_DIR / "postgres"))
    settings = Settings.from_env().require("redis_url", "secret")
    try:
        _banner(settings, host, port, mint)
        serve(settings, host, port)
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.cleanup()  # type: ignore[attr-defined]
    return 0


def _dev_port(preferred: int) -> int:
    import socket

    from duologue.embedded import free_port

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def _banner(settings: Settings, host: str, port: int, mint: object) -> None:
    base = f"http://{host}:{port}"
    lines = ["", f"Duologue is up: {base}  (WebSocket {base.replace('http', 'ws')}/v1/ws)", ""]
    for user in DEMO_USERS:
        token = mint(user, settings.secret, 86400)  # type: ignore[operator]
        lines += [f"  {user}: {base}/#token={token}", f"    token: {token}", ""]
    lines.append("Open the two links in two browser tabs to chat. Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)
