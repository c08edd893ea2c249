"""The C command packer must produce exactly what redis-py's Python packer does."""

from __future__ import annotations

import pytest
from redis.asyncio import Connection

from gateway.redis_client import PackedConnection, connect_redis
from tests.conftest import RUN_PREFIX

COMMANDS = [
    ("SET", "k", "é", "EX", 5),
    ("EVALSHA", "ab" * 20, 2, "k1", "k2", b"\x00\xff", 1.25, -3),
    ("SCRIPT LOAD", "return 1"),
    (b"CLIENT KILL", b"TYPE", b"pubsub"),
    ("XADD", "s", "*", "e", memoryview(b"payload"), "f", bytearray(b"x")),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_packing_is_byte_identical(args):
    assert b"".join(PackedConnection().pack_command(*args)) == b"".join(
        Connection().pack_command(*args))


async def test_round_trip_through_real_redis(redis_url):
    client = connect_redis(redis_url, pool_size=2)
    key = f"{RUN_PREFIX}-packed"
    await client.set(key, "é" * 3, ex=60)
    assert await client.get(key) == "é".encode() * 3
    assert isinstance(await client.script_load("return 1"), str)
    await client.delete(key)
    await client.aclose()
