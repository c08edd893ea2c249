"""Helpers of the tests that start a Redis Cluster of their own (test_cluster.py,
test_cluster_reshard.py, test_ack_replicas.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from duologue.local_cluster import LocalCluster, LocalClusterError, require_redis_7
from tests.support import Client


def own_cluster(factory: pytest.TempPathFactory, replicas: int = 0) -> Iterator[LocalCluster]:
    """A 3-master cluster for one module (its ``redis_url`` fixture overrides the run's);
    the module is skipped, with the reason, where redis-server 7+ is missing."""
    try:
        require_redis_7()
    except LocalClusterError as exc:
        pytest.skip(str(exc))
    with LocalCluster(factory.mktemp("cluster"), replicas=replicas) as cluster:
        yield cluster


class Resends:
    """Sends resent with their client_msg_id until acked, as a client does; every refusal
    on the way must be ``unavailable`` (counted in ``refused``)."""

    def __init__(self, tries: int = 300, pause: float = 0.1) -> None:
        self.tries, self.pause, self.refused = tries, pause, 0

    async def until_acked(self, client: Client, to: str, body: str, cmid: str
                          ) -> dict[str, Any]:
        for _ in range(self.tries):
            answer = await client.say(to, body, client_msg_id=cmid)
            if answer["type"] == "ack":
                return answer
            assert answer["code"] == "unavailable", answer
            self.refused += 1
            await asyncio.sleep(self.pause)
        raise AssertionError(f"{cmid} to {to} never acked")
