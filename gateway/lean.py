"""asyncio's ``Event`` and ``Queue``, as much of them as a socket uses, without their deques.

Every idle socket holds a few of these for its whole life. An ``asyncio.Event`` allocates
a ``deque`` for its waiters up front (about 760 bytes on CPython 3.11); an
``asyncio.Queue`` three of them and an ``Event`` (about 3 KiB). Of 33 KiB an idle socket
cost, 6 KiB were these (``python -m bench.memory_probe``, docs/benchmarks.md). Here the
waiters are a list made on the first wait, and the queue has one reader.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Flag:
    """``asyncio.Event``: ``set``, ``clear``, ``is_set`` and ``wait``, the same semantics."""

    __slots__ = ("_set", "_waiters")

    def __init__(self, value: bool = False) -> None:
        self._set = value
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:  # cancelled
                self._waiters.remove(waiter)


class Inbox(Generic[T]):
    """What uvicorn's WebSocket protocol uses of ``asyncio.Queue`` (``put_nowait``, ``get``,
    ``empty``, ``qsize``) for its one reader, the application's ``receive``. One socket
    read can queue tens of thousands of tiny frames: items are taken by position, not
    shifted out one by one, and the list is emptied once all are taken."""

    __slots__ = ("_head", "_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[T | None] = []
        self._head = 0  # the next item to hand out
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: T) -> None:
        self._items.append(item)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> T:
        while self._head == len(self._items):
            if self._waiter is not None and not self._waiter.done():
                raise RuntimeError("Inbox.get: another reader is already waiting")
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:  # cancelled while waiting
                    self._waiter = None
        item = self._items[self._head]
        self._items[self._head] = None  # handed out: not kept alive until the list empties
        self._head += 1
        if self._head == len(self._items):
            self._items.clear()
            self._head = 0
        return item  # type: ignore[return-value]

    def empty(self) -> bool:
        return self._head == len(self._items)

    def qsize(self) -> int:
        return len(self._items) - self._head
