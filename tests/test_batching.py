"""The append batcher against real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError

from gateway.batching import ScriptBatcher
from tests.conftest import RUN_PREFIX

INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_NEGATIVE = "if tonumber(ARGV[1]) < 0 then return redis.error_reply('neg') end return 1"


async def test_concurrent_calls_share_pipelines_and_survive_a_script_flush(aredis):
    key = f"{RUN_PREFIX}-batch-{id(aredis)}"
    batcher = ScriptBatcher(aredis, INCR)
    await aredis.script_flush()  # as after a Redis restart: the first batch meets NOSCRIPT
    sent = 0
    original = batcher._send

    async def counting(batch):
        nonlocal sent
        sent += 1
        return await original(batch)

    batcher._send = counting
    results = await asyncio.gather(*(batcher([key], [1]) for _ in range(300)))
    assert sorted(results) == list(range(1, 301))
    assert sent <= 4  # NOSCRIPT retry plus a few batches, not 300 round trips
    await aredis.delete(key)


async def test_a_cancelled_caller_does_not_disturb_the_others(aredis):
    key = f"{RUN_PREFIX}-batch-cancel"
    batcher = ScriptBatcher(aredis, INCR)
    calls = [asyncio.create_task(batcher([key], [1])) for _ in range(50)]
    calls[10].cancel()
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[10], asyncio.CancelledError)
    assert len([r for r in done if isinstance(r, int)]) == 49
    assert int(await aredis.get(key)) in (49, 50)  # the cancelled append may stand, unacked
    await aredis.delete(key)


async def test_a_call_abandoned_before_its_batch_left_is_not_sent_when_asked(aredis):
    """Attacks: a send-budget take sent for a send whose caller went away (a budget
    charged for nothing, never given back)."""
    key = f"{RUN_PREFIX}-batch-abandoned"
    batcher = ScriptBatcher(aredis, INCR, drop_abandoned=True)
    first = asyncio.create_task(batcher([key], [1]))
    queued = [asyncio.create_task(batcher([key], [1])) for _ in range(20)]
    await asyncio.sleep(0)  # every call queued; their batch not sent yet
    for task in queued[5:]:
        task.cancel()
    done = await asyncio.gather(first, *queued, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in done) == 15
    assert int(await aredis.get(key)) == 6  # the cancelled ones never reached Redis
    await aredis.delete(key)


async def test_errors_belong_to_their_own_call(aredis):
    batcher = ScriptBatcher(aredis, FAIL_ON_NEGATIVE)
    ok, bad = await asyncio.gather(batcher([], [1]), batcher([], [-1]), return_exceptions=True)
    assert ok == 1 and isinstance(bad, ResponseError)
    with pytest.raises(ResponseError):
        await batcher([], [-1])
