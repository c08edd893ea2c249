"""Every failure a client is told about, in one table: exception type -> (wire code,
HTTP status), looked up along the class hierarchy, so one row covers a family.

The WebSocket answers with an ``error`` frame carrying the code (protocol.md, Errors);
HTTP answers ``{"error": {"code", "message"}}`` with the status. An exception the table
does not name is a bug: logged with its traceback, ``internal`` to the client (and the
socket closed with 1011).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from redis.exceptions import RedisClusterException, RedisError

from domain.errors import BlockedError, DomainError, ForbiddenError, InvalidError, NotFoundError


class FrameError(Exception):
    """The frame is not valid JSON of a known shape (msgspec's path in the message)."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref


class UnknownTypeError(FrameError):
    pass


class RateLimitedError(Exception):
    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"over the rate limit; retry in {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class UnavailableError(Exception):
    """Redis or Postgres cannot answer now; nothing was changed; retry."""


class NotReplicatedError(UnavailableError):
    """``DUOLOGUE_ACK_REPLICAS``: fewer replicas than asked confirmed the event in time. It
    is stored on the primary; a resend with the same client_msg_id answers its id."""

    def __init__(self, held: int, wanted: int) -> None:
        super().__init__(f"{held} of the {wanted} replicas confirmed the event in time; "
                         "retry with the same client_msg_id")

class FencedError(UnavailableError):
    """Redis restarted or failed over and no projector has checked the partition against
    the archive yet (``adapters.record.FENCED``): nothing was read or appended."""

    def __init__(self) -> None:
        super().__init__("the event store is being checked after a Redis restart; retry")


class UnauthorizedError(Exception):
    """HTTP only: no token, or a token that does not verify."""

    def __init__(self, message: str, token_given: bool) -> None:
        super().__init__(message)
        self.message = message
        # RFC 6750: a bare challenge when no token came, else name the problem
        self.challenge = 'Bearer error="invalid_token"' if token_given else "Bearer"


class TooLargeError(Exception):
    """HTTP only: the request body is over the frame limit."""


@dataclass(frozen=True, slots=True)
class WireError:
    code: str
    status: int


INVALID = WireError("invalid", 400)
UNAVAILABLE = WireError("unavailable", 503)

TABLE: dict[type[BaseException], WireError] = {
    DomainError: INVALID,
    InvalidError: INVALID,
    ForbiddenError: WireError("forbidden", 403),
    NotFoundError: WireError("not_found", 404),
    BlockedError: WireError("blocked", 403),
    FrameError: WireError("bad_frame", 400),
    UnknownTypeError: WireError("unknown_type", 400),
    RateLimitedError: WireError("rate_limited", 429),
    UnauthorizedError: WireError("unauthorized", 401),
    TooLargeError: WireError("too_large", 413),
    UnavailableError: UNAVAILABLE,
    # protocol.md section 8: every Redis error is `unavailable` for that command and the
    # socket stays open: connection lost or timed out, LOADING, READONLY after failover,
    # OOM with noeviction, NOREPLICAS, MASTERDOWN, BUSY, MISCONF, a cluster's TRYAGAIN ...
    RedisError: UNAVAILABLE,
    RedisClusterException: UNAVAILABLE,  # a cluster with no node to answer for a slot
    psycopg.OperationalError: UNAVAILABLE,  # PoolTimeout included
    ConnectionError: UNAVAILABLE,
    TimeoutError: UNAVAILABLE,
}
# codes answered without an exception of ours (Starlette's own refusals, bugs)
STATUS = {e.code: e.status for e in TABLE.values()} | {"method_not_allowed": 405,
                                                       "internal": 500}
REFUSALS = frozenset({"bad_frame", "unknown_type", "invalid"})  # counted toward close 1008


def wire_error(exc: BaseException) -> WireError | None:
    """The table's row for ``exc``: the first class of its hierarchy the table names."""
    for cls in type(exc).__mro__:
        if cls in TABLE:
            return TABLE[cls]
    return None


UNAVAILABLE_MESSAGE = ("the event store could not take this now; retry with the same "
                       "client_msg_id (a repeat is never appended twice)")


def client_message(exc: BaseException, code: str) -> str:
    """What the client is told: a driver's own words (hosts, ports, Redis's script names)
    stay in the logs."""
    if code == "unavailable" and not isinstance(exc, UnavailableError):
        return UNAVAILABLE_MESSAGE
    return str(getattr(exc, "message", None) or exc) or code


def code_for(exc: BaseException) -> str | None:
    """The wire code of ``exc`` (None: not one the client may be told about)."""
    row = wire_error(exc)
    return None if row is None else row.code
