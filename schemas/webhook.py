"""The body of an offline notification (protocol.md section 6): what a webhook receiver gets.

Fields in the contract's order; ``reply_to`` is always present (``null`` when the message
is not a reply), ``ts`` is the event's epoch ms (the first part of its id).
"""

from __future__ import annotations

import msgspec


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # "<thread>/<event id>", also the Duologue-Delivery header: receivers dedupe by it
    thread: str
    event_id: str
    recipient: str
    sender: str
    body: str
    reply_to: str | None
    ts: int


_encoder = msgspec.json.Encoder()


def encode_notification(notification: Notification) -> bytes:
    return _encoder.encode(notification)


def encode_notifications(notifications: list[Notification]) -> bytes:
    """A JSON array of bodies, each exactly as ``encode_notification`` makes it."""
    return _encoder.encode(notifications)


def delivery_id(thread: str, event_id: str) -> str:
    return f"{thread}/{event_id}"
