"""Client frame parsing and the table from exceptions to wire error codes."""

from __future__ import annotations

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.errors import DomainError
from schemas.client import CLIENT_TYPES, ClientFrame, decode_client_frame


class FrameError(Exception):
    code = "bad_frame"

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ref = ref


class UnknownTypeError(FrameError):
    code = "unknown_type"


class RateLimitedError(Exception):
    code = "rate_limited"

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"over the rate limit; retry in {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class UnavailableError(Exception):
    code = "unavailable"


class FencedError(UnavailableError):
    """Redis restarted or failed over and no projector has checked the partition against
    the archive yet (``adapters.record.FENCED``): nothing was read or appended."""

    def __init__(self) -> None:
        super().__init__("the event store is being checked after a Redis restart; retry")


CODES: dict[type[BaseException], str] = {
    RedisConnectionError: "unavailable",  # includes BusyLoadingError
    RedisTimeoutError: "unavailable",
    ReadOnlyError: "unavailable",  # a replica after failover
    OutOfMemoryError: "unavailable",  # maxmemory with noeviction: nothing was written
    ConnectionError: "unavailable",
    TimeoutError: "unavailable",
}
REFUSALS = frozenset({"bad_frame", "unknown_type", "invalid"})  # counted toward close 1008


def code_for(exc: BaseException) -> str | None:
    """The wire code of an exception, looked up along its class hierarchy."""
    own = getattr(exc, "code", None)
    if isinstance(exc, DomainError | FrameError | RateLimitedError | UnavailableError):
        return str(own)
    if isinstance(exc, ResponseError) and str(exc).startswith(("MISCONF", "LOADING")):
        return "unavailable"  # Redis refuses writes until its disk or load recovers
    for cls in type(exc).__mro__:
        if cls in CODES:
            return CODES[cls]
    return None


def parse(text: str | None) -> ClientFrame:
    """Decode one client frame or raise ``FrameError``/``UnknownTypeError``."""
    if text is None:
        raise FrameError("frames must be UTF-8 JSON text frames")
    try:
        return decode_client_frame(text)
    except msgspec.DecodeError as exc:
        raise _classify(text, exc) from None
    except RecursionError:  # msgspec's answer to JSON nested ~1000 levels deep
        raise FrameError("JSON nested too deeply") from None


def _classify(text: str, exc: msgspec.DecodeError) -> FrameError:
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return FrameError("not JSON")
    except RecursionError:
        return FrameError("JSON nested too deeply")
    if not isinstance(value, dict):
        return FrameError("not a JSON object")
    ref = value.get("client_msg_id")
    ref = ref if isinstance(ref, str) else None
    kind = value.get("type")
    if not isinstance(kind, str):
        return FrameError("`type` missing or not a string", ref)
    if kind not in CLIENT_TYPES:
        return UnknownTypeError(f"unknown frame type {kind[:40]!r}", ref)
    return FrameError(str(exc), ref)
