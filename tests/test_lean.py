"""gateway.lean: Flag behaves as asyncio.Event, Inbox as asyncio.Queue for one reader."""

from __future__ import annotations

import asyncio

import pytest

from gateway.lean import Flag, Inbox


async def test_a_flag_wakes_every_waiter_and_stays_set_until_cleared() -> None:
    flag = Flag()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters) and not flag.is_set()
    flag.set()
    assert await asyncio.gather(*waiters) == [True, True, True]
    assert flag.is_set() and await flag.wait()  # set: no wait at all
    flag.clear()
    late = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not late.done()
    flag.set()
    assert await late


async def test_a_cancelled_wait_leaves_no_waiter_behind() -> None:
    flag = Flag()
    gone = asyncio.create_task(flag.wait())
    stays = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert flag._waiters is not None and len(flag._waiters) == 1
    flag.set()
    assert await stays
    assert flag._waiters is None


async def test_a_flag_made_set_does_not_wait() -> None:
    assert await asyncio.wait_for(Flag(True).wait(), 1)


async def test_an_inbox_hands_items_out_in_order_to_its_reader() -> None:
    inbox: Inbox[int] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done() and inbox.empty()
    for n in range(5):
        inbox.put_nowait(n)
    assert inbox.qsize() == 5
    assert await reader == 0
    assert [await inbox.get() for _ in range(4)] == [1, 2, 3, 4]
    assert inbox.empty()


async def test_an_inbox_reader_cancelled_while_waiting_leaves_it_usable() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    inbox.put_nowait("after")  # the cancelled waiter is not woken, nor is the item lost
    assert await asyncio.wait_for(inbox.get(), 1) == "after"


async def test_an_inbox_refuses_a_second_waiting_reader() -> None:
    inbox: Inbox[str] = Inbox()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another reader"):
        await inbox.get()
    inbox.put_nowait("x")
    assert await first == "x"


async def test_an_inbox_holding_a_whole_read_of_tiny_frames_hands_them_all_out() -> None:
    """One socket read can queue ~43,000 six-byte frames: each is taken by position (a
    list shifted per take would cost the square of that), and nothing is kept after."""
    inbox: Inbox[int] = Inbox()
    for n in range(50_000):
        inbox.put_nowait(n)
    assert inbox.qsize() == 50_000
    assert [await inbox.get() for _ in range(50_000)] == list(range(50_000))
    assert inbox.empty() and inbox._items == [] and inbox._head == 0
    inbox.put_nowait(7)  # usable again after emptying
    assert await inbox.get() == 7


async def test_an_item_put_before_a_cancelled_reader_resumes_is_not_lost() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("kept")
    reader.cancel()  # woken and cancelled in the same step: the item stays queued
    await asyncio.gather(reader, return_exceptions=True)
    if reader.cancelled():
        assert await asyncio.wait_for(inbox.get(), 1) == "kept"
    else:
        assert reader.result() == "kept"


async def test_a_new_reader_right_after_a_cancelled_one_is_served() -> None:
    inbox: Inbox[str] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()  # not unwound yet when the next reader starts
    successor = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait("x")
    assert await asyncio.wait_for(successor, 1) == "x"
    await asyncio.gather(reader, return_exceptions=True)


async def test_a_flag_set_then_cleared_before_its_waiter_runs_still_wakes_it() -> None:
    flag = Flag()
    waiter = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    flag.set()
    flag.clear()
    assert await asyncio.wait_for(waiter, 1)
