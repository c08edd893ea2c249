"""protocol.md section 2 (``hello.threads``): the user's thread index as the gateway reads
it for a hello, on a real Redis (one Redis: one script; a cluster run: a pipeline per
node). Newest activity first, ties by thread, every partition; a fenced partition
refuses the read, as every other read of the store does."""

from __future__ import annotations

import pytest

from adapters.record import Keys
from adapters.redis_connect import AsyncRedis, arun_ids
from domain.ids import event_key
from gateway.errors import FencedError
from gateway.store import EventStore
from tests.support import sent, thread_of, uid


async def test_every_partition_newest_first_and_only_the_users_own(
        aredis: AsyncRedis, prefix: str) -> None:
    keys = Keys(prefix, 64)
    store = EventStore(aredis, keys, 86400)
    alice, carol = uid("a"), uid("c")
    peers = [uid(f"p{n}") for n in range(40)]
    assert len({keys.partition(thread_of(alice, p)) for p in peers}) > 10
    newest: dict[str, str] = {}
    for round_ in range(2):
        for peer in peers[round_ * 10:]:
            thread = thread_of(alice, peer)
            appended = await store.append(thread, peer, f"m{round_}",
                                          sent(peer, f"m{round_}"))
            newest[thread] = appended.id
    await store.append(thread_of(carol, peers[0]), carol, "other",
                       sent(carol, "other"))

    found = await store.threads(alice)

    expected = sorted(newest.items())
    expected.sort(key=lambda pair: event_key(pair[1]), reverse=True)
    assert found == expected
    assert await store.threads(uid("nobody")) == []


@pytest.mark.parametrize("epoch", ["another-run", ""])
async def test_a_fenced_partition_refuses_the_read(
        aredis: AsyncRedis, prefix: str, epoch: str) -> None:
    keys = Keys(prefix, 64)
    store = EventStore(aredis, keys, 86400)
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    await store.append(thread, bob, "m", sent(bob, "m"))
    run_of = await arun_ids(aredis)
    part = keys.partition(thread)
    await aredis.set(keys.epoch(part), run_of(keys.epoch(part)))  # this run's: not fenced
    assert [t for t, _ in await store.threads(alice)] == [thread]

    other = (part + 7) % 64  # a partition the user has no thread in still fences
    await aredis.set(keys.epoch(other), epoch)
    with pytest.raises(FencedError):
        await store.threads(alice)
    await aredis.delete(keys.epoch(other))
    assert [t for t, _ in await store.threads(alice)] == [thread]
