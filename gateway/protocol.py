"""Client frame parsing: one text frame to a typed client frame, or ``FrameError``."""

from __future__ import annotations

import msgspec

from gateway.errors import FrameError, UnknownTypeError
from schemas.client import CLIENT_TYPES, ClientFrame, decode_client_frame


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
