"""The opaque ``next_before`` cursor of ``GET /v1/threads`` (protocol.md section 8).

Threads are listed newest activity first, ties by thread id: a page ends at a
(``last_key``, thread) and the next one starts strictly after it. The cursor carries that
pair, base64url-encoded so clients treat it as the opaque token it is meant to be.
"""

from __future__ import annotations

import base64
import binascii

from domain.errors import InvalidError
from domain.ids import participants, sort_key
from schemas.http import ThreadView

Cursor = tuple[int, str]  # (the thread's last event's sort key, the thread)


def encode(last: ThreadView) -> str:
    raw = f"{sort_key(last.last_id)} {last.thread}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str) -> Cursor:
    """The position a ``before`` cursor names; ``invalid`` for anything not made here."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        key, thread = raw.split(" ", 1)
        if not key.isdigit() or len(key) > 40:
            raise ValueError(raw)
        participants(thread)  # a thread id, else InvalidError
        return int(key), thread
    except (ValueError, binascii.Error, UnicodeDecodeError, InvalidError):
        raise InvalidError(f"before is not a cursor this API made: {text[:60]!r}") from None
