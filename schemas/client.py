"""Client -> server frames, tagged by ``type``.

Shape only (required fields and JSON types); the rules on values (user ids, body
length, ...) live in ``domain`` so that a rule break is ``invalid``, not ``bad_frame``.
Unknown fields are ignored, so older servers accept newer clients' frames.
"""

from __future__ import annotations

import msgspec


class Send(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="send"):
    body: str
    client_msg_id: str
    to: str | None = None
    thread: str | None = None
    reply_to: str | None = None  # v1.1


class Edit(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="edit"):
    thread: str
    target: str
    body: str
    client_msg_id: str


class Delete(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="delete"):
    thread: str
    target: str
    client_msg_id: str


class Read(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="read"):
    thread: str
    up_to: str
    client_msg_id: str


class Sync(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="sync"):
    thread: str
    after: str


class Typing(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="typing"):
    thread: str


class Refresh(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="refresh"):
    token: str


class React(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="react"):
    thread: str
    target: str
    emoji: str
    client_msg_id: str


class Unreact(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="unreact"):
    thread: str
    target: str
    emoji: str
    client_msg_id: str


class Block(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="block"):
    thread: str
    client_msg_id: str


class Unblock(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="unblock"):
    thread: str
    client_msg_id: str


class Watch(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="watch"):
    users: list[str]


ClientFrame = (Send | Edit | Delete | Read | Sync | Typing | Refresh | React | Unreact | Block
               | Unblock | Watch)
CLIENT_TYPES = frozenset({"send", "edit", "delete", "read", "sync", "typing", "refresh",
                          "react", "unreact", "block", "unblock", "watch"})

_decoder: msgspec.json.Decoder[ClientFrame] = msgspec.json.Decoder(ClientFrame)


def decode_client_frame(data: bytes | str) -> ClientFrame:
    """Decode one client frame; raises ``msgspec.DecodeError`` (incl. ValidationError)."""
    return _decoder.decode(data)
