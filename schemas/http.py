"""HTTP request and response bodies (protocol.md section 3).

Requests ignore unknown fields, like client frames; shape only, the rules on values
live in ``domain``.
"""

from __future__ import annotations

import msgspec


class PostMessage(msgspec.Struct, frozen=True, kw_only=True):
    body: str
    client_msg_id: str
    reply_to: str | None = None  # v1.1


class Reaction(msgspec.Struct, frozen=True, kw_only=True):
    emoji: str
    users: list[str]


class MessageView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    sender: str
    body: str | None
    sent_at: int  # epoch milliseconds, like the WebSocket `ts`
    edited_at: int | None
    deleted: bool
    reply_to: str | None = None  # v1.1
    reactions: list[Reaction] = msgspec.field(default_factory=list)  # v1.1


class ThreadView(msgspec.Struct, frozen=True, kw_only=True):
    thread: str
    with_: str = msgspec.field(name="with")
    last_id: str
    last_message: MessageView | None
    unread: int
    blocked_by: list[str] = msgspec.field(default_factory=list)  # v1.1


class ThreadList(msgspec.Struct, frozen=True, kw_only=True):
    threads: list[ThreadView]
    next_before: str | None = None  # the next page's ``before``; null on the last page


class MessagePage(msgspec.Struct, frozen=True, kw_only=True):
    thread: str
    messages: list[MessageView]
    projected_up_to: str
    next_before: str | None


class Posted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    ts: int
    duplicate: bool


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: ErrorDetail


class PresenceView(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    online: bool
    last_seen: int | None


class PresenceList(msgspec.Struct, frozen=True, kw_only=True):
    presence: list[PresenceView]


class SearchHit(msgspec.Struct, frozen=True, kw_only=True):
    thread: str
    id: str
    sender: str
    body: str
    sent_at: int
    edited_at: int | None
    reply_to: str | None


class SearchResults(msgspec.Struct, frozen=True, kw_only=True):
    results: list[SearchHit]
    next_before: str | None


HttpBody = (ThreadList | MessagePage | Posted | ErrorBody | PresenceList | SearchResults)

_encoder = msgspec.json.Encoder()
_post_decoder: msgspec.json.Decoder[PostMessage] = msgspec.json.Decoder(PostMessage)


def encode_body(body: HttpBody) -> bytes:
    return _encoder.encode(body)


def decode_post_message(data: bytes) -> PostMessage:
    """Raises ``msgspec.DecodeError`` (incl. ValidationError, with the JSON path)."""
    return _post_decoder.decode(data)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /healthz``: the process is alive."""

    status: str


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /readyz``: each backing store's answer ("ok", "unavailable", "not configured")."""

    redis: str
    postgres: str
