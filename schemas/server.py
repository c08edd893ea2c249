"""Server -> client frames, tagged by ``type``.

The ``event`` frame is the hot path: it is assembled from the stored payload bytes
without re-encoding (here and, byte for byte, in the append script), and
``EventFrame`` describes the same shape for clients and tests.
"""

from __future__ import annotations

import msgspec

from schemas.events import Event


class ThreadSummary(msgspec.Struct, frozen=True, kw_only=True):
    thread: str
    with_: str = msgspec.field(name="with")
    last_id: str


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    max_body: int
    max_frame: int


class Hello(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="hello",
            omit_defaults=True):
    user: str
    threads: list[ThreadSummary]  # the newest HELLO_THREADS at most (protocol.md section 8)
    limits: Limits
    more_threads: bool = False  # sent (true) only when the user has more threads


HELLO_THREADS = 500


class EventFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="event"):
    thread: str
    id: str
    ts: int
    event: Event


class Ack(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="ack"):
    ref: str
    thread: str
    id: str
    ts: int
    duplicate: bool


class Synced(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="synced"):
    thread: str
    last_id: str
    recovered: bool


class TypingNotice(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="typing"):
    thread: str
    user: str


class Refreshed(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="refreshed"):
    exp: int


class Error(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="error"):
    code: str
    message: str
    ref: str | None = None
    retry_after_ms: int | msgspec.UnsetType = msgspec.UNSET


class Presence(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="presence"):
    user: str
    online: bool
    last_seen: int | None  # epoch ms the user's last connection closed; None: online or never


ServerFrame = Hello | EventFrame | Ack | Synced | TypingNotice | Refreshed | Error | Presence

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[ServerFrame] = msgspec.json.Decoder(ServerFrame)


def encode_frame(frame: ServerFrame) -> str:
    return _encoder.encode(frame).decode()


def decode_server_frame(data: bytes | str) -> ServerFrame:
    return _decoder.decode(data)


def event_frame(thread: str, event_id: str, payload: str) -> str:
    """The ``event`` frame for a stored payload; ``thread`` and ids need no escaping."""
    ts = event_id.partition("-")[0]
    return (
        f'{{"type":"event","thread":"{thread}","id":"{event_id}","ts":{ts},"event":{payload}}}'
    )
