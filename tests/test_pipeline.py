"""gateway/pipeline.py: the append batches' own round trip on one Redis gives what
redis-py's pipeline gives with ``raise_on_error=False``, and leaves no reply behind."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.pipeline import pipelined
from gateway.redis_client import connect_redis
from tests.conftest import RUN_PREFIX

pytestmark = pytest.mark.single_redis  # a plain client's pool (a cluster pipelines apart)


async def test_replies_in_order_with_errors_in_their_place(redis_url):
    client = connect_redis(redis_url, pool_size=2)
    key = f"{RUN_PREFIX}-pipelined"
    try:
        replies = await pipelined(client, [
            ("SET", key, "text"), ("INCR", key), ("GET", key), ("EVALSHA", "0" * 40, 0)])
        assert replies[0] is True or replies[0] == b"OK"
        assert isinstance(replies[1], ResponseError)
        assert replies[2] == b"text"
        assert isinstance(replies[3], NoScriptError)  # the batcher loads the script on it
    finally:
        await client.delete(key)
        await client.aclose()


async def test_a_connection_killed_between_batches_is_replaced(redis_url):
    client = connect_redis(redis_url, pool_size=1)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await pipelined(client, [("PING",)]) in ([b"PONG"], [True])
        name, killed = f"{RUN_PREFIX}-victim", False
        await pipelined(client, [("CLIENT", "SETNAME", name)])
        for line in (await admin.client_list()):
            if line.get("name") == name:
                await admin.client_kill_filter(_id=line["id"])
                killed = True
        assert killed
        assert await pipelined(client, [("ECHO", "again")]) == [b"again"]
    finally:
        await client.aclose()
        await admin.aclose()


async def test_a_timeout_drops_the_connection_so_no_late_reply_is_read_as_the_next(redis_url):
    # a Retry that does not handle timeouts: the pipeline's own drop is what is tested
    client = aioredis.Redis.from_url(redis_url, socket_timeout=0.3, retry=Retry(
        NoBackoff(), 0, supported_errors=(RedisConnectionError,)))
    key = f"{RUN_PREFIX}-never-filled"
    try:
        with pytest.raises(RedisTimeoutError):
            await pipelined(client, [("BLPOP", key, 1)])
        assert await pipelined(client, [("ECHO", "next")]) == [b"next"]
    finally:
        await client.aclose()
