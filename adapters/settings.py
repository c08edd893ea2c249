"""Configuration, read once from the environment into a frozen object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

MIN_SECRET_BYTES = 32  # protocol.md section 8: a gateway refuses a shorter DUOLOGUE_SECRET


WS_COMPRESSION = ("per-message", "context", "off")  # gateway/ws_protocol.py's policies


class SettingsError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


def _number(env: Mapping[str, str], name: str, default: float, minimum: float = 0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = ""
    database_url: str = ""
    secret: str = ""
    partitions: int = 64
    prefix: str = "dl"
    rate: float = 20.0
    burst: int = 40
    rate_bytes: float = 65536.0  # body bytes per second per user; the burst is 4 s' worth
    max_sockets: int = 20  # open WebSockets per user across gateways (0: no cap)
    violation_hold: float = 10.0  # s a socket closed for breaking the protocol keeps its place
    ack_replicas: int = 0  # an ack waits until this many replicas hold the event (WAIT)
    ack_wait_ms: int = 1000  # how long it waits; then the send is `unavailable`
    read_rate: float = 50.0  # sync, watch and HTTP reads per second per user (0: off)
    read_burst: float = 100.0
    typing_every: float = 2.0  # s between relayed typing notices per user and thread (0: off)
    max_body: int = 4000
    max_frame: int = 65536
    outbox: int = 1024
    redis_pool: int = 64
    pg_pool: int = 10
    dedupe_ttl: int = 86400
    ping_interval: float = 20.0
    drain_timeout: float = 10.0
    projector_lanes: int = 2
    retain_events: int = 1000
    retain_idle: float = 604800.0
    retention_every: float = 10.0  # seconds between retention passes; 0 turns retention off
    ws_compression: str = "per-message"  # permessage-deflate: per-message | context | off
    webhook_url: str = ""  # offline notifications (protocol.md section 6); "" turns them off
    webhook_secret: str = ""
    webhook_retry_for: float = 86400.0  # seconds a delivery is retried before it is dead
    presence_lease: float = 45.0  # seconds a gateway's unrenewed presence lease lasts
    webhook_timeout: float = 5.0  # seconds a POST may take before it counts as failed
    webhook_backoff: float = 1.0  # first retry delay in seconds (doubling, at most 300)
    webhook_concurrency: int = 16  # POSTs in flight per sender process
    webhook_senders: int = 1  # sender processes per projector process

    @property
    def presence_lease_ms(self) -> int:
        return int(self.presence_lease * 1000)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            redis_url=env.get("REDIS_URL", ""),
            database_url=env.get("DATABASE_URL", ""),
            secret=env.get("DUOLOGUE_SECRET") or "",
            partitions=int(_number(env, "DUOLOGUE_PARTITIONS", 64, minimum=1)),
            prefix=env.get("DUOLOGUE_PREFIX") or "dl",
            rate=_number(env, "DUOLOGUE_RATE", 20),
            typing_every=_number(env, "DUOLOGUE_TYPING_EVERY", 2),
            max_sockets=int(_number(env, "DUOLOGUE_MAX_SOCKETS", 20)),
            violation_hold=_number(env, "DUOLOGUE_VIOLATION_HOLD", 10),
            ack_replicas=int(_number(env, "DUOLOGUE_ACK_REPLICAS", 0)),
            ack_wait_ms=int(_number(env, "DUOLOGUE_ACK_WAIT_MS", 1000, minimum=1)),
            read_rate=(read_rate := _number(env, "DUOLOGUE_READ_RATE", 50)),
            read_burst=_number(env, "DUOLOGUE_READ_BURST", 2 * read_rate, minimum=1),
            rate_bytes=_number(env, "DUOLOGUE_RATE_BYTES", 65536),
            burst=int(_number(env, "DUOLOGUE_BURST", 40, minimum=1)),
            max_body=int(_number(env, "DUOLOGUE_MAX_BODY", 4000, minimum=1)),
            outbox=int(_number(env, "DUOLOGUE_OUTBOX", 1024, minimum=16)),
            redis_pool=int(_number(env, "DUOLOGUE_REDIS_POOL", 64, minimum=2)),
            pg_pool=int(_number(env, "DUOLOGUE_PG_POOL", 10, minimum=1)),
            dedupe_ttl=int(_number(env, "DUOLOGUE_DEDUPE_TTL", 86400, minimum=86400)),
            ping_interval=_number(env, "DUOLOGUE_PING_INTERVAL", 20, minimum=0.1),
            drain_timeout=_number(env, "DUOLOGUE_DRAIN_TIMEOUT", 10, minimum=0),
            projector_lanes=int(_number(env, "DUOLOGUE_PROJECTOR_LANES", 2, minimum=1)),
            retain_events=int(_number(env, "DUOLOGUE_RETAIN_EVENTS", 1000)),
            retain_idle=_number(env, "DUOLOGUE_RETAIN_IDLE", 604800),
            retention_every=_number(env, "DUOLOGUE_RETENTION_EVERY", 10),
            ws_compression=_choice(env, "DUOLOGUE_WS_COMPRESSION", "per-message",
                                   WS_COMPRESSION),
            webhook_url=env.get("DUOLOGUE_WEBHOOK_URL", ""),
            webhook_secret=env.get("DUOLOGUE_WEBHOOK_SECRET", ""),
            webhook_retry_for=_number(env, "DUOLOGUE_WEBHOOK_RETRY_FOR", 86400),
            presence_lease=_number(env, "DUOLOGUE_PRESENCE_LEASE", 45, minimum=0.3),
            webhook_timeout=_number(env, "DUOLOGUE_WEBHOOK_TIMEOUT", 5, minimum=0.05),
            webhook_backoff=_number(env, "DUOLOGUE_WEBHOOK_BACKOFF", 1, minimum=0.01),
            webhook_concurrency=int(_number(env, "DUOLOGUE_WEBHOOK_CONCURRENCY", 16,
                                            minimum=1)),
            webhook_senders=int(_number(env, "DUOLOGUE_WEBHOOK_SENDERS", 1, minimum=1)),
        )

    def require_gateway_secret(self) -> Settings:
        """A gateway signs and checks every token with ``DUOLOGUE_SECRET``: set (from the
        environment: the CLI gives a gateway no dev secret file) and at least
        ``MIN_SECRET_BYTES`` long, else anyone could forge tokens."""
        if not self.secret:
            raise SettingsError(
                f"DUOLOGUE_SECRET is not set: a gateway needs a random secret of at least "
                f"{MIN_SECRET_BYTES} bytes (`duologue dev` makes its own), e.g. "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        size = len(self.secret.encode())
        if size < MIN_SECRET_BYTES:
            raise SettingsError(f"DUOLOGUE_SECRET is {size} bytes long: a gateway needs at "
                                f"least {MIN_SECRET_BYTES} random bytes")
        return self

    def require(self, *names: str) -> Settings:
        """Fail with a clear message when a required value is empty."""
        env_names = {"redis_url": "REDIS_URL", "database_url": "DATABASE_URL",
                     "secret": "DUOLOGUE_SECRET"}
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{env_names[name]} is not set")
        return self
