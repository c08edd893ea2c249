"""Every HTTP error of protocol.md section 3, through real gateways, Redis and Postgres.

`{"error":{"code","message"}}` with 400 `invalid`/`bad_frame`, 401, 403 `forbidden`,
404 `not_found`, 429 `rate_limited` (+ Retry-After), 503 `unavailable`; plus the
decisions of docs/protocol-notes.md (405, 413).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import psycopg
import pytest

from adapters.record import Keys
from duologue.embedded import free_port
from tests.conftest import RUN_PREFIX
from tests.http_support import auth, http, start_api_gateway
from tests.support import Client, thread_of, token, uid
from tests.ws_errors_support import BAD_TOKENS

PREFIX = f"{RUN_PREFIX}-http-errors"


@pytest.fixture(scope="module")
def api(redis_url, database_url, log_dir):
    gateway = start_api_gateway(redis_url, log_dir, PREFIX, DATABASE_URL=database_url)
    yield gateway
    gateway.terminate()


def assert_error(answer: httpx.Response, status: int, code: str) -> str:
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["error"] and sorted(body["error"]) == ["code", "message"], body
    assert body["error"]["code"] == code, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message, body
    return message


async def request(gateway, method, path, user=None, headers=None, **kw):
    async with http(gateway, user) as client:
        return await client.request(method, path, headers=headers, **kw)


async def stream_length(aredis, thread):
    return await aredis.xlen(Keys(PREFIX).stream(thread))


def endpoints(me: str, other: str) -> list[tuple[str, str, dict]]:
    thread = f"/v1/threads/{thread_of(me, other)}/messages"
    return [("GET", "/v1/threads", {}), ("GET", thread, {}),
            ("POST", thread, {"json": {"body": "hi", "client_msg_id": "c-1"}})]


# -- 401 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic {t}", "{t}",
                                    "Bearer {t}x", "Token {t}"])
async def test_missing_or_malformed_authorization_is_401(api, aredis, header):
    alice, bob = uid("a"), uid("b")
    headers = {} if header is None else {"Authorization": header.format(t=token(alice))}
    for method, path, kw in endpoints(alice, bob):
        answer = await request(api, method, path, headers=headers, **kw)
        assert_error(answer, 401, "unauthorized")
        challenge = answer.headers["www-authenticate"]
        assert challenge == ('Bearer error="invalid_token"' if header == "Bearer {t}x"
                             else "Bearer"), (header, challenge)
    assert await stream_length(aredis, thread_of(alice, bob)) == 0


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_bad_tokens_are_401_and_never_logged(api, aredis, kind):
    alice, bob = uid("a"), uid("b")
    bad = BAD_TOKENS[kind](alice)
    for method, path, kw in endpoints(alice, bob):
        answer = await request(api, method, path, headers={"Authorization": f"Bearer {bad}"},
                               **kw)
        assert_error(answer, 401, "unauthorized")
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert await stream_length(aredis, thread_of(alice, bob)) == 0
    good = token(alice)
    assert (await request(api, "GET", "/v1/threads", alice)).status_code == 200
    assert bad not in api.log() and good not in api.log()


# -- 403 ----------------------------------------------------------------------------------


async def test_not_a_participant_is_403(api, aredis):
    alice, bob, carol = uid("a"), uid("b"), uid("c")
    path = f"/v1/threads/{thread_of(bob, carol)}/messages"
    assert_error(await request(api, "GET", path, alice), 403, "forbidden")
    assert_error(await request(api, "GET", path, alice, params={"limit": "5"}), 403,
                 "forbidden")
    answer = await request(api, "POST", path, alice, json={"body": "x", "client_msg_id": "c"})
    assert_error(answer, 403, "forbidden")
    assert await stream_length(aredis, thread_of(bob, carol)) == 0


# -- 400 invalid --------------------------------------------------------------------------


def bad_threads(a: str, b: str) -> list[str]:
    low, high = sorted((a, b))
    return [f"dm:{high}:{low}", "nonsense", f"dm:{low}", f"dm:{low}:{high}:x",
            f"dm::{low}", f"group:{low}:{high}", f"dm:{low}:{high}%20"]


async def test_bad_thread_ids_are_invalid(api):
    alice, bob = uid("a"), uid("b")
    for thread in bad_threads(alice, bob):
        path = f"/v1/threads/{thread}/messages"
        assert_error(await request(api, "GET", path, alice), 400, "invalid")
        answer = await request(api, "POST", path, alice, json={"body": "x", "client_msg_id": "c"})
        assert_error(answer, 400, "invalid")


@pytest.mark.parametrize("query", [
    {"limit": "0"}, {"limit": "000"}, {"limit": "-1"}, {"limit": "abc"}, {"limit": "1.5"},
    {"limit": ""}, {"limit": " 5"}, {"limit": "5 "}, {"limit": "+5"}, {"limit": "\u0663"},
    {"limit": "1e3"}, {"before": "bad"}, {"before": ""}, {"after": "01-1"},
    {"after": "1-01"}, {"before": "1"}, {"after": "-1"}, {"before": "1-2-3"},
    {"after": "18446744073709551616-0"}, {"before": "1-18446744073709551616"},
    {"after": "1 -1"}, {"before": "0-0 "},
])
async def test_bad_query_parameters_are_invalid(api, query):
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    message = assert_error(await request(api, "GET", path, alice, params=query), 400, "invalid")
    assert next(iter(query)) in message or "event id" in message, message


@pytest.mark.parametrize(("body", "client_msg_id"), [
    ("", "c-1"), ("   \n\t", "c-1"), ("a\x00b", "c-1"), ("x" * 4001, "c-1"),
    ("ok", ""), ("ok", "has space"), ("ok", "x" * 65), ("ok", "caf\u00e9"), ("ok", "tab\t"),
])
async def test_send_rules_are_invalid_and_append_nothing(api, aredis, body, client_msg_id):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    answer = await request(api, "POST", f"/v1/threads/{thread}/messages", alice,
                           json={"body": body, "client_msg_id": client_msg_id})
    assert_error(answer, 400, "invalid")
    assert await stream_length(aredis, thread) == 0


async def test_body_limit_counts_code_points(api):
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    answer = await request(api, "POST", path, alice,
                           json={"body": "\U0001f600" * 4000, "client_msg_id": "emoji"})
    assert answer.status_code == 201, answer.text


# -- 400 bad_frame ------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"", "empty"), (b"   ", "empty"), (b"not json", "malformed"), (b"[1, 2]", "object"),
    (b'"text"', "object"), (b"null", "object"), (b'{"body": "x"}', "client_msg_id"),
    (b'{"client_msg_id": "c"}', "body"), (b'{"body": 5, "client_msg_id": "c"}', "$.body"),
    (b'{"body": "x", "client_msg_id": null}', "$.client_msg_id"),
    (b'{"body": ["x"], "client_msg_id": "c"}', "$.body"),
    (b'{"body": "\xff", "client_msg_id": "c"}', "UTF-8"), (b'{"body": "x", ', "truncated"),
    (b'{"body": "\\ud800", "client_msg_id": "c"}', "surrogate"),
    (b'{"a":' * 2000 + b"1" + b"}" * 2000, ""),
])
async def test_malformed_bodies_are_bad_frame(api, aredis, raw, fragment):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    answer = await request(api, "POST", f"/v1/threads/{thread}/messages", alice, content=raw,
                           headers={"Content-Type": "application/json"})
    message = assert_error(answer, 400, "bad_frame")
    assert fragment in message, message
    assert await stream_length(aredis, thread) == 0


async def test_body_over_64k_is_413(api, aredis):
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    raw = b'{"body": "x", "client_msg_id": "c", "pad": "' + b"p" * 70_000 + b'"}'
    answer = await request(api, "POST", f"/v1/threads/{thread}/messages", alice, content=raw)
    assert_error(answer, 413, "too_large")

    async def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(10):
            yield b" " * 8000
    answer = await request(api, "POST", f"/v1/threads/{thread}/messages", alice,
                           content=chunks())
    assert_error(answer, 413, "too_large")
    assert await stream_length(aredis, thread) == 0


# -- 404, 405 -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/v1", "/v1/threads/dm:a:b", "/v1/threads/x/y/z",
                                  "/v1/threads/dm:a:b/messages/1-0", "/nope"])
async def test_unknown_paths_are_json_404(api, path):
    for user in (None, uid("a")):
        for method in ("GET", "POST"):
            assert_error(await request(api, method, path, user), 404, "not_found")


async def test_wrong_method_is_json_405_with_allow(api):
    alice, bob = uid("a"), uid("b")
    answer = await request(api, "DELETE", f"/v1/threads/{thread_of(alice, bob)}/messages", alice)
    assert_error(answer, 405, "method_not_allowed")
    assert set(answer.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}
    answer = await request(api, "POST", "/v1/threads", alice, json={})
    assert_error(answer, 405, "method_not_allowed")


# -- 429 ----------------------------------------------------------------------------------


async def test_rate_limited_with_retry_after_shared_with_the_websocket(start_gateway):
    gateway = start_gateway(DUOLOGUE_RATE="1", DUOLOGUE_BURST="1")
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    ws = await Client.connect(gateway.ws_url, alice)
    async with http(gateway, alice) as client:
        first = await client.post(path, json={"body": "1", "client_msg_id": "r-1"})
        assert first.status_code == 201, first.text
        refused = await client.post(path, json={"body": "2", "client_msg_id": "r-2"})
        assert_error(refused, 429, "rate_limited")
        retry_after = refused.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
        # one limiter per user: the WebSocket of the same user is limited as well
        answer = await ws.say(bob, "3", client_msg_id="r-3")
        assert answer["type"] == "error" and answer["code"] == "rate_limited", answer
        assert (await client.get("/v1/threads")).status_code == 503  # reads are not limited
        await asyncio.sleep(int(retry_after) + 0.05)
        # the refused client_msg_id was never recorded: now it is a first send
        again = await client.post(path, json={"body": "2", "client_msg_id": "r-2"})
        assert again.status_code == 201 and again.json()["duplicate"] is False, again.text
    async with http(gateway, bob) as client:  # another user has a bucket of their own
        assert (await client.post(path, json={"body": "b", "client_msg_id": "b"})).status_code \
            == 201
    await ws.close()


# -- 503 ----------------------------------------------------------------------------------


async def test_reads_without_database_url_are_503_and_sends_still_work(start_gateway):
    gateway = start_gateway()  # REDIS_URL only
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    for read in ("/v1/threads", path):
        message = assert_error(await request(gateway, "GET", read, alice), 503, "unavailable")
        assert "DATABASE_URL" in message, message
    answer = await request(gateway, "POST", path, alice, json={"body": "x", "client_msg_id": "c"})
    assert answer.status_code == 201, answer.text
    # authentication and validation still come first
    assert_error(await request(gateway, "GET", "/v1/threads"), 401, "unauthorized")
    assert_error(await request(gateway, "GET", "/v1/threads/bad/messages", alice), 400, "invalid")


async def test_reads_with_postgres_unreachable_are_503_in_bounded_time(start_gateway):
    gateway = start_gateway(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    for read in ("/v1/threads", path):
        started = time.monotonic()
        message = assert_error(await request(gateway, "GET", read, alice), 503, "unavailable")
        assert time.monotonic() - started < 5
        assert "127.0.0.1" not in message, message  # driver details stay in the log
    answer = await request(gateway, "POST", path, alice, json={"body": "x", "client_msg_id": "c"})
    assert answer.status_code == 201, answer.text


async def test_reads_survive_postgres_dropping_the_pooled_connections(
        start_gateway, database_url):
    """As after a Postgres restart: every pooled connection is dead, reads still answer."""
    gateway = start_gateway(DATABASE_URL=database_url, DUOLOGUE_PG_POOL="5")
    alice = uid("a")
    async with http(gateway, alice) as client, await psycopg.AsyncConnection.connect(
            database_url, autocommit=True) as admin:
        for _ in range(3):
            warm = await asyncio.gather(*(client.get("/v1/threads") for _ in range(10)))
            assert {answer.status_code for answer in warm} == {200}
            killed = await (await admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = 'duologue-gateway'"
            )).fetchone()
            assert killed[0] >= 2
            answers = await asyncio.gather(*(client.get("/v1/threads") for _ in range(10)))
            assert [a.status_code for a in answers] == [200] * 10, answers[0].text


async def test_send_with_redis_down_is_503_and_the_retry_is_applied_once(
        start_gateway, private_redis):
    gateway = start_gateway(REDIS_URL=private_redis.url)
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    async with http(gateway, alice) as client:
        assert (await client.post(path, json={"body": "a", "client_msg_id": "up"})).status_code \
            == 201
        private_redis.stop()
        down = await client.post(path, json={"body": "b", "client_msg_id": "down-1"})
        assert_error(down, 503, "unavailable")
        private_redis.start()
        deadline = time.monotonic() + 10
        while True:  # retry with the same client_msg_id until the store is back
            answer = await client.post(path, json={"body": "b", "client_msg_id": "down-1"})
            if answer.status_code != 503 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert answer.status_code == 201 and answer.json()["duplicate"] is False, answer.text


async def test_send_with_redis_never_reachable_is_503(start_gateway):
    gateway = start_gateway(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    alice, bob = uid("a"), uid("b")
    async with http(gateway) as client:
        answer = await client.post(f"/v1/threads/{thread_of(alice, bob)}/messages",
                                   headers=auth(alice), json={"body": "x", "client_msg_id": "c"})
    assert_error(answer, 503, "unavailable")
