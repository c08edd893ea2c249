"""What one connection delivers, as a state machine without I/O: the heart of the
guarantees that a client gets every event once and in order, live or replayed.

The connection has a phase:

- ``HELLO``: the ``hello`` is not queued yet. Live frames wait; the hello's thread
  list will be the floor they are deduplicated against.
- ``LIVE``: a live frame goes out if it is newer than the thread's ``last`` delivered id.
- ``PAUSED``: pub/sub may have lost messages (its subscription was confirmed again
  after a reconnect). Live frames wait until a catch-up has replayed every thread up
  to its stream; then they are released, deduplicated, and the phase is ``LIVE`` again.

Each thread is, besides, one of:

- *live*: as the phase says;
- *replaying* (``sync`` or a catch-up is reading it from the archive and the stream):
  its live frames are held and released, deduplicated, when the replay ends;
- *stale*: a replay failed part-way. It stays held until a catch-up replays it from
  the last id delivered.

Inputs are method calls (a hello queued, a live frame, a subscription confirmed, a
replay begun, ended or failed, a catch-up round begun or finished); outputs are the
frames to queue, in order. A frame that would make a waiting list exceed the
connection's capacity raises ``SlowConsumerError``: the socket closes with 1013.
"""

from __future__ import annotations

from enum import Enum

from domain.ids import BEFORE_FIRST, EventKey, event_id_of, event_key


class Phase(Enum):
    HELLO = "hello"
    LIVE = "live"
    PAUSED = "paused"


class SlowConsumerError(Exception):
    """More frames are waiting for this connection than its capacity."""


class Delivery:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.phase = Phase.HELLO
        self.last: dict[str, EventKey] = {}
        self.waiting: list[tuple[str, str, str]] = []  # (thread, id, frame) while not LIVE
        self.held: dict[str, list[tuple[EventKey, str]]] = {}  # threads replaying
        self.stale: set[str] = set()
        self.awaiting_subscription = False  # its own SUBSCRIBE: that confirmation is no gap
        self.gap_before_hello = False
        self.catching_up = False
        self.catch_up_again = False

    # -- the connection's phase ----------------------------------------------------
    def hello(self, threads: list[tuple[str, str]]) -> tuple[list[str], bool]:
        """The hello listing ``threads`` (thread, last id) was queued.

        Returns the frames to queue after it, and True when a catch-up must start (a
        gap was confirmed while the hello state was being read)."""
        for thread, last_id in threads:
            self.last[thread] = event_key(last_id)
        if self.gap_before_hello:
            self.phase = Phase.PAUSED
            return [], self.want_catch_up()
        return self._resume(), False

    def subscription_confirmed(self) -> bool:
        """The user's channel was (re)subscribed. True when a catch-up must start."""
        if self.phase is Phase.HELLO:
            if not self.awaiting_subscription:
                self.gap_before_hello = True  # the hello state may predate the gap
            return False
        self.phase = Phase.PAUSED  # now, before any newer live frame can pass the gap
        return self.want_catch_up()

    def live(self, thread: str, event_id: str, frame: str) -> list[str]:
        """A live event frame of ``thread`` arrived from pub/sub."""
        if self.phase is not Phase.LIVE:
            self.waiting.append((thread, event_id, frame))
            self._bounded(len(self.waiting))
            return []
        key = event_key(event_id)
        held = self.held.get(thread)
        if held is not None:
            held.append((key, frame))
            self._bounded(len(held))
            return []
        if key > self.last.get(thread, BEFORE_FIRST):
            self.last[thread] = key
            return [frame]
        return []

    # -- replays of one thread -----------------------------------------------------
    def begin_replay(self, thread: str) -> None:
        self.held.setdefault(thread, [])

    def end_replay(self, thread: str, newest: str) -> list[str]:
        """A replay delivered every event up to ``newest``: release newer held frames."""
        self.stale.discard(thread)
        top = event_key(newest)
        out: list[str] = []
        for key, frame in sorted(self.held.pop(thread, []), key=lambda item: item[0]):
            if key > top:
                top = key
                out.append(frame)
        if top > BEFORE_FIRST or thread in self.last:
            self.last[thread] = top  # a thread without events leaves no state (section 8)
        return out

    def fail_replay(self, thread: str, newest: str | None = None) -> None:
        """A replay stopped part-way after delivering up to ``newest`` (if it got that
        far): the thread stays held until a catch-up replays the rest."""
        self.stale.add(thread)
        if newest is not None:
            self.last[thread] = event_key(newest)

    # -- catch-up: every thread up to its stream -----------------------------------
    def want_catch_up(self) -> bool:
        """A catch-up is needed. True when none is running (the caller starts one)."""
        if self.catching_up:
            self.catch_up_again = True
            return False
        self.catching_up = True
        return True

    def begin_round(self) -> None:
        self.catch_up_again = False

    def behind(self, index: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """(thread, after) to replay, given the user's index of (thread, newest id)."""
        todo = set(self.stale)
        todo.update(t for t, newest in index
                    if event_key(newest) > self.last.get(t, BEFORE_FIRST))
        return [(t, event_id_of(self.last.get(t, BEFORE_FIRST))) for t in sorted(todo)]

    def end_round(self) -> list[str] | None:
        """A round replayed every thread behind. None when another round is due (a new
        gap meanwhile); else the catch-up is over: the waiting frames to queue."""
        if self.catch_up_again:
            return None
        self.catching_up = False
        return self._resume()

    def stop_catch_up(self) -> None:
        """The catch-up task ended without finishing (the socket closed, or it failed):
        the next gap starts a new one."""
        self.catching_up = False

    def _resume(self) -> list[str]:
        self.phase = Phase.LIVE
        waiting, self.waiting = self.waiting, []
        out: list[str] = []
        for item in waiting:
            out += self.live(*item)
        return out

    def _bounded(self, size: int) -> None:
        if size > self.capacity:
            raise SlowConsumerError
