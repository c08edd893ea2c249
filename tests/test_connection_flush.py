"""gateway.connection under our protocol's writer: a socket's queue is flushed by one
callback per loop iteration (no sender task), paused while the transport is full, and
its close goes out after what it must flush. The writer here records what the protocol
would write; the end-to-end tests run the real one (tests/test_ws_*.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import SimpleNamespace

from uvicorn.protocols.utils import ClientDisconnected

from gateway.connection import GONE, SLOW_CONSUMER, Connection
from gateway.ws_protocol import STALLED_CLOSE, DuologueProtocol


class Recorder:
    """A ``FrameWriter`` that keeps each write and close instead of sending them."""

    def __init__(self) -> None:
        self.on_resume: Callable[[], None] | None = None
        self.writes: list[list[str]] = []
        self.closes: list[tuple[int, str]] = []
        self.paused = False
        self.gone = False

    def write_now(self, frames: list[str], force: bool = False) -> bool:
        if self.gone:
            raise ClientDisconnected()
        if self.paused and not force:
            return False
        self.writes.append(list(frames))
        return True

    def close_now(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def resume(self) -> None:
        self.paused = False
        assert self.on_resume is not None
        self.on_resume()


async def turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_frames_pushed_in_one_loop_iteration_go_out_in_one_write() -> None:
    conn, writer = Connection("alice", 64), Recorder()
    conn.push("hello")  # queued before the writer is attached: flushed on attach
    conn.attach(writer)
    conn.push("a")
    await turn()
    for frame in ("b", "c", "d"):
        conn.push(frame)
    await turn()
    assert writer.writes == [["hello", "a"], ["b", "c", "d"]]
    assert conn.frames == [] and conn.delivered == 5


async def test_a_paused_transport_keeps_the_queue_until_it_resumes() -> None:
    conn, writer = Connection("alice", 8), Recorder()
    conn.attach(writer)
    writer.paused = True
    conn.push("a")
    conn.push("b")
    await turn()
    assert writer.writes == [] and conn.frames == ["a", "b"]
    writer.resume()
    await turn()
    assert writer.writes == [["a", "b"]] and conn.frames == []


async def test_a_queue_that_stays_full_closes_the_socket_1013() -> None:
    conn, writer = Connection("alice", 4), Recorder()
    conn.attach(writer)
    writer.paused = True
    for n in range(5):
        conn.push(f"m{n}")
    await turn()
    assert conn.close_code == SLOW_CONSUMER
    assert writer.closes == [(SLOW_CONSUMER, "slow consumer")] and writer.writes == []


async def test_a_close_with_flush_sends_the_queue_first_and_one_without_drops_it() -> None:
    flushed, flushing = Connection("alice", 64), Recorder()
    flushed.attach(flushing)
    flushed.push("last words")
    flushed.close(1001, "server shutting down", flush=True)
    await turn()
    assert flushing.writes == [["last words"]]
    assert flushing.closes == [(1001, "server shutting down")]
    dropped, dropping = Connection("bob", 64), Recorder()
    dropped.attach(dropping)
    dropped.push("never sent")
    dropped.close(1008, "token expired")
    dropped.close(1011, "a second close changes nothing")
    await turn()
    assert dropping.writes == [] and dropping.closes == [(1008, "token expired")]


async def test_a_close_that_flushes_goes_out_even_while_the_transport_is_paused() -> None:
    """A drain's 1001 (or a 1008 for refused frames) after the queue: a client that
    stopped reading must not keep its socket by never letting the transport resume."""
    conn, writer = Connection("alice", 64), Recorder()
    conn.attach(writer)
    writer.paused = True
    conn.push("queued")
    await turn()
    assert writer.writes == []
    conn.close(1001, "server shutting down", flush=True)
    await turn()
    assert writer.writes == [["queued"]] and writer.closes == [(1001, "server shutting down")]


async def test_a_vanished_client_closes_the_connection_and_detaches_it() -> None:
    conn, writer = Connection("alice", 64), Recorder()
    conn.attach(writer)
    writer.gone = True
    conn.push("into the void")
    await turn()
    assert conn.close_code == GONE and conn.writer is None and writer.on_resume is None
    conn.push("after")  # closed: nothing queued, nothing scheduled
    await turn()
    assert conn.frames == ["into the void"] and conn.flush_at is None


async def test_a_replay_waiting_for_room_is_woken_by_a_flush() -> None:
    conn, writer = Connection("alice", 4), Recorder()
    conn.attach(writer)
    writer.paused = True
    conn.push("a")
    conn.push("b")  # half full: a paced push waits
    paced = asyncio.create_task(conn.push_paced("replayed"))
    await turn()
    assert not paced.done()
    writer.resume()
    await asyncio.wait_for(paced, 1)
    await turn()
    assert writer.writes == [["a", "b"], ["replayed"]]


async def test_a_detached_connection_schedules_nothing() -> None:
    conn, writer = Connection("alice", 64), Recorder()
    conn.attach(writer)
    conn.push("a")
    conn.detach()  # the socket's receive loop ended before the flush ran
    await turn()
    assert writer.writes == [] and conn.flush_at is None and writer.on_resume is None


def closing(transport: asyncio.Transport) -> SimpleNamespace:
    """What ``DuologueProtocol._close_transport`` reads of its protocol, just after
    ``close_now`` wrote the close frame."""
    loop = asyncio.get_running_loop()
    state = SimpleNamespace(transport=transport, loop=loop, close_timeout=60.0,
                            closing_since=loop.time(), closing_left=-1, close_timer=None)
    state._close_transport = lambda: DuologueProtocol._close_transport(state)  # type: ignore[arg-type]
    return state


async def test_a_close_nobody_answers_aborts_a_write_buffer_that_stands_still() -> None:
    """After our close frame: an empty buffer is closed, a draining one waited on, and
    one that did not move for a whole wait, STALLED_CLOSE after the close, aborted
    (transport.close() would wait for it to drain for ever)."""
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()  # ``theirs`` never reads
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        transport.write(b"x" * 8_000_000)
        state = closing(transport)
        DuologueProtocol._close_transport(state)  # type: ignore[arg-type]
        assert not transport.is_closing() and state.close_timer is not None  # waits on
        state.close_timer.cancel()
        DuologueProtocol._close_transport(state)  # type: ignore[arg-type]
        assert not transport.is_closing()  # no progress, but not STALLED_CLOSE yet
        state.close_timer.cancel()
        state.closing_since = loop.time() - STALLED_CLOSE
        DuologueProtocol._close_transport(state)  # type: ignore[arg-type]
        assert transport.is_closing()
        await asyncio.sleep(0.05)
        assert transport.get_write_buffer_size() == 0  # aborted: the buffer is dropped
    finally:
        theirs.close()


async def test_a_close_nobody_answers_closes_an_empty_buffer_at_once() -> None:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    try:
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        state = closing(transport)
        DuologueProtocol._close_transport(state)  # type: ignore[arg-type]
        assert transport.is_closing() and state.close_timer is None
    finally:
        theirs.close()
