"""Adversarial black-box tests of every error code and close code of the WebSocket contract.

protocol.md sections 1 and 2: handshake refusals (HTTP 403), the error frames
(`bad_frame`, `unknown_type`, `invalid`, `forbidden`, `not_found`, `rate_limited`,
`unavailable`), idempotency, and the close codes 1008, 1009 and 1013, plus liveness.
Everything goes through real gateway subprocesses and Redis; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import SECRET, Client, thread_of, token, uid

MAX_FRAME = 65536
Frame = Callable[[str, str, str], Any]  # (me, other, thread) -> dict or raw text


# -- helpers -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(url: str, *users: str, **kw: Any) -> AsyncIterator[list[Client]]:
    """Connected clients for ``users``, all closed on exit (no leaked sockets)."""
    made: list[Client] = []
    try:
        for user in users:
            made.append(await Client.connect(url, user, **kw))
        yield made
    finally:
        for client in made:
            await client.close()


def assert_error(frame: dict[str, Any], code: str, ref: str | None) -> None:
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert "ref" in frame and frame["ref"] == ref, frame
    assert isinstance(frame["message"], str), frame
    if code != "rate_limited":
        assert "retry_after_ms" not in frame, frame


async def assert_usable(client: Client, to: str) -> dict[str, Any]:
    """The socket still answers: a valid send is acked."""
    ack = await client.say(to, "still here")
    assert ack["type"] == "ack", ack
    return ack


async def send_raw(client: Client, frame: Any) -> None:
    if isinstance(frame, str | bytes):
        await client.ws.send(frame)
    else:
        await client.ws.send(json.dumps(frame))


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], alg: str = "none") -> str:
    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims)}."


async def assert_refused(url: str, headers: dict[str, str] | None = None) -> None:
    with pytest.raises(InvalidStatus) as info:
        ws = await websockets.connect(url, additional_headers=headers or {}, open_timeout=5)
        await ws.close()  # pragma: no cover - only reached when the gateway accepts
    assert info.value.response.status_code == 403


def padded(frame: dict[str, Any], size: int, fill: str = "x") -> str:
    """``frame`` with an unknown ``pad`` field: exactly ``size`` bytes of UTF-8 text."""
    base = len(json.dumps({**frame, "pad": ""}, separators=(",", ":"), ensure_ascii=False)
               .encode())
    width = len(fill.encode())
    pad = fill * ((size - base) // width) + "x" * ((size - base) % width)
    text = json.dumps({**frame, "pad": pad}, separators=(",", ":"), ensure_ascii=False)
    assert len(text.encode()) == size
    return text


async def settle(seconds: float = 0.3) -> None:
    """Give frames that should not arrive a chance to arrive."""
    await asyncio.sleep(seconds)


# -- handshake: HTTP 403 ---------------------------------------------------------------


def _now() -> int:
    return int(time.time())


def _signed(user: str, alg: str) -> str:
    """A token signed with the server secret, but not with HS256."""
    with warnings.catch_warnings():  # PyJWT warns that the secret is short for HS384/512
        warnings.simplefilter("ignore")
        return jwt.encode({"sub": user, "exp": _now() + 3600}, SECRET, algorithm=alg)


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "garbage": lambda u: "not-a-jwt",
    "three_garbage_parts": lambda u: "a.b.c",
    "expired": lambda u: jwt.encode({"sub": u, "exp": _now() - 5}, SECRET, algorithm="HS256"),
    "wrong_signature": lambda u: token(u, secret="another-secret-" + "y" * 40),
    "tampered_payload": lambda u: ".".join(
        [token(u).split(".")[0], b64({"sub": u + "x", "exp": _now() + 3600}),
         token(u).split(".")[2]]),
    "alg_none": lambda u: unsigned({"sub": u, "exp": _now() + 3600}),
    "alg_None": lambda u: unsigned({"sub": u, "exp": _now() + 3600}, "None"),
    "alg_none_with_hs256_signature": lambda u: unsigned(
        {"sub": u, "exp": _now() + 3600}) + token(u).split(".")[2],
    "hs512": lambda u: _signed(u, "HS512"),
    "hs384": lambda u: _signed(u, "HS384"),
    "no_exp": lambda u: jwt.encode({"sub": u}, SECRET, algorithm="HS256"),
    "exp_not_a_number": lambda u: jwt.encode(
        {"sub": u, "exp": str(_now() + 3600)}, SECRET, algorithm="HS256"),
    "no_sub": lambda u: jwt.encode({"exp": _now() + 3600}, SECRET, algorithm="HS256"),
    "sub_empty": lambda u: token(""),
    "sub_with_space": lambda u: token("ali ce"),
    "sub_65_chars": lambda u: token("a" * 65),
    "sub_with_colon": lambda u: token("a:b"),
    "sub_non_ascii": lambda u: token("alicé"),
    "sub_not_a_string": lambda u: jwt.encode(
        {"sub": 12345, "exp": _now() + 3600}, SECRET, algorithm="HS256"),
}


async def test_handshake_without_token_is_refused_with_403(shared_gateway):
    await assert_refused(shared_gateway.ws_url)
    await assert_refused(f"{shared_gateway.ws_url}?token=")
    await assert_refused(shared_gateway.ws_url, {"Authorization": "Bearer "})


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_handshake_with_bad_token_is_refused_with_403(shared_gateway, kind):
    bad = BAD_TOKENS[kind](uid("a"))
    await assert_refused(shared_gateway.ws_url, {"Authorization": f"Bearer {bad}"})
    await assert_refused(f"{shared_gateway.ws_url}?token={bad}")


async def test_handshake_token_in_other_scheme_is_refused(shared_gateway):
    good = token(uid("a"))
    await assert_refused(shared_gateway.ws_url, {"Authorization": f"Basic {good}"})
    await assert_refused(shared_gateway.ws_url, {"Authorization": good})


@pytest.mark.parametrize("how", ["header", "query"])
async def test_handshake_with_good_token_works(shared_gateway, how):
    user = uid("a") + "X" * 53  # 64 characters: the longest valid user id
    assert len(user) == 64
    if how == "header":
        ws = await websockets.connect(
            shared_gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(user)}"})
    else:
        ws = await websockets.connect(f"{shared_gateway.ws_url}?token={token(user)}")
    try:
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert hello["type"] == "hello" and hello["user"] == user
    finally:
        await ws.close()


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


# -- invalid ------------------------------------------------------------------------------
# Users: me = "Zq…", other = "aq…": bytewise "Z" < "a", so the canonical thread is
# dm:Zq…:aq…, which a case-insensitive sort would get wrong.

BAD_EVENT_IDS = ["nope", "", "1", "1-", "-1", "-", "1-0-0", "1.5-0", " 1-0", "1-0 ", "0x1-0",
                 "+1-0", "1e3-0", "\u0661-\u0660", "1-\u0661", "\uff11-0", "*", "$", "+", "-"]


def _event_id_cases() -> dict[str, tuple[Frame, bool]]:
    cases: dict[str, tuple[Frame, bool]] = {}
    for n, bad in enumerate(dict.fromkeys(BAD_EVENT_IDS)):
        label = f"{n}:{bad!r}"
        cases[f"edit_target_{label}"] = (
            lambda me, o, t, bad=bad: {"type": "edit", "thread": t, "target": bad, "body": "x"},
            True)
        cases[f"delete_target_{label}"] = (
            lambda me, o, t, bad=bad: {"type": "delete", "thread": t, "target": bad}, True)
        cases[f"read_up_to_{label}"] = (
            lambda me, o, t, bad=bad: {"type": "read", "thread": t, "up_to": bad}, True)
        cases[f"sync_after_{label}"] = (
            lambda me, o, t, bad=bad: {"type": "sync", "thread": t, "after": bad}, False)
    return cases


def _swap(thread: str) -> str:
    _, a, b = thread.split(":")
    return f"dm:{b}:{a}"


INVALID: dict[str, tuple[Frame, bool]] = {  # (frame, carries a client_msg_id)
    "to_with_space": (lambda me, o, t: {"type": "send", "to": "bo b", "body": "x"}, True),
    "to_empty": (lambda me, o, t: {"type": "send", "to": "", "body": "x"}, True),
    "to_65_chars": (lambda me, o, t: {"type": "send", "to": "b" * 65, "body": "x"}, True),
    "to_with_colon": (lambda me, o, t: {"type": "send", "to": "a:b", "body": "x"}, True),
    "to_non_ascii": (lambda me, o, t: {"type": "send", "to": "bö", "body": "x"}, True),
    "to_with_newline": (lambda me, o, t: {"type": "send", "to": o + "\n", "body": "x"}, True),
    "thread_not_canonical": (lambda me, o, t: {"type": "send", "thread": _swap(t),
                                               "body": "x"}, True),
    "thread_one_user": (lambda me, o, t: {"type": "send", "thread": f"dm:{me}", "body": "x"},
                        True),
    "thread_three_users": (lambda me, o, t: {"type": "send", "thread": f"{t}:{o}",
                                             "body": "x"}, True),
    "thread_wrong_prefix": (lambda me, o, t: {"type": "send", "thread": "DM" + t[2:],
                                              "body": "x"}, True),
    "thread_no_prefix": (lambda me, o, t: {"type": "send", "thread": t[3:], "body": "x"}, True),
    "thread_empty_user": (lambda me, o, t: {"type": "send", "thread": f"dm::{me}", "body": "x"},
                          True),
    "thread_trailing_space": (lambda me, o, t: {"type": "send", "thread": t + " ",
                                                "body": "x"}, True),
    "thread_empty": (lambda me, o, t: {"type": "send", "thread": "", "body": "x"}, True),
    "to_and_thread_differ": (lambda me, o, t: {"type": "send", "to": o,
                                               "thread": f"dm:{me}:{me}", "body": "x"}, True),
    "body_empty": (lambda me, o, t: {"type": "send", "to": o, "body": ""}, True),
    "body_spaces": (lambda me, o, t: {"type": "send", "to": o, "body": "   "}, True),
    "body_unicode_whitespace": (lambda me, o, t: {"type": "send", "to": o,
                                                  "body": "\n\t\u3000\u2003\u00a0\r"}, True),
    "body_nul": (lambda me, o, t: {"type": "send", "to": o, "body": "a\x00b"}, True),
    "body_only_nul": (lambda me, o, t: {"type": "send", "to": o, "body": "\x00"}, True),
    "body_4001_ascii": (lambda me, o, t: {"type": "send", "to": o, "body": "x" * 4001}, True),
    "body_4001_emoji": (lambda me, o, t: {"type": "send", "to": o, "body": "😀" * 4001}, True),
    "edit_body_empty": (lambda me, o, t: {"type": "edit", "thread": t, "target": "1-0",
                                          "body": ""}, True),
    "edit_body_4001_emoji": (lambda me, o, t: {"type": "edit", "thread": t, "target": "1-0",
                                               "body": "😀" * 4001}, True),
    "edit_body_whitespace": (lambda me, o, t: {"type": "edit", "thread": t, "target": "1-0",
                                               "body": " \n "}, True),
    "edit_body_nul": (lambda me, o, t: {"type": "edit", "thread": t, "target": "1-0",
                                        "body": "\x00x"}, True),
    "edit_thread_not_canonical": (lambda me, o, t: {"type": "edit", "thread": _swap(t),
                                                    "target": "1-0", "body": "x"}, True),
    "delete_thread_malformed": (lambda me, o, t: {"type": "delete", "thread": "dm:x",
                                                  "target": "1-0"}, True),
    "read_thread_not_canonical": (lambda me, o, t: {"type": "read", "thread": _swap(t),
                                                    "up_to": "1-0"}, True),
    "sync_thread_not_canonical": (lambda me, o, t: {"type": "sync", "thread": _swap(t),
                                                    "after": "0"}, False),
    "sync_thread_malformed": (lambda me, o, t: {"type": "sync", "thread": "nope",
                                                "after": "0"}, False),
    "typing_thread_not_canonical": (lambda me, o, t: {"type": "typing", "thread": _swap(t)},
                                    False),
    "typing_thread_malformed": (lambda me, o, t: {"type": "typing", "thread": "dm:a:b:c"},
                                False),
    "refresh_garbage_token": (lambda me, o, t: {"type": "refresh", "token": "garbage"}, False),
    "refresh_expired_token": (lambda me, o, t: {"type": "refresh", "token": jwt.encode(
        {"sub": me, "exp": _now() - 5}, SECRET, algorithm="HS256")}, False),
    "refresh_alg_none_token": (lambda me, o, t: {"type": "refresh", "token": unsigned(
        {"sub": me, "exp": _now() + 3600})}, False),
    **_event_id_cases(),
}

BAD_CLIENT_MSG_IDS = {"empty": "", "65_chars": "c" * 65, "space": "c 1", "non_ascii": "cé",
                      "del_char": "c\x7f", "tab": "c\t1", "newline": "c\n", "emoji": "😀"}


async def _check_invalid(url: str, frame: Frame, cmid: str | None) -> None:
    me, other = uid("Zq"), uid("aq")
    thread = thread_of(me, other)
    assert thread == f"dm:{me}:{other}"
    async with opened(url, me, other) as (a, b):
        seed = await a.say(other, "seed")
        await b.next("event", id=seed["id"], timeout=5)
        command = frame(me, other, thread)
        if cmid is not None:
            command["client_msg_id"] = cmid
        await a.send(command)
        assert_error(await a.next("error", timeout=5), "invalid", cmid)
        ack = await assert_usable(a, other)
        await b.next("event", id=ack["id"], timeout=5)
        await settle(0.1)
        assert b.events() == [], "a refused command appended an event"
        assert not any(f.get("type") == "synced" for f in a.frames), a.frames


@pytest.mark.parametrize("case", sorted(INVALID))
async def test_invalid(shared_gateway, case):
    frame, has_cmid = INVALID[case]
    cmid = f"inv-{sorted(INVALID).index(case)}"  # itself valid, so only the case is at fault
    await _check_invalid(shared_gateway.ws_url, frame, cmid if has_cmid else None)


@pytest.mark.parametrize("kind", ["send", "edit", "delete", "read"])
@pytest.mark.parametrize("name", sorted(BAD_CLIENT_MSG_IDS))
async def test_invalid_client_msg_id(shared_gateway, kind, name):
    def frame(me, other, thread):
        return {"send": {"type": "send", "to": other, "body": "x"},
                "edit": {"type": "edit", "thread": thread, "target": "1-0", "body": "x"},
                "delete": {"type": "delete", "thread": thread, "target": "1-0"},
                "read": {"type": "read", "thread": thread, "up_to": "1-0"}}[kind]

    await _check_invalid(shared_gateway.ws_url, frame, BAD_CLIENT_MSG_IDS[name])


@pytest.mark.parametrize("kind", ["edit", "delete", "read", "sync"])
async def test_event_id_range_is_that_of_redis(shared_gateway, kind):
    """docs/protocol-notes.md: both parts ASCII digits no larger than 2**64-1, else invalid."""
    me, other = uid("a"), uid("b")
    thread = thread_of(me, other)
    largest, huge = f"{2**64 - 1}-{2**64 - 1}", f"{2**64}-0"

    def frame(event_id: str) -> dict[str, Any]:
        return {"edit": {"type": "edit", "thread": thread, "target": event_id, "body": "x"},
                "delete": {"type": "delete", "thread": thread, "target": event_id},
                "read": {"type": "read", "thread": thread, "up_to": event_id},
                "sync": {"type": "sync", "thread": thread, "after": event_id}}[kind]

    async with opened(shared_gateway.ws_url, me, other) as (a, _b):
        await a.say(other, "seed")
        if kind == "sync":
            await a.send(frame(huge))
            assert_error(await a.next("error", timeout=5), "invalid", None)
            await a.send(frame(largest))  # valid, and newer than the stream's last id
            synced = await a.next("synced", timeout=5)
            assert synced == {"type": "synced", "thread": thread, "last_id": largest,
                              "recovered": False}, synced
        else:
            answer = await a.request(frame(huge))
            assert_error(answer, "invalid", answer["ref"])
            answer = await a.request(frame(largest))
            assert_error(answer, "not_found", answer["ref"])
        await assert_usable(a, other)


async def test_deeply_nested_unknown_field_is_not_fatal(shared_gateway):
    """An ignored field nested deeper than the parser goes: refused or accepted, never 1011."""
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, _b):
        head = json.dumps({"type": "send", "to": other, "body": "x", "client_msg_id": "deep"})
        await a.ws.send(head[:-1] + ',"z":' + "[" * 5000 + "]" * 5000 + "}")
        answer = await a.wait_for(lambda f: f.get("type") in ("ack", "error"), 5)
        if answer["type"] == "error":
            assert answer["code"] == "bad_frame" and answer["ref"] in ("deep", None), answer
        else:
            assert answer["ref"] == "deep", answer
        await assert_usable(a, other)


async def test_body_limit_counts_code_points(shared_gateway):
    me, other = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, me, other) as (a, b):
        assert a.hello["limits"]["max_body"] == 4000
        for body in ("😀" * 4000, "x" * 4000, "é" * 4000, "\u200bx", " x ", "a\u3000b"):
            ack = await a.say(other, body)
            assert ack["type"] == "ack", (len(body), ack)
            event = await b.next("event", id=ack["id"], timeout=5)
            assert event["event"]["body"] == body
        sent = await a.say(other, "to edit")
        edited = await a.request({"type": "edit", "thread": thread_of(me, other),
                                  "target": sent["id"], "body": "👍" * 4000})
        assert edited["type"] == "ack", edited


async def test_configured_max_body(start_gateway):
    gateway = start_gateway(DUOLOGUE_MAX_BODY="5")
    me, other = uid("a"), uid("b")
    async with opened(gateway.ws_url, me) as (a,):
        assert a.hello["limits"] == {"max_body": 5, "max_frame": MAX_FRAME}
        assert (await a.say(other, "😀" * 5))["type"] == "ack"
        assert (await a.say(other, "e\u0301e\u0301x"))["type"] == "ack"  # 5 code points
        assert_error(await a.say(other, "😀" * 6, client_msg_id="six"), "invalid", "six")
        assert_error(await a.say(other, "abcdef", client_msg_id="six2"), "invalid", "six2")


async def test_send_with_matching_to_and_thread_and_note_to_self(shared_gateway):
    me, other = uid("Zq"), uid("aq")
    async with opened(shared_gateway.ws_url, me) as (a,):
        ack = await a.request({"type": "send", "to": other, "thread": thread_of(me, other),
                               "body": "both"})
        assert ack["type"] == "ack" and ack["thread"] == f"dm:{me}:{other}"
        own = await a.request({"type": "send", "thread": f"dm:{me}:{me}", "body": "self"})
        assert own["type"] == "ack" and own["thread"] == f"dm:{me}:{me}"


# -- forbidden ----------------------------------------------------------------------------


async def test_forbidden_for_a_third_user(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob, carol) as (a, b, c):
        sent = await a.say(bob, "private")
        await b.next("event", id=sent["id"], timeout=5)
        await a.next("event", id=sent["id"], timeout=5)
        a.frames.clear()
        b.frames.clear()
        for target in (sent["id"], "1-0"):  # a real target and a missing one: no leak
            commands = [
                {"type": "send", "thread": thread, "body": "intrude"},
                {"type": "edit", "thread": thread, "target": target, "body": "x"},
                {"type": "delete", "thread": thread, "target": target},
                {"type": "read", "thread": thread, "up_to": target},
            ]
            for command in commands:
                answer = await c.request(command)
                assert_error(answer, "forbidden", command["client_msg_id"])
        await c.send({"type": "sync", "thread": thread, "after": "0"})
        assert_error(await c.next("error", timeout=5), "forbidden", None)
        await c.send({"type": "typing", "thread": thread})
        assert_error(await c.next("error", timeout=5), "forbidden", None)
        ack = await assert_usable(c, alice)
        await a.next("event", id=ack["id"], timeout=5)
        await settle()
        # isolation: carol learned nothing about the thread, alice and bob got nothing from her
        assert not [f for f in c.frames if f.get("thread") == thread], c.frames
        assert not [f for f in a.frames + b.frames if f.get("thread") == thread]
        assert not [f for f in b.frames if f.get("type") == "typing"]


async def test_forbidden_to_change_another_users_message(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        sent = await a.say(bob, "mine")
        await b.next("event", id=sent["id"], timeout=5)
        edit = await b.request({"type": "edit", "thread": thread, "target": sent["id"],
                                "body": "yours now"})
        assert_error(edit, "forbidden", edit["ref"])
        delete = await b.request({"type": "delete", "thread": thread, "target": sent["id"]})
        assert_error(delete, "forbidden", delete["ref"])
        await settle()
        assert a.events() == [] or all(e["id"] == sent["id"] for e in a.events())
        # the message is intact: its sender can still edit it
        edited = await a.request({"type": "edit", "thread": thread, "target": sent["id"],
                                  "body": "still mine"})
        assert edited["type"] == "ack"


async def test_refresh_with_another_users_token_is_forbidden(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        await a.send({"type": "refresh", "token": token(bob)})
        assert_error(await a.next("error", timeout=5), "forbidden", None)
        fresh = token(alice, 7200)
        await a.send({"type": "refresh", "token": fresh})
        refreshed = await a.next("refreshed", timeout=5)
        assert refreshed["exp"] == jwt.decode(fresh, SECRET, algorithms=["HS256"])["exp"]


# -- not_found ----------------------------------------------------------------------------


async def test_not_found_targets(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        elsewhere = await a.say(carol, "other thread")  # an id that exists, elsewhere
        sent = await a.say(bob, "one")
        edited = await a.request({"type": "edit", "thread": thread, "target": sent["id"],
                                  "body": "one!"})
        gone = await a.say(bob, "two")
        deleted = await a.request({"type": "delete", "thread": thread, "target": gone["id"]})
        read = await b.request({"type": "read", "thread": thread, "up_to": sent["id"]})
        for ack in (elsewhere, sent, edited, gone, deleted, read):
            assert ack["type"] == "ack", ack
        before = {e["id"] for e in await _all_events(b, 5)}
        missing = ["1-0", "0-1"]  # and an id of another thread, unless it exists here too
        missing += [elsewhere["id"]] if elsewhere["id"] not in before else []
        not_messages = [edited["id"], deleted["id"], read["id"]]  # events, but no MessageSent
        for target in [*missing, *not_messages, gone["id"]]:
            for command in ({"type": "edit", "thread": thread, "target": target, "body": "x"},
                            {"type": "delete", "thread": thread, "target": target}):
                answer = await a.request(command)
                assert_error(answer, "not_found", command["client_msg_id"])
        for target in missing:
            answer = await b.request({"type": "read", "thread": thread, "up_to": target})
            assert_error(answer, "not_found", answer["ref"])
        await assert_usable(a, bob)
        after = await _all_events(b, 1)
        assert len(after) == 1 and after[0]["id"] not in before, after


async def _all_events(client: Client, count: int) -> list[dict[str, Any]]:
    """Wait for ``count`` events on ``client`` and take them (and only them)."""
    got = [await client.next("event", timeout=5) for _ in range(count)]
    await settle(0.1)
    extra = client.events()
    assert extra == [], extra
    return got


async def test_forbidden_and_not_found_do_not_count_toward_close(shared_gateway):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, carol, alice) as (c, a):
        for n in range(15):
            answer = await c.request({"type": "send", "thread": thread, "body": f"x{n}"})
            assert_error(answer, "forbidden", answer["ref"])
        sent = await a.say(carol, "hi")
        for n in range(15):
            answer = await c.request({"type": "delete", "thread": sent["thread"],
                                      "target": f"1-{n}"})
            assert_error(answer, "not_found", answer["ref"])
        await assert_usable(c, alice)
        assert not c.reader.done()


# -- rate_limited -------------------------------------------------------------------------


async def test_rate_limited(start_gateway):
    gateway = start_gateway(DUOLOGUE_RATE="5", DUOLOGUE_BURST="10")
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice, alice, bob) as (a, a2, b):
        cmids = [f"burst-{n}" for n in range(16)]
        started = time.monotonic()
        for cmid in cmids:
            await a.send({"type": "send", "to": bob, "body": cmid, "client_msg_id": cmid})
        answers = [await a.wait_for(lambda f, c=cmid: f.get("ref") == c
                                    and f.get("type") in ("ack", "error"), 5)
                   for cmid in cmids]
        # the limit is per user: the second connection of the same user is limited too
        for n in range(5):
            await a2.send({"type": "send", "to": bob, "body": f"a2-{n}",
                           "client_msg_id": f"a2-{n}"})
        answers += [await a2.wait_for(lambda f, c=f"a2-{n}": f.get("ref") == c
                                      and f.get("type") in ("ack", "error"), 5)
                    for n in range(5)]
        refill = int((time.monotonic() - started) * 5) + 1  # tokens that may have come back
        acked = [f for f in answers if f["type"] == "ack"]
        limited = [f for f in answers if f["type"] == "error"]
        assert 10 <= len(acked) <= 10 + refill, answers
        assert any(f["ref"].startswith("a2-") for f in limited), answers
        for error in limited:
            assert error["code"] == "rate_limited", error
            retry = error["retry_after_ms"]
            assert type(retry) is int and retry > 0, error
        await asyncio.sleep(limited[-1]["retry_after_ms"] / 1000)
        # after waiting retry_after_ms the next command is accepted; a refused
        # client_msg_id was never recorded, so it is a first send now
        refused = next(f["ref"] for f in limited if f["ref"].startswith("burst-"))
        retried = await a.say(bob, "retried", client_msg_id=refused)
        assert retried["type"] == "ack" and retried["duplicate"] is False, retried
        accepted = {f["id"] for f in acked} | {retried["id"]}
        got = [await b.next("event", timeout=5) for _ in accepted]
        await settle(0.5)
        assert {e["id"] for e in got} == accepted
        assert b.events() == [], "refused commands were appended"
        bodies = sorted(e["event"]["body"] for e in got)
        assert bodies == sorted([f["ref"] for f in acked] + ["retried"])
        # rate_limited refusals do not count toward the 1008 close
        flood = [f"flood-{n}" for n in range(40)]
        for cmid in flood:
            await a.send({"type": "send", "to": bob, "body": "f", "client_msg_id": cmid})
        answers = [await a.wait_for(lambda f, c=cmid: f.get("ref") == c
                                    and f.get("type") in ("ack", "error"), 5) for cmid in flood]
        limited = [f for f in answers if f["type"] == "error"]
        assert len(limited) > 21 and {f["code"] for f in limited} == {"rate_limited"}
        await asyncio.sleep(limited[-1]["retry_after_ms"] / 1000)
        assert not a.reader.done(), a.ws.close_code
        await assert_usable(a, bob)


# -- unavailable --------------------------------------------------------------------------


async def test_unavailable_when_the_store_is_down(start_gateway, private_redis):
    gateway = start_gateway(REDIS_URL=private_redis.url)
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice) as (a,):
        assert (await a.say(bob, "before"))["type"] == "ack"
        private_redis.stop()
        answer = await asyncio.wait_for(a.say(bob, "during", client_msg_id="down-1"), 15)
        assert_error(answer, "unavailable", "down-1")
        private_redis.start()
        deadline = time.monotonic() + 10
        while True:  # retry with the same client_msg_id until the store is back
            answer = await a.say(bob, "during", client_msg_id="down-1")
            if answer["type"] == "ack" or time.monotonic() > deadline:
                break
            assert_error(answer, "unavailable", "down-1")
            await asyncio.sleep(0.2)
        assert answer["type"] == "ack" and answer["duplicate"] is False, answer


# -- idempotency --------------------------------------------------------------------------


async def test_idempotent_resend(shared_gateway):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        first = await a.say(bob, "once", client_msg_id="same-1")
        assert first["type"] == "ack" and first["duplicate"] is False
        again = await a.say(bob, "once", client_msg_id="same-1")
        by_thread = await a.request({"type": "send", "thread": thread, "body": "changed",
                                     "client_msg_id": "same-1"})
        for repeat in (again, by_thread):
            assert repeat["type"] == "ack" and repeat["duplicate"] is True, repeat
            assert (repeat["id"], repeat["thread"], repeat["ts"]) == \
                (first["id"], first["thread"], first["ts"])
        # same client_msg_id, another thread, or another sender: new commands
        elsewhere = await a.say(alice, "note", client_msg_id="same-1")
        assert elsewhere["duplicate"] is False and elsewhere["id"] != first["id"]
        from_bob = await b.say(alice, "reply", client_msg_id="same-1")
        assert from_bob["duplicate"] is False and from_bob["id"] != first["id"]
        edit = {"type": "edit", "thread": thread, "target": first["id"], "body": "edited",
                "client_msg_id": "same-edit"}
        edited = await a.request(dict(edit))
        edited_again = await a.request(dict(edit))
        assert edited_again["id"] == edited["id"] and edited_again["duplicate"] is True
        got = [await b.next("event", thread=thread, timeout=5) for _ in range(3)]
        await settle(0.5)
        assert [e["id"] for e in got] == [first["id"], from_bob["id"], edited["id"]]
        assert b.events(thread) == [], "a repeated command was delivered twice"


# -- close 1009 ---------------------------------------------------------------------------


@pytest.mark.parametrize("fill", ["x", "é", "😀", "binary"])
async def test_frame_over_64k_closes_with_1009(shared_gateway, fill):
    """64 KiB counts bytes of UTF-8, not characters; binary frames too."""
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice, bob) as (a, b):
        command = {"type": "send", "to": bob, "body": "big", "client_msg_id": "big-1"}
        if fill == "binary":
            await a.ws.send(padded(command, MAX_FRAME + 1).encode())
        else:
            await a.ws.send(padded(command, MAX_FRAME + 1, fill))
        assert await a.wait_closed(5) == 1009
        await settle()
        assert b.events() == []
    async with opened(shared_gateway.ws_url, alice) as (a,):  # nothing had been appended
        ack = await a.say(bob, "big", client_msg_id="big-1")
        assert ack["type"] == "ack" and ack["duplicate"] is False


async def test_fragmented_message_over_64k_closes_with_1009(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        text = padded({"type": "send", "to": bob, "body": "x", "client_msg_id": "frag"},
                      MAX_FRAME + 4096)
        await a.ws.send(iter([text[i:i + 8192] for i in range(0, len(text), 8192)]))
        assert await a.wait_closed(5) == 1009


@pytest.mark.parametrize(("size", "fill"), [(MAX_FRAME, "x"), (MAX_FRAME, "é"),
                                            (MAX_FRAME - 1, "x"), (MAX_FRAME - 100, "😀")])
async def test_frame_at_or_under_64k_is_not_closed(shared_gateway, size, fill):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        command = {"type": "send", "to": bob, "body": "fits", "client_msg_id": f"fit-{size}"}
        await a.ws.send(padded(command, size, fill))
        answer = await a.wait_for(lambda f: f.get("ref") == f"fit-{size}", 5)
        assert answer["type"] == "ack", answer
        # a body over max_body inside a frame under the limit: refused, not closed
        await a.ws.send(padded({**command, "body": "y" * 4001, "client_msg_id": "long"}, size,
                               fill))
        assert_error(await a.next("error", timeout=5), "invalid", "long")
        await assert_usable(a, bob)


# -- close 1008 ---------------------------------------------------------------------------


async def _refuse(client: Client, n: int) -> dict[str, Any]:
    """One bad_frame, unknown_type or invalid refusal, in turn."""
    frames: list[Any] = ["{not json", {"type": "nope"},
                         {"type": "send", "to": "no one", "body": "x", "client_msg_id": f"r{n}"}]
    await send_raw(client, frames[n % 3])
    return await client.next("error", timeout=5)


async def test_more_than_20_refusals_close_with_1008(shared_gateway):
    alice, bob = uid("a"), uid("b")
    async with opened(shared_gateway.ws_url, alice) as (a,):
        codes = [(await _refuse(a, n))["code"] for n in range(20)]
        assert set(codes) == {"bad_frame", "unknown_type", "invalid"}
        await settle(0.2)
        assert not a.reader.done(), "closed after only 20 refusals"
        await assert_usable(a, bob)
        await send_raw(a, "{still not json")
        assert await a.wait_closed(5) == 1008
    async with opened(shared_gateway.ws_url, alice) as (again,):  # a new socket starts afresh
        assert (await _refuse(again, 0))["code"] == "bad_frame"
        await assert_usable(again, bob)


async def test_token_expiring_while_connected_closes_with_1008(shared_gateway):
    alice, bob = uid("a"), uid("b")
    earliest_exp = int(time.time()) + 2
    async with opened(shared_gateway.ws_url, alice, bob, ttl=2) as (a, b):
        latest_exp = int(time.time()) + 2
        await assert_usable(a, bob)
        # the other connection refreshes its token and outlives the first one's exp
        await b.send({"type": "refresh", "token": token(bob, 3600)})
        assert (await b.next("refreshed", timeout=5))["exp"] >= latest_exp + 3000
        code = await a.wait_closed(latest_exp + 6 - time.time())
        closed_at = time.time()
        assert code == 1008
        assert earliest_exp - 0.5 <= closed_at <= latest_exp + 5, (closed_at, latest_exp)
        await asyncio.sleep(max(0.0, latest_exp + 1.5 - time.time()))
        assert not b.reader.done(), "a refreshed connection was closed"
        await assert_usable(b, alice)


# -- close 1013 ---------------------------------------------------------------------------


async def test_slow_consumer_closed_with_1013(start_gateway):
    gateway = start_gateway(DUOLOGUE_OUTBOX="16")
    slow, sender = uid("s"), uid("f")
    stalled = await websockets.connect(
        gateway.ws_url, additional_headers={"Authorization": f"Bearer {token(slow)}"},
        max_queue=1, max_size=2**24, compression=None)  # raw bytes: real backpressure
    try:
        async with opened(gateway.ws_url, sender) as (f,):
            body = base64.b85encode(os.urandom(3200)).decode()  # 4000 chars, incompressible
            window, total = 8, 2500  # 10 MB: more than socket buffers hold
            for start in range(0, total, window):
                refs = [f"m{n}" for n in range(start, min(start + window, total))]
                for ref in refs:
                    await f.send({"type": "send", "to": slow, "body": body,
                                  "client_msg_id": ref})
                for ref in refs:
                    answer = await f.wait_for(
                        lambda fr, r=ref: fr.get("ref") == r and fr.get("type") in ("ack", "error"),
                        10)
                    assert answer["type"] == "ack", answer
                f.frames = [fr for fr in f.frames if fr.get("type") != "event"]
            # the sender's own connection is healthy
            assert not f.reader.done(), f.ws.close_code
            ack = await f.say(sender, "I am fine")
            assert ack["type"] == "ack"
            await f.next("event", id=ack["id"], timeout=5)
        # the stalled reader now reads what was buffered, then finds the socket closed
        received = 0
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(20):
                while True:
                    await stalled.recv()
                    received += 1
        assert info.value.rcvd is not None and info.value.rcvd.code == 1013, (info.value, received)
        assert stalled.close_code == 1013
        assert received < total  # it was cut off, not served everything
    finally:
        await stalled.close()


# -- liveness -----------------------------------------------------------------------------


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of unmasked server frames in ``data`` (complete ones only)."""
    out, i = [], 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            (length,) = struct.unpack("!H", data[i:i + 2])
            i += 2
        elif length == 127:
            (length,) = struct.unpack("!Q", data[i:i + 8])
            i += 8
        if i + length > len(data):
            break
        out.append((opcode, data[i:i + length]))
        i += length
    return out


async def test_unanswered_pings_disconnect(start_gateway):
    gateway = start_gateway(DUOLOGUE_PING_INTERVAL="0.5")
    deaf, alive = uid("d"), uid("l")
    async with opened(gateway.ws_url, alive) as (normal,):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{gateway.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token(deaf)}\r\n\r\n"
                .encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 101"), head
            opened_at = time.monotonic()
            data = b""
            async with asyncio.timeout(6):  # never write again: no pong, ever
                while chunk := await reader.read(65536):
                    data += chunk
            elapsed = time.monotonic() - opened_at
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        opcodes = [op for op, _ in _frames(data)]
        assert 0x9 in opcodes, opcodes  # it was pinged
        assert 0.4 <= elapsed <= 5, elapsed
        # a client that answers pings stays open over the same period and beyond
        await asyncio.sleep(max(0.0, 3 - elapsed))
        assert not normal.reader.done(), normal.ws.close_code
        await assert_usable(normal, deaf)
