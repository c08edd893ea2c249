"""HS256 JWT tokens (PyJWT): ``sub`` is the user id, ``exp`` is required.

A token verified once is remembered (the ``VERIFIED`` most recently used, by the whole
token string and the secret; none longer than ``CACHED_MAX`` characters): PyJWT's decode
costs ~85 us, a tenth of a WebSocket handshake, and a reconnecting client presents the
same token again. Only a token that passed every check is remembered, and its ``exp`` is
checked again on every use.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from functools import lru_cache

import jwt

from domain.ids import is_user_id


class AuthError(Exception):
    """The token is missing, malformed, expired, wrongly signed or names no valid user."""


@dataclass(frozen=True, slots=True)
class Identity:
    user: str
    exp: int


VERIFIED = 4096  # tokens remembered as verified
CACHED_MAX = 2048  # characters: a longer token is checked in full every time (<= 8 MiB held)


def read_token(token: str, secret: str) -> Identity:
    if not token:
        raise AuthError("missing token")
    identity = (_remembered if len(token) <= CACHED_MAX else _verified)(token, secret)
    if identity.exp <= time.time():  # as PyJWT decides, with no leeway
        raise AuthError("bad token: ExpiredSignatureError")
    return identity


def _verified(token: str, secret: str) -> Identity:
    """The token's identity, or ``AuthError`` (never remembered)."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"bad token: {type(exc).__name__}") from None
    user, exp = claims.get("sub"), claims.get("exp")
    if not isinstance(user, str) or not is_user_id(user) or not isinstance(exp, int | float):
        raise AuthError("bad token: claims")
    return Identity(user, int(exp))


_remembered = lru_cache(maxsize=VERIFIED)(_verified)


def mint(user: str, secret: str, ttl: int = 3600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl}, secret, algorithm="HS256")


def claimed_user(token: str) -> str | None:
    """The ``sub`` a token claims, read without verifying anything (None if it has none):
    only to decide cheaply whether a token is worth verifying, never to trust it."""
    parts = token.split(".")
    if len(parts) != 3 or len(token) > CACHED_MAX:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, TypeError):
        return None
    user = claims.get("sub") if isinstance(claims, dict) else None
    return user if isinstance(user, str) else None


def bearer(header: str | None) -> str:
    scheme, _, token = (header or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
