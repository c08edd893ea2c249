"""Frames and stored events: encoding, decoding, and payloads saved by older versions."""

from __future__ import annotations

import msgspec
import pytest

from schemas.client import Send, decode_client_frame
from schemas.events import MessageSent, ReadUpTo, decode_event, encode_event
from schemas.server import (
    Error,
    EventFrame,
    Hello,
    Limits,
    ThreadSummary,
    decode_server_frame,
    encode_frame,
    event_frame,
)

# Payloads exactly as v0.1 stored them in thread streams: they must keep decoding.
SAVED = [
    b'{"kind":"MessageSent","sender":"alice","body":"hi","client_msg_id":"c-1"}',
    b'{"kind":"MessageEdited","sender":"alice","target":"1-0","body":"x","client_msg_id":"c"}',
    b'{"kind":"MessageDeleted","sender":"alice","target":"1-0","client_msg_id":"c-3"}',
    b'{"kind":"ReadUpTo","reader":"bob","up_to":"1-0"}',
]


@pytest.mark.parametrize("payload", SAVED)
def test_saved_payloads_still_decode_and_round_trip(payload):
    assert encode_event(decode_event(payload)) == payload


def test_stored_events_tolerate_fields_added_later():
    event = decode_event(b'{"kind":"ReadUpTo","reader":"bob","up_to":"1-0","device":"x"}')
    assert event == ReadUpTo(reader="bob", up_to="1-0")


def test_event_frame_bytes_match_the_struct():
    payload = encode_event(MessageSent(sender="a", body='quote " and \\ é', client_msg_id="c"))
    frame = event_frame("dm:a:b", "1732467890123-4", payload.decode())
    decoded = decode_server_frame(frame)
    assert decoded == EventFrame(thread="dm:a:b", id="1732467890123-4", ts=1732467890123,
                                 event=decode_event(payload))


def test_hello_uses_with_and_error_omits_retry_unless_set():
    hello = Hello(user="a", threads=[ThreadSummary(thread="dm:a:b", with_="b", last_id="1-0")],
                  limits=Limits(max_body=4000, max_frame=65536))
    assert '"with":"b"' in encode_frame(hello)
    assert msgspec.json.decode(encode_frame(Error(code="invalid", message="m"))) == {
        "type": "error", "code": "invalid", "message": "m", "ref": None}
    limited = Error(code="rate_limited", message="m", ref="c", retry_after_ms=50)
    assert msgspec.json.decode(encode_frame(limited))["retry_after_ms"] == 50


def test_client_frames_decode_by_tag_and_ignore_unknown_fields():
    frame = decode_client_frame('{"type":"send","to":"b","body":"x","client_msg_id":"c","v":2}')
    assert frame == Send(body="x", client_msg_id="c", to="b")
    with pytest.raises(msgspec.ValidationError):
        decode_client_frame('{"type":"send","to":"b","client_msg_id":"c"}')
