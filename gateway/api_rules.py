"""The value rules of protocol.md as JSON Schema, for the OpenAPI and AsyncAPI documents.

``schemas/`` holds the shapes (msgspec Structs); the rules on values live in ``domain``
so that a rule break is ``invalid``, not ``bad_frame``. The documents need both: these
keywords are merged into the properties ``msgspec.json.schema_components`` writes, by
field name, so every field of that name in any frame or body carries the same rule.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

U64 = 2**64 - 1  # a part of a Redis stream id
USER = "[A-Za-z0-9_.-]{1,64}"
MAX_WATCHED = 200  # users per `watch` / `GET /v1/presence`


def at_most(limit: int) -> str:
    """A regex (no anchors) for the decimal numbers 0..``limit`` without leading zeros."""
    digits = str(limit)
    options = ["0"]
    if len(digits) > 1:
        options.append(f"[1-9][0-9]{{0,{len(digits) - 2}}}")
    for i, digit in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(digit) > low:
            rest = len(digits) - i - 1
            tail = f"[0-9]{{{rest}}}" if rest else ""
            options.append(f"{digits[:i]}[{low}-{int(digit) - 1}]{tail}")
    options.append(digits)
    return "(?:" + "|".join(options) + ")"


# str.isspace's characters, spelled out: regex engines disagree on \s (\x1c-\x1f)
SPACE = ("\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f"
         "\\u205f\\u3000")

_PART = at_most(U64)
EVENT_ID_RE = f"(?:0|{_PART}-{_PART})"  # "0": before the first event
THREAD_RE = f"dm:{USER}:{USER}"

USER_ID: Schema = {"type": "string", "pattern": f"^{USER}$",
                   "description": "1-64 characters of [A-Za-z0-9_.-]"}
THREAD: Schema = {"type": "string", "pattern": f"^{THREAD_RE}$",
                  "description": "dm:<a>:<b>, the two user ids sorted bytewise",
                  "examples": ["dm:alice:bob"]}
EVENT_ID: Schema = {"type": "string", "pattern": f"^{EVENT_ID_RE}$",
                    "description": "a stream id <ms>-<seq> (\"0\": before the first event); "
                                   "ids of one thread compare in stream order",
                    "examples": ["1732467890123-0"]}
CLIENT_MSG_ID: Schema = {"type": "string", "pattern": "^[!-~]{1,64}$",
                         "description": "1-64 printable ASCII characters, no space; commands "
                                        "are idempotent per (sender, thread, client_msg_id)"}
EMOJI: Schema = {"type": "string", "minLength": 1, "maxLength": 16,
                 "pattern": f"^[^{SPACE}\\x00-\\x1f\\x7f-\\x9f]+$",
                 "description": "1-16 code points, no whitespace or control character"}
EPOCH_MS: Schema = {"type": "integer", "minimum": 0, "description": "epoch milliseconds"}


def body(max_body: int) -> Schema:
    return {"type": "string", "minLength": 1, "maxLength": max_body,
            "pattern": f"^[^\\x00]*[^\\x00{SPACE}][^\\x00]*$",
            "description": f"1-{max_body} code points, not all whitespace, no NUL"}


def field_rules(max_body: int | None = None) -> dict[str, Schema]:
    """Rules by field name; a field whose value may be ``null`` keeps its ``null``.

    ``max_body``: the body rule of commands; None for what the server sends (a body it
    stored under another limit, or edited, is still a body)."""
    rules: dict[str, Schema] = {
        "thread": THREAD, "to": USER_ID, "user": USER_ID, "with": USER_ID, "sender": USER_ID,
        "reader": USER_ID, "by": USER_ID, "recipient": USER_ID,
        "id": EVENT_ID, "target": EVENT_ID, "up_to": EVENT_ID, "after": EVENT_ID,
        "last_id": EVENT_ID, "reply_to": EVENT_ID, "projected_up_to": EVENT_ID,
        "client_msg_id": CLIENT_MSG_ID, "emoji": EMOJI,
        "ts": EPOCH_MS, "sent_at": EPOCH_MS, "edited_at": EPOCH_MS, "last_seen": EPOCH_MS,
        "exp": {"type": "integer", "description": "the token's expiry, epoch seconds"},
        "retry_after_ms": {"type": "integer", "minimum": 1},
        "unread": {"type": "integer", "minimum": 0},
    }
    if max_body is not None:
        rules["body"] = body(max_body)
    return rules


# fields whose name says nothing of their rule (`users` holds user ids, ...)
ITEM_RULES = {"users": USER_ID, "blocked_by": USER_ID}


def apply_rules(components: dict[str, Schema], rules: dict[str, Schema]) -> None:
    """Merge ``rules`` into the properties of every component (in place)."""
    for name, component in components.items():
        for field, prop in component.get("properties", {}).items():
            if (name, field) in _EXEMPT:
                continue
            if field in rules:
                _constrain(prop, rules[field])
            elif field in ITEM_RULES and prop.get("type") == "array":
                prop["items"] = {**prop["items"], **ITEM_RULES[field]}


# the same name with another meaning: an error's ref echoes whatever the client sent
_EXEMPT = frozenset({("Error", "ref")})


def _constrain(prop: Schema, rule: Schema) -> None:
    if "anyOf" in prop:  # `T | None`: constrain the non-null branch
        for branch in prop["anyOf"]:
            if branch.get("type") == rule["type"]:
                branch.update(rule)
    elif prop.get("type") == rule["type"]:
        prop.update(rule)
