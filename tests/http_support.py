"""Helpers for the HTTP API tests: gateways with Postgres, projection rows, clients.

Projection rows are written with plain SQL: they are the read model the API serves,
exactly as the projector leaves them. Every test uses random user ids, so tests that
share the run's database never see each other's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from domain.ids import ms_of, sort_key
from tests.contract_support import check_response
from tests.support import GatewayProcess, token

BASE_MS = 1_700_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def eid(n: int, seq: int = 0) -> str:
    """A synthetic event id, ``n`` milliseconds after BASE_MS: ids sort like ``n``."""
    return f"{BASE_MS + n}-{seq}"


def ms(event_id: str) -> int:
    return ms_of(event_id)


def at(event_id: str) -> datetime:
    """The time of an event id, exact to the millisecond."""
    return EPOCH + timedelta(milliseconds=ms(event_id))


def auth(user: str, ttl: int = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user, ttl)}"}


def start_api_gateway(
    redis_url: str, log_dir: Path, prefix: str, **env: str
) -> GatewayProcess:
    base = {"REDIS_URL": redis_url, "DUOLOGUE_PREFIX": prefix, "DUOLOGUE_RATE": "0",
            "DUOLOGUE_RATE_BYTES": "0", "DUOLOGUE_READ_RATE": "0", "DUOLOGUE_TYPING_EVERY": "0",
            "DUOLOGUE_MAX_SOCKETS": "0"}
    return GatewayProcess({**base, **env}).start(log_dir)


@contextlib.asynccontextmanager
async def http(
    gateway: GatewayProcess, user: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    headers = auth(user) if user else {}
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=headers, timeout=15,
                                 event_hooks={"response": [_check_contract]}) as client:
        yield client


async def _check_contract(response: httpx.Response) -> None:
    """Every answer against /openapi.json; a mismatch fails the test."""
    await response.aread()
    check_response(response.request.method, response.request.url.path, response.status_code,
                   response.headers.get("content-type", ""), response.content)


def message_json(event_id: str, sender: str, body: str | None, edited: str | None = None,
                 deleted: bool = False, reply_to: str | None = None,
                 reactions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The API's shape of one message, as the tests expect it."""
    return {"id": event_id, "sender": sender, "body": None if deleted else body,
            "sent_at": ms(event_id), "edited_at": ms(edited) if edited else None,
            "deleted": deleted, "reply_to": reply_to, "reactions": reactions or []}


class Projection:
    """Writes rows of the projection tables (threads, messages, read_receipts)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def close(self) -> None:
        self.conn.close()

    def thread(self, thread: str, last_id: str, events: int = 1) -> None:
        _, a, b = thread.split(":")
        self.conn.execute(
            "INSERT INTO threads (thread, user_a, user_b, last_id, last_key, first_at, "
            "last_at, events) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (thread, a, b, last_id, sort_key(last_id), at(eid(0)), at(last_id), events))

    def message(self, thread: str, event_id: str, sender: str, body: str,
                edited: str | None = None, deleted: str | None = None) -> None:
        """A message; ``edited``/``deleted`` are the ids of the edit/delete events."""
        self.conn.execute(
            "INSERT INTO messages (thread, id, key, sender, body, sent_at, edited_at, "
            "deleted_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (thread, event_id, sort_key(event_id), sender, None if deleted else body,
             at(event_id), at(edited) if edited else None, at(deleted) if deleted else None))

    def receipt(self, thread: str, reader: str, up_to: str, event_id: str) -> None:
        self.conn.execute(
            "INSERT INTO read_receipts (thread, reader, up_to, up_to_key, event_id, read_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (thread, reader, up_to, sort_key(up_to), event_id, at(event_id)))

    def many(self, thread: str, senders: tuple[str, str], count: int, start: int = 1) -> None:
        """``count`` messages ``eid(start)``.. in one statement, senders alternating."""
        self.conn.execute(
            "INSERT INTO messages (thread, id, key, sender, body, sent_at) "
            "SELECT %(thread)s, (%(base)s + i)::text || '-0', "
            "(%(base)s + i)::numeric * 100000000000000000000, "
            "CASE WHEN i %% 2 = 0 THEN %(a)s ELSE %(b)s END, 'message ' || i, "
            "timestamptz 'epoch' + (%(base)s + i) * interval '1 millisecond' "
            "FROM generate_series(%(start)s::bigint, %(end)s::bigint) AS i",
            {"thread": thread, "base": BASE_MS, "a": senders[0], "b": senders[1],
             "start": start, "end": start + count - 1})
