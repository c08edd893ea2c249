"""protocol.md sections 1 and 2, Errors: `invalid` for every rule of user ids, thread ids,
bodies, client_msg_ids and event ids.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
import pytest

from tests.support import SECRET, thread_of, uid
from tests.ws_errors_support import (
    MAX_FRAME,
    Frame,
    assert_error,
    assert_usable,
    opened,
    settle,
    unsigned,
)

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
        {"sub": me, "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")}, False),
    "refresh_alg_none_token": (lambda me, o, t: {"type": "refresh", "token": unsigned(
        {"sub": me, "exp": int(time.time()) + 3600})}, False),
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


