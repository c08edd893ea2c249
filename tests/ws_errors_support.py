"""Helpers of the WebSocket error-contract tests (protocol.md section 2, Errors and close codes)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.support import SECRET, Client, token

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


# -- tokens the handshake (and HTTP) must refuse ------------------------------------


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
