"""``duologue gateway --workers N`` (protocol.md section 9): N gateway processes on one
port, supervised. Attacks: a second worker that never gets a connection (the port held
by one), a worker that dies and stays dead, a SIGTERM that leaves workers running or
closes sockets without the drain's 1001."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import LIMITS_OFF
from tests.support import Client, GatewayProcess, uid

WORKERS = 2


@pytest.fixture
def supervised(redis_url: str, log_dir: Path, prefix: str):
    env = {"REDIS_URL": redis_url, "DUOLOGUE_PREFIX": prefix, **LIMITS_OFF}
    gateway = GatewayProcess(env, args=("--workers", str(WORKERS))).start(log_dir)
    listening(gateway)  # /healthz answered: one worker is up; the others may still start
    yield gateway
    gateway.terminate()


def workers_of(gateway: GatewayProcess) -> list[psutil.Process]:
    assert gateway.process is not None
    return psutil.Process(gateway.process.pid).children()


def listening(gateway: GatewayProcess, within: float = 15) -> None:
    """Wait until every worker listens on the gateway's port."""
    deadline = time.monotonic() + within
    while True:
        workers = workers_of(gateway)
        up = [w for w in workers if any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == gateway.port
            for c in w.net_connections("tcp"))]
        if len(workers) == WORKERS and len(up) == WORKERS:
            return
        assert time.monotonic() < deadline, f"{len(up)} of {WORKERS} listening"
        time.sleep(0.05)


def sockets_per_worker(gateway: GatewayProcess) -> dict[int, int]:
    """worker pid -> its established connections on the gateway's port."""
    return {w.pid: sum(1 for c in w.net_connections("tcp")
                       if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == gateway.port)
            for w in workers_of(gateway)}


async def test_connections_spread_over_every_worker_and_talk_across_them(supervised):
    assert len(workers_of(supervised)) == WORKERS
    pairs = [(uid("a"), uid("b")) for _ in range(8)]
    clients = [await Client.connect(supervised.ws_url, u) for pair in pairs for u in pair]
    try:
        spread = sockets_per_worker(supervised)
        assert sorted(spread.values())[0] > 0 and sum(spread.values()) == len(clients), spread
        for n, (_, b) in enumerate(pairs):  # whichever worker each one landed on
            ack = await clients[2 * n].say(b, f"hello {n}")
            assert ack["type"] == "ack", ack
            got = await clients[2 * n + 1].next("event", thread=ack["thread"])
            assert got["id"] == ack["id"]
    finally:
        for client in clients:
            await client.close()


async def test_a_dead_worker_is_started_again(supervised):
    first = workers_of(supervised)[0]
    first.kill()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [w for w in workers_of(supervised) if w.status() != psutil.STATUS_ZOMBIE]
        if len(alive) == WORKERS and first.pid not in {w.pid for w in alive}:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"not restarted: {supervised.log()[-1500:]}")
    listening(supervised)
    assert "gateway_worker_died" in supervised.log()
    alice, bob = uid("a"), uid("b")
    a = await Client.connect(supervised.ws_url, alice)
    try:
        assert (await a.say(bob, "still served"))["type"] == "ack"
    finally:
        await a.close()


async def test_sigterm_drains_every_worker_with_1001_and_exits(supervised):
    clients = [await Client.connect(supervised.ws_url, uid("u")) for _ in range(8)]
    try:
        assert min(sockets_per_worker(supervised).values()) > 0
        workers = workers_of(supervised)
        assert supervised.process is not None
        os.kill(supervised.process.pid, signal.SIGTERM)
        codes = await asyncio.gather(*(c.wait_closed(20) for c in clients))
        assert set(codes) == {1001}, codes
    finally:
        for client in clients:
            await client.close()
    assert supervised.process.wait(20) == 0
    assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
