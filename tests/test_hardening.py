"""Defects protocol.md section 8 closes (issue 10): a Redis answer never closes a socket,
a gateway never starts on a missing or short secret, and client text reaches the logs
clipped. Real gateways, real Redis servers (a private one to disturb)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import httpx
import pytest
import redis

from tests.support import SECRET, uid
from tests.test_cli import duologue
from tests.ws_errors_support import assert_error, assert_usable, opened


async def _until_acked(client, to: str, body: str, cmid: str) -> dict:
    deadline = time.monotonic() + 10
    while True:
        answer = await client.say(to, body, client_msg_id=cmid)
        if answer["type"] == "ack" or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


async def test_a_redis_refusal_is_unavailable_for_that_command_and_the_socket_stays_open(
        start_gateway, private_redis):
    """Attacks: NOREPLICAS (acks waiting for replicas that are gone) and BUSY (a script
    hogging Redis) closing the socket with 1011 instead of answering `unavailable`."""
    gateway = start_gateway(REDIS_URL=private_redis.url)
    admin = redis.Redis.from_url(private_redis.url)
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice) as (a,):
        assert (await a.say(bob, "before"))["type"] == "ack"

        admin.config_set("min-replicas-to-write", 1)  # every write now answers NOREPLICAS
        try:
            answer = await a.say(bob, "no replicas", client_msg_id="norep-1")
            assert_error(answer, "unavailable", "norep-1")
            assert "NOREPLICAS" not in json.dumps(answer)  # Redis's words stay in the logs
        finally:
            admin.config_set("min-replicas-to-write", 0)
        again = await _until_acked(a, bob, "no replicas", "norep-1")
        assert again["type"] == "ack" and again["duplicate"] is False, again

        admin.config_set("lua-time-limit", 50)  # BUSY after 50 ms of a running script
        hog = threading.Thread(target=_hog, args=(private_redis.url,), daemon=True)
        hog.start()
        try:
            time.sleep(0.3)
            answer = await a.say(bob, "busy", client_msg_id="busy-1")
            assert_error(answer, "unavailable", "busy-1")
        finally:
            _kill_script(admin)
            hog.join(10)
        again = await _until_acked(a, bob, "busy", "busy-1")
        assert again["type"] == "ack" and again["duplicate"] is False, again
        await assert_usable(a, bob)
    admin.close()


def _hog(url: str) -> None:
    with redis.Redis.from_url(url) as client, contextlib.suppress(redis.RedisError):
        client.eval("while true do end", 0)  # until SCRIPT KILL


def _kill_script(admin: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            admin.script_kill()
            return
        except redis.RedisError as exc:
            if "NOTBUSY" in str(exc):
                return
            time.sleep(0.05)


@pytest.mark.parametrize(("secret", "says"), [
    (None, "DUOLOGUE_SECRET is not set"),
    ("short-secret", "DUOLOGUE_SECRET is 12 bytes long"),
    ("x" * 31, "DUOLOGUE_SECRET is 31 bytes long"),
])
def test_a_gateway_refuses_a_missing_or_short_secret(tmp_path, redis_url, secret, says):
    """Attacks: a production gateway starting on the dev secret file it found in the
    working directory, or on a secret short enough to guess."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    (tmp_path / ".duologue").mkdir()
    (tmp_path / ".duologue" / "secret").write_text(SECRET)  # a dev secret lying around
    env = {"REDIS_URL": redis_url} | ({"DUOLOGUE_SECRET": secret} if secret else {})
    done = duologue("gateway", "--port", "0", cwd=tmp_path, **env)
    assert done.returncode == 2, done
    assert says in done.stderr and "32" in done.stderr
    assert "Traceback" not in done.stderr


async def test_refused_frames_reach_the_log_clipped(start_gateway):
    """Attacks: a refused frame logged with up to 60 KB of client text (in its ref, its
    reason or its path), so one client can fill an operator's disk."""
    gateway = start_gateway()
    alice, bob = uid("a"), uid("b")
    huge = "x" * 30_000  # two of them in one frame stay under the 64 KiB frame limit
    async with opened(gateway.ws_url, alice) as (a,):
        for frame in ({"type": "send", "to": bob, "body": "hi", "client_msg_id": huge},
                      {"type": "send", "thread": f"dm:{huge}", "body": "hi",
                       "client_msg_id": "c1"},
                      {"type": huge}, {"type": "sync", "threads": {huge: huge}}):
            await a.send(frame)
        await assert_usable(a, bob)
    async with httpx.AsyncClient() as http:
        await http.get(f"{gateway.http_url}/v1/threads/{huge[:8000]}/messages")
    await asyncio.sleep(0.3)
    lines = gateway.log().splitlines()
    assert any("frame_refused" in line for line in lines)
    assert max(len(line) for line in lines) < 2_000, max(lines, key=len)[:300]


async def test_acks_waiting_for_replicas_that_are_not_there_are_unavailable(start_gateway):
    """``DUOLOGUE_ACK_REPLICAS`` on a Redis without replicas (the run's): every send is
    ``unavailable`` after the wait, the event stands, and the socket stays usable.
    Attacks: an ack sent although no replica holds the event."""
    gateway = start_gateway(DUOLOGUE_ACK_REPLICAS="1", DUOLOGUE_ACK_WAIT_MS="50")
    alice, bob = uid("a"), uid("b")
    async with opened(gateway.ws_url, alice) as (a,):
        for attempt in range(2):  # the resend is refused the same way: still no replica
            await a.send({"type": "send", "to": bob, "body": "hi", "client_msg_id": "c1"})
            refused = await a.next("error")
            assert refused["code"] == "unavailable" and "replicas" in refused["message"]
            assert refused["ref"] == "c1", (attempt, refused)
        thread = f"dm:{min(alice, bob)}:{max(alice, bob)}"
        await a.send({"type": "sync", "thread": thread, "after": "0"})
        event = await a.next("event", thread=thread)  # stored once, on the primary
        synced = await a.next("synced", thread=thread)
        assert synced["last_id"] == event["id"]
