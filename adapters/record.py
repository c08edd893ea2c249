"""The Redis record format, in one place: every key and channel name, what each key
holds, and the layout scripts answer in.

Each key of a thread carries its partition as a Redis Cluster hash tag, so the
thread stream, its state, its dedupe keys, the partition log and the participants'
index entries for that partition share one slot and one script can write them all.

Event ids are Redis stream ids, ``<ms>-<seq>`` (``domain.ids``: ``event_key``, ``ms_of``,
``successor``). What each key holds:

- thread stream entry: ``e`` = the encoded event; its id is the event id.
- partition log entry: ``t`` thread, ``i`` event id, ``e`` encoded event.
- thread state hash: what commands check atomically in the append script:
  ``x:<target>`` = the id of the MessageDeleted of a deleted message,
  ``r:<user>`` = the user's read receipt (an event id) and ``ri:<user>`` the id of the
  ReadUpTo that set it, ``lo`` = every event at or above this id is in the stream;
  events below it may be only in the Postgres archive (retention or a repair moved
  them out). A thread whose stream is gone but whose participants' index still names
  it has every event in the archive only.
- thread state, v1.1: ``b:<user>`` = the id of the ThreadBlocked of ``user`` that stands
  (absent: ``user`` does not block the thread), ``ub:<user>`` = the id of ``user``'s last
  ThreadUnblocked; both stay while the thread has any key in Redis (retention keeps them).
  ``a:<target>:<user>`` = ``user``'s reactions on message ``target``: the id of the last
  event that changed them, then one ``<emoji> TAB <id of its ReactionAdded>`` per
  reaction, newline separated (``encode_reactions``/``decode_reactions``). Absent while the
  target is in the stream: no reactions; absent for an archived-only target: the
  projection's ``reactions`` rows hold them (retention drops the field only once its
  last change is archived).
- user index (per partition): thread -> the thread's newest event id. It outlives the
  stream, so a re-created stream continues above every id the thread ever had.

Scripts: every Redis script starts with ``prelude()`` (these names as Lua locals) and
``adapters/ids.lua`` (ids compared and stepped); each script's KEYS/ARGV layout is in its
header and built by one Python function beside the code that runs it. Answers carry a
status first: ``FENCED`` means the partition is waiting for a projector to check Redis
against the archive (after Redis restarted or failed over).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib.resources import files

EVENT = "e"  # thread stream entry: the encoded event
LOG_THREAD, LOG_ID, LOG_EVENT = "t", "i", "e"  # partition log entry
DELETED = "x:"  # thread state: x:<target> = id of the MessageDeleted
RECEIPT = "r:"  # thread state: r:<user> = the user's read receipt
RECEIPT_EVENT = "ri:"  # thread state: ri:<user> = the ReadUpTo that set it
BLOCKED = "b:"  # thread state: b:<user> = the ThreadBlocked of <user> that stands
UNBLOCKED = "ub:"  # thread state: ub:<user> = <user>'s last ThreadUnblocked
REACTIONS = "a:"  # thread state: a:<target>:<user> = <user>'s reactions on <target>
ARCHIVED_BELOW = "lo"  # thread state: events below this id may be in the archive only
ALL_ARCHIVED = "+"  # a read's ``lo`` when the thread has no stream: all is archived
# append ARGV: stands for the new event's id inside a state value (a control character:
# never part of an event id or an emoji)
NEW_ID = "\x01"
B_EVENT, B_LOG_THREAD, B_LOG_ID, B_LOG_EVENT = (
    EVENT.encode(), LOG_THREAD.encode(), LOG_ID.encode(), LOG_EVENT.encode())

# the status a script answers first; BLOCKED: the other participant blocks the thread;
# MISSING: a reply's target is not a MessageSent of the thread; ARCHIVED: it may be one
# that only the Postgres archive holds (the caller checks there); RATE_LIMITED: the
# sender's budget (protocol.md section 8) is spent, the reply's second item is the wait in ms
OK, DUPLICATE, GUARD_FAILED, FENCED, BLOCKED_STATUS, MISSING, ARCHIVED, RATE_LIMITED = range(8)

_LUA_NAMES = {
    "EVENT": EVENT, "LOG_THREAD": LOG_THREAD, "LOG_ID": LOG_ID, "LOG_EVENT": LOG_EVENT,
    "DELETED": DELETED, "RECEIPT": RECEIPT, "RECEIPT_EVENT": RECEIPT_EVENT,
    "BLOCKED": BLOCKED, "UNBLOCKED": UNBLOCKED, "REACTIONS": REACTIONS,
    "ARCHIVED_BELOW": ARCHIVED_BELOW, "ALL_ARCHIVED": ALL_ARCHIVED, "NEW_ID": NEW_ID,
    "OK": OK, "DUPLICATE": DUPLICATE, "GUARD_FAILED": GUARD_FAILED, "FENCED": FENCED,
    "BLOCKED_STATUS": BLOCKED_STATUS, "MISSING": MISSING, "ARCHIVED": ARCHIVED,
    "RATE_LIMITED": RATE_LIMITED,
}


def _lua_literal(value: object) -> str:
    """A Lua 5.1 literal (decimal escapes: Lua 5.1 has no \\x)."""
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + "".join(c if c.isprintable() and c not in "'\\" else f"\\{ord(c)}"
                         for c in text) + "'"


def prelude() -> str:
    """The record format's names as Lua locals, the head of every script."""
    return "".join(f"local {name} = {_lua_literal(value)}\n"
                   for name, value in _LUA_NAMES.items())


def lua(package: str, *names: str) -> str:
    """A Redis script: ``prelude()``, ``adapters/ids.lua`` (event ids compared and
    stepped in Lua), then the named files of ``package`` in order."""
    return "".join([prelude(), files("adapters").joinpath("ids.lua").read_text(),
                    *(files(package).joinpath(name).read_text() for name in names)])


def encode_reactions(last_change: str, emoji: dict[str, str]) -> str:
    """The ``a:<target>:<user>`` value: the last change's id, then emoji TAB id lines."""
    return "\n".join([last_change, *(f"{e}\t{i}" for e, i in emoji.items())])


def decode_reactions(value: str) -> tuple[str, dict[str, str]]:
    last_change, *lines = value.split("\n")
    return last_change, dict(line.split("\t", 1) for line in lines)


def log_fields(thread: str, event_id: str, payload: str) -> dict[str, str]:
    """A partition log entry's fields (what ``append.lua`` writes)."""
    return {LOG_THREAD: thread, LOG_ID: event_id, LOG_EVENT: payload}

@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "dl"
    partitions: int = 64

    def partition(self, thread: str) -> int:
        return zlib.crc32(thread.encode()) % self.partitions

    def _tag(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}"

    def stream(self, thread: str) -> str:
        """The thread's event log; the event id is born here."""
        return f"{self._tag(self.partition(thread))}:t:{thread}"

    def state(self, thread: str) -> str:
        """Hash of what commands check: deleted targets (``x:<id>``), receipts (``r:<user>``)."""
        return f"{self._tag(self.partition(thread))}:s:{thread}"

    def dedupe(self, thread: str, sender: str, client_msg_id: str) -> str:
        return f"{self._tag(self.partition(thread))}:d:{thread}:{sender}:{client_msg_id}"

    def budget(self, user: str) -> str:
        """The user's command and body-byte budget (token buckets, ``append.lua``). Not in
        a partition's slot: one per user across all of them (single-node Redis)."""
        return f"{self.prefix}:rl:{{{user}}}"

    def sockets(self, user: str) -> str:
        """How many WebSockets the user has open, per gateway (``gateway/sockets.lua``)."""
        return f"{self.prefix}:so:{{{user}}}"

    def read_budget(self, user: str) -> str:
        """The user's read budget (``sync``, ``watch``, HTTP reads): a token bucket."""
        return f"{self.prefix}:rr:{{{user}}}"

    def typing(self, thread: str, sender: str) -> str:
        """Set for ``typing_every`` ms after a relayed typing notice: the throttle."""
        return f"{self._tag(self.partition(thread))}:ty:{thread}:{sender}"

    def log(self, partition: int) -> str:
        """The partition log the projector consumes."""
        return f"{self._tag(partition)}:log"

    def index(self, partition: int, user: str) -> str:
        """Hash thread -> last event id, for the user's threads in one partition."""
        return f"{self._tag(partition)}:u:{user}"

    def epoch(self, partition: int) -> str:
        """The Redis run id under which a projector last checked this partition against
        the archive; appends and replays of the partition wait while it names another."""
        return f"{self._tag(partition)}:epoch"

    def attempts(self, partition: int) -> str:
        """How often projector processes started a batch at the same log position and
        died before committing it (a crash loop), and the stretch to step through."""
        return f"{self._tag(partition)}:attempts"

    def pattern(self, partition: int | None = None) -> str:
        """SCAN pattern of every key of one partition (or of all partitions)."""
        return f"{self.prefix}:{{p{'*' if partition is None else partition}}}:*"

    def stream_pattern(self) -> str:
        """SCAN pattern of every thread stream."""
        return f"{self.prefix}:{{p*}}:t:*"

    def thread_pattern(self) -> str:
        """SCAN pattern of every thread stream and thread state."""
        return f"{self.prefix}:{{p*}}:[ts]:*"

    def dedupe_pattern(self) -> str:
        """SCAN pattern of every dedupe key."""
        return f"{self.prefix}:{{p*}}:d:*"

    @staticmethod
    def thread_of_stream(key: str) -> str:
        return key[key.index(":t:") + 3:]

    @staticmethod
    def is_stream(key: bytes) -> bool:
        """Whether a key SCAN found is a thread stream."""
        return b":t:" in key

    @staticmethod
    def partition_of(key: bytes) -> int:
        """The partition in a key's hash tag."""
        return int(key[key.index(b"{p") + 2:key.index(b"}")])

    def channel(self, user: str) -> str:
        """Pub/sub channel carrying live event frames for one user."""
        return f"{self.prefix}:live:{user}"
