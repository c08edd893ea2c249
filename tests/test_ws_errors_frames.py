"""protocol.md section 2, Errors: `bad_frame` (not JSON, not an object, a missing or
mistyped field, binary frames, lone surrogates) and `unknown_type`; the socket stays
usable.
"""

from __future__ import annotations

import json

import pytest

from tests.support import thread_of, uid
from tests.ws_errors_support import Frame, assert_error, assert_usable, opened, send_raw, settle

# -- bad_frame ---------------------------------------------------------------------------

BAD_FRAMES: dict[str, tuple[Frame, str | None]] = {
    "not_json": (lambda me, o, t: "hello there", None),
    "truncated_json": (lambda me, o, t: '{"type":"send"', None),
    "empty_text": (lambda me, o, t: "", None),
    "json_with_trailing_garbage": (lambda me, o, t: json.dumps({"type": "typing",
                                                                "thread": t}) + " x", None),
    "two_objects": (lambda me, o, t: json.dumps({"type": "typing", "thread": t}) * 2, None),
    "deeply_nested_array": (lambda me, o, t: "[" * 5000 + "]" * 5000, None),
    "deeply_nested_object": (lambda me, o, t: '{"a":' * 3000 + "1" + "}" * 3000, None),
    "json_array": (lambda me, o, t: [{"type": "send", "to": o, "body": "x",
                                      "client_msg_id": "r-arr"}], None),
    "json_number": (lambda me, o, t: "42", None),
    "json_string": (lambda me, o, t: '"send"', None),
    "json_null": (lambda me, o, t: "null", None),
    "json_true": (lambda me, o, t: "true", None),
    "empty_object": (lambda me, o, t: {}, None),
    "type_missing": (lambda me, o, t: {"to": o, "body": "x", "client_msg_id": "r-1"}, "r-1"),
    "type_number": (lambda me, o, t: {"type": 1, "client_msg_id": "r-2"}, "r-2"),
    "type_null": (lambda me, o, t: {"type": None, "client_msg_id": "r-3"}, "r-3"),
    "type_list": (lambda me, o, t: {"type": ["send"], "to": o, "body": "x"}, None),
    "type_object": (lambda me, o, t: {"type": {"send": 1}}, None),
    # a required field missing, for each client frame type
    "send_body_missing": (lambda me, o, t: {"type": "send", "to": o,
                                            "client_msg_id": "r-4"}, "r-4"),
    "send_client_msg_id_missing": (lambda me, o, t: {"type": "send", "to": o, "body": "x"}, None),
    # docs/protocol-notes.md: neither `to` nor `thread` is a required field missing
    "send_to_and_thread_missing": (lambda me, o, t: {"type": "send", "body": "x",
                                                     "client_msg_id": "r-nd"}, "r-nd"),
    "send_to_and_thread_null": (lambda me, o, t: {"type": "send", "to": None, "thread": None,
                                                  "body": "x", "client_msg_id": "r-nn"}, "r-nn"),
    "edit_thread_missing": (lambda me, o, t: {"type": "edit", "target": "1-0", "body": "x",
                                              "client_msg_id": "r-5"}, "r-5"),
    "edit_target_missing": (lambda me, o, t: {"type": "edit", "thread": t, "body": "x",
                                              "client_msg_id": "r-6"}, "r-6"),
    "edit_body_missing": (lambda me, o, t: {"type": "edit", "thread": t, "target": "1-0",
                                            "client_msg_id": "r-7"}, "r-7"),
    "edit_client_msg_id_missing": (lambda me, o, t: {"type": "edit", "thread": t,
                                                     "target": "1-0", "body": "x"}, None),
    "delete_thread_missing": (lambda me, o, t: {"type": "delete", "target": "1-0",
                                                "client_msg_id": "r-8"}, "r-8"),
    "delete_target_missing": (lambda me, o, t: {"type": "delete", "thread": t,
                                                "client_msg_id": "r-9"}, "r-9"),
    "delete_client_msg_id_missing": (lambda me, o, t: {"type": "delete", "thread": t,
                                                       "target": "1-0"}, None),
    "read_thread_missing": (lambda me, o, t: {"type": "read", "up_to": "1-0",
                                              "client_msg_id": "r-10"}, "r-10"),
    "read_up_to_missing": (lambda me, o, t: {"type": "read", "thread": t,
                                             "client_msg_id": "r-11"}, "r-11"),
    "read_client_msg_id_missing": (lambda me, o, t: {"type": "read", "thread": t,
                                                     "up_to": "1-0"}, None),
    "sync_thread_missing": (lambda me, o, t: {"type": "sync", "after": "0"}, None),
    "sync_after_missing": (lambda me, o, t: {"type": "sync", "thread": t}, None),
    "typing_thread_missing": (lambda me, o, t: {"type": "typing"}, None),
    "refresh_token_missing": (lambda me, o, t: {"type": "refresh"}, None),
    # a field of the wrong type
    "send_body_number": (lambda me, o, t: {"type": "send", "to": o, "body": 5,
                                           "client_msg_id": "r-12"}, "r-12"),
    "send_body_null": (lambda me, o, t: {"type": "send", "to": o, "body": None,
                                         "client_msg_id": "r-13"}, "r-13"),
    "send_to_number": (lambda me, o, t: {"type": "send", "to": 7, "body": "x",
                                         "client_msg_id": "r-14"}, "r-14"),
    "send_thread_list": (lambda me, o, t: {"type": "send", "thread": [t], "body": "x",
                                           "client_msg_id": "r-15"}, "r-15"),
    "send_client_msg_id_number": (lambda me, o, t: {"type": "send", "to": o, "body": "x",
                                                    "client_msg_id": 12}, None),
    "send_client_msg_id_object": (lambda me, o, t: {"type": "send", "to": o, "body": "x",
                                                    "client_msg_id": {"a": "b"}}, None),
    "edit_target_number": (lambda me, o, t: {"type": "edit", "thread": t, "target": 1,
                                             "body": "x", "client_msg_id": "r-16"}, "r-16"),
    "delete_thread_bool": (lambda me, o, t: {"type": "delete", "thread": True,
                                             "target": "1-0", "client_msg_id": "r-17"}, "r-17"),
    "read_up_to_number": (lambda me, o, t: {"type": "read", "thread": t, "up_to": 0,
                                            "client_msg_id": "r-18"}, "r-18"),
    "sync_after_number": (lambda me, o, t: {"type": "sync", "thread": t, "after": 0}, None),
    "typing_thread_null": (lambda me, o, t: {"type": "typing", "thread": None}, None),
    "refresh_token_number": (lambda me, o, t: {"type": "refresh", "token": 1}, None),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
async def test_bad_frame(shared_gateway, case):
    make, ref = BAD_FRAMES[case]
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, b):
        await send_raw(a, make(me, other, thread_of(me, other)))
        assert_error(await a.next("error", timeout=5), "bad_frame", ref)
        ack = await assert_usable(a, other)
        # nothing was appended for the refused frame: the other side sees only the valid send
        await b.next("event", id=ack["id"], timeout=5)
        await settle(0.1)
        assert b.events() == []
        assert [f for f in a.frames if f.get("type") in ("ack", "error")] == []


async def test_binary_frame_is_bad_frame_and_not_executed(shared_gateway):
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, b):
        command = {"type": "send", "to": other, "body": "in binary", "client_msg_id": "bin-1"}
        await a.ws.send(json.dumps(command).encode())
        assert_error(await a.next("error", timeout=5), "bad_frame", None)
        await settle()
        assert b.events() == [] and a.events() == []
        # the same command as text is a first send, not a duplicate of anything
        ack = await a.request(dict(command))
        assert ack["type"] == "ack" and ack["duplicate"] is False


async def test_lone_surrogate_is_refused_not_fatal(shared_gateway):
    """`\\ud800` is no Unicode code point: refused as bad_frame or invalid, never stored."""
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, b):
        raw = json.dumps({"type": "send", "to": other, "body": "x", "client_msg_id": "sur"})
        await a.ws.send(raw.replace('"x"', '"\\ud800"'))
        error = await a.next("error", timeout=5)
        assert (error["code"], error["ref"]) in {("bad_frame", None), ("bad_frame", "sur"),
                                                 ("invalid", "sur")}, error
        ack = await assert_usable(a, other)
        await b.next("event", id=ack["id"], timeout=5)
        await settle(0.1)
        assert b.events() == []


# -- unknown_type ------------------------------------------------------------------------

UNKNOWN: dict[str, tuple[Frame, str | None]] = {
    "hello": (lambda me, o, t: {"type": "hello"}, None),
    "nope": (lambda me, o, t: {"type": "nope"}, None),
    "empty": (lambda me, o, t: {"type": ""}, None),
    "server_frame_ack": (lambda me, o, t: {"type": "ack", "ref": "x"}, None),
    "uppercase_send": (lambda me, o, t: {"type": "SEND", "to": o, "body": "x",
                                         "client_msg_id": "u-1"}, "u-1"),
    "padded_send": (lambda me, o, t: {"type": " send", "to": o, "body": "x",
                                      "client_msg_id": "u-2"}, "u-2"),
    "with_client_msg_id": (lambda me, o, t: {"type": "nope", "client_msg_id": "u-3"}, "u-3"),
    "long_type": (lambda me, o, t: {"type": "z" * 5000}, None),
}


@pytest.mark.parametrize("case", sorted(UNKNOWN))
async def test_unknown_type(shared_gateway, case):
    make, ref = UNKNOWN[case]
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, b):
        await send_raw(a, make(me, other, thread_of(me, other)))
        assert_error(await a.next("error", timeout=5), "unknown_type", ref)
        ack = await assert_usable(a, other)
        await b.next("event", id=ack["id"], timeout=5)
        await settle(0.1)
        assert b.events() == []


