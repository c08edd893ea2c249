"""User ids, thread ids and event ids (protocol.md section 1)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from domain.errors import ForbiddenError, InvalidError

_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_EVENT_ID = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")  # canonical: no leading 0
_CLIENT_MSG_ID = re.compile(r"[!-~]{1,64}")

_U64 = 2**64 - 1  # Redis stream ids are two unsigned 64-bit integers
EventKey = tuple[int, int]
BEFORE_FIRST: EventKey = (0, 0)


def is_user_id(value: str) -> bool:
    return _USER.fullmatch(value) is not None


def check_user_id(value: str) -> str:
    if not is_user_id(value):
        raise InvalidError(f"not a valid user id: {value[:80]!r}")
    return value


def thread_id(a: str, b: str) -> str:
    """The canonical thread of two users: ``dm:<a>:<b>`` sorted bytewise."""
    check_user_id(a)
    check_user_id(b)
    low, high = sorted((a, b), key=str.encode)
    return f"dm:{low}:{high}"


@lru_cache(maxsize=1 << 14)
def participants(thread: str) -> tuple[str, str]:
    """The two users of a canonical thread id; ``invalid`` for anything else."""
    prefix, _, rest = thread.partition(":")
    a, _, b = rest.partition(":")
    if prefix != "dm" or not is_user_id(a) or not is_user_id(b):
        raise InvalidError(f"not a valid thread id: {thread[:140]!r}")
    if a.encode() > b.encode():
        raise InvalidError(f"not a valid thread id: {thread[:140]!r} (the users of a thread "
                           f"id are sorted: {thread_id(a, b)!r})")
    return a, b


def check_participant(thread: str, user: str) -> str:
    """Return the other participant; ``forbidden`` if ``user`` is not in ``thread``."""
    a, b = participants(thread)
    if user == a:
        return b
    if user == b:
        return a
    raise ForbiddenError("not a participant of this thread")


@lru_cache(maxsize=1 << 16)
def event_key(value: str) -> EventKey:
    """Sort key of an event id (``"<ms>-<seq>"``; ``"0"`` is before the first event)."""
    if value == "0":
        return BEFORE_FIRST
    match = _EVENT_ID.fullmatch(value)
    if match is None or int(match[1]) > _U64 or int(match[2]) > _U64:
        raise InvalidError(f"not a valid event id: {value[:80]!r}")
    return int(match[1]), int(match[2])


def ms_of(event_id: str) -> int:
    """The Unix time in milliseconds at which the event was stored (its id's first part)."""
    return event_key(event_id)[0]


def check_event_id(value: str) -> str:
    event_key(value)
    return value


def check_client_msg_id(value: str) -> str:
    if _CLIENT_MSG_ID.fullmatch(value) is None:
        raise InvalidError("client_msg_id must be 1-64 printable ASCII characters, no space")
    return value


def check_body(body: str, max_body: int) -> str:
    if not body or len(body) > max_body:
        raise InvalidError(f"body must be 1 to {max_body} characters")
    if body.isspace():
        raise InvalidError("body must not be all whitespace")
    if "\x00" in body:
        raise InvalidError("body must not contain NUL")
    return body


def check_emoji(emoji: str) -> str:
    """1-16 code points, none whitespace or a control character (joiners and variation
    selectors are fine)."""
    if not 1 <= len(emoji) <= 16:
        raise InvalidError("emoji must be 1 to 16 characters")
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in emoji):
        raise InvalidError("emoji must not contain whitespace or control characters")
    return emoji


SORT_BASE = 10**20  # every sequence number is below 2**64 < 10**20


def sort_key(value: str) -> int:
    """One integer that sorts like the event id (the ``key`` columns in Postgres).

    Written ``<ms><seq padded to 20 digits>``, so ``1732467890123-5`` is
    ``173246789012300000000000000000005``: readable and ordered.
    """
    ms, seq = event_key(value)
    return ms * SORT_BASE + seq


def successor(event_id: str) -> str:
    """The smallest event id above ``event_id``."""
    ms, seq = event_key(event_id)
    return f"{ms}-{seq + 1}"


def event_id_of(key: EventKey) -> str:
    return "0" if key == BEFORE_FIRST else f"{key[0]}-{key[1]}"
