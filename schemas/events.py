"""Stored events: the payload of every thread-stream entry, tagged by ``kind``.

Evolution rule: new fields get defaults, types never change, and the decoder never
forbids unknown fields, so every payload ever stored keeps decoding.
"""

from __future__ import annotations

import msgspec


class MessageSent(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="MessageSent",
                  omit_defaults=True):
    sender: str
    body: str
    client_msg_id: str
    reply_to: str | None = None  # v1.1: a MessageSent of the same thread; omitted when None


class MessageEdited(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="MessageEdited"
):
    sender: str
    target: str
    body: str
    client_msg_id: str


class MessageDeleted(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="MessageDeleted"
):
    sender: str
    target: str
    client_msg_id: str


class ReadUpTo(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ReadUpTo"):
    reader: str
    up_to: str


class ReactionAdded(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ReactionAdded"
):
    sender: str
    target: str
    emoji: str
    client_msg_id: str


class ReactionRemoved(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ReactionRemoved"
):
    sender: str
    target: str
    emoji: str
    client_msg_id: str


class ThreadBlocked(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ThreadBlocked"
):
    by: str
    client_msg_id: str


class ThreadUnblocked(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="ThreadUnblocked"
):
    by: str
    client_msg_id: str


Event = (MessageSent | MessageEdited | MessageDeleted | ReadUpTo | ReactionAdded
         | ReactionRemoved | ThreadBlocked | ThreadUnblocked)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Event] = msgspec.json.Decoder(Event)


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> Event:
    return _decoder.decode(data)
