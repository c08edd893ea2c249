"""permessage-deflate as browsers offer it (protocol.md section 2 says nothing; the
policy is docs/benchmarks.md's "permessage-deflate"): per-message by default, so an idle
socket keeps no zlib state; frames still round-trip compressed."""

from __future__ import annotations

import pytest
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate

from tests.support import Client, token, uid


async def open_deflating(gateway, user: str) -> Client:
    ws = await websockets.connect(gateway.ws_url, compression="deflate",
                                  additional_headers={"Authorization": f"Bearer {token(user)}"})
    client = Client(ws, user)
    await client.next("hello")
    return client


@pytest.mark.parametrize(("policy", "takeover"), [
    (None, False),  # the default: per-message
    ("per-message", False),
    ("context", True),
])
async def test_deflate_is_negotiated_and_a_long_body_round_trips(start_gateway, policy,
                                                                 takeover):
    gateway = start_gateway(**({"DUOLOGUE_WS_COMPRESSION": policy} if policy else {}))
    alice, bob = uid("a"), uid("b")
    a, b = await open_deflating(gateway, alice), await open_deflating(gateway, bob)
    try:
        (extension,) = a.ws.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        assert extension.remote_no_context_takeover is not takeover  # the server's side
        assert extension.local_no_context_takeover is not takeover
        body = "lorem ipsum dolor sit amet " * 140
        for n in range(3):  # several messages: no state lost between them either way
            ack = await a.say(bob, body + str(n))
            event = await b.next("event", id=ack["id"])
            assert event["event"]["body"] == body + str(n)
    finally:
        await a.close()
        await b.close()


async def test_compression_off_is_never_negotiated(start_gateway):
    gateway = start_gateway(DUOLOGUE_WS_COMPRESSION="off")
    client = await open_deflating(gateway, uid("a"))
    try:
        assert client.ws.protocol.extensions == []
    finally:
        await client.close()


def test_an_unknown_policy_is_refused_with_the_variable_named():
    from adapters.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="DUOLOGUE_WS_COMPRESSION must be one of"):
        Settings.from_env({"DUOLOGUE_WS_COMPRESSION": "max"})


def test_frames_written_together_are_framed_as_websockets_frames_them():
    """The one-write path frames text itself (gateway/ws_protocol.py): byte for byte what
    the websockets library writes, at each length encoding of RFC 6455 section 5.2."""
    from websockets.frames import Frame, Opcode

    from gateway.ws_protocol import text_header

    for length in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        data = b"x" * length
        assert text_header(length) + data == Frame(Opcode.TEXT, data).serialize(mask=False), length
