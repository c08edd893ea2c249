"""adapters.tokens: a verified token is remembered, and nothing a cached token skips
could let a bad one in (expiry is checked on every use; a remembered token is the whole
string under the same secret)."""

from __future__ import annotations

import time

import jwt
import pytest

from adapters import tokens
from adapters.tokens import AuthError, mint, read_token

SECRET = "s" * 40


def test_a_remembered_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    exp = int(time.time()) + 30
    token = jwt.encode({"sub": "alice", "exp": exp}, SECRET, algorithm="HS256")
    assert read_token(token, SECRET).user == "alice"
    assert read_token(token, SECRET).exp == exp  # remembered
    monkeypatch.setattr(tokens.time, "time", lambda: exp + 0.0)
    with pytest.raises(AuthError, match="Expired"):
        read_token(token, SECRET)


def test_a_remembered_token_under_another_secret_or_altered_is_refused() -> None:
    token = mint("alice", SECRET)
    assert read_token(token, SECRET).user == "alice"
    with pytest.raises(AuthError, match="InvalidSignature"):
        read_token(token, "t" * 40)
    head, payload, signature = token.split(".")
    forged = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 60}, "x" * 40,
                        algorithm="HS256").split(".")[1]
    for altered in (f"{head}.{forged}.{signature}",
                    f"{head}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
                    token + " "):
        with pytest.raises(AuthError):
            read_token(altered, SECRET)


def test_a_refused_token_is_refused_every_time() -> None:
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) - 1}, SECRET, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError, match="Expired"):
            read_token(token, SECRET)
    no_sub = jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    for _ in range(2):
        with pytest.raises(AuthError):
            read_token(no_sub, SECRET)


def test_a_token_is_decoded_once_and_a_long_one_every_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real = jwt.decode

    def counting(token: str, *args: object, **kwargs: object) -> object:
        decoded.append(token)
        return real(token, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tokens.jwt, "decode", counting)
    short = mint("bob", SECRET)
    long = jwt.encode({"sub": "bob", "exp": int(time.time()) + 60, "pad": "p" * 3000},
                      SECRET, algorithm="HS256")
    assert len(long) > tokens.CACHED_MAX
    for _ in range(3):
        assert read_token(short, SECRET).user == "bob"
        assert read_token(long, SECRET).user == "bob"
    assert decoded.count(short) == 1
    assert decoded.count(long) == 3


def test_the_claimed_user_is_read_without_trusting_anything() -> None:
    """``claimed_user`` only routes (gateway.upgrade_screen verifies before it refuses):
    it reads ``sub`` from any well-shaped token, signed or not, and never raises."""
    assert tokens.claimed_user(mint("alice", SECRET)) == "alice"
    assert tokens.claimed_user(mint("alice", "another secret " + "x" * 30)) == "alice"
    unsigned = jwt.encode({"sub": "bob", "exp": 1}, None, algorithm="none")
    assert tokens.claimed_user(unsigned) == "bob"
    for junk in ("", "a.b", "a.b.c", "a.!!!.c", "x." + "W10" + ".y",  # a list, not claims
                 jwt.encode({"sub": 7, "exp": 1}, SECRET, algorithm="HS256"),
                 "a." + "e" * 5000 + ".c"):
        assert tokens.claimed_user(junk) is None
