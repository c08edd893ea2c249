"""The Redis record format, in one place: every key and channel name, what each key
holds, and the layout scripts answer in.

Each key of a thread carries its partition as a Redis Cluster hash tag, so the
thread stream, its state, its dedupe keys, the partition log and the participants'
index entries for that partition share one slot and one script can write them all.


- thread stream entry: ``e`` = the encoded event; its id is the event id.
- partition log entry: ``t`` thread, ``i`` event id, ``e`` encoded event.
- thread state hash: what commands check atomically in the append script:
  ``x:<target>`` = the id of the MessageDeleted of a deleted message,
  ``r:<user>`` = the user's read receipt (an event id) and ``ri:<user>`` the id of the
  ReadUpTo that set it, ``lo`` = every event at or above this id is in the stream;
  events below it may be only in the Postgres archive (retention or a repair moved
  them out). A thread whose stream is gone but whose participants' index still names
  it has every event in the archive only.
- user index (per partition): thread -> the thread's newest event id. It outlives the
  stream, so a re-created stream continues above every id the thread ever had.

Append/read answers carry a status: ``FENCED`` means the partition is waiting for a
projector to check Redis against the archive (after Redis restarted or failed over).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from importlib.resources import files

EVENT = "e"
LOG_THREAD, LOG_ID, LOG_EVENT = "t", "i", "e"
DELETED = "x:"
RECEIPT = "r:"
RECEIPT_EVENT = "ri:"
ARCHIVED_BELOW = "lo"

OK, DUPLICATE, GUARD_FAILED, FENCED = 0, 1, 2, 3


def lua(package: str, *names: str) -> str:
    """A Redis script: ``adapters/ids.lua`` (event ids compared and stepped in Lua), then
    the named files of ``package`` in order."""
    return "".join([files("adapters").joinpath("ids.lua").read_text(),
                    *(files(package).joinpath(name).read_text() for name in names)])

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

    @staticmethod
    def thread_of_stream(key: str) -> str:
        return key[key.index(":t:") + 3:]

    def channel(self, user: str) -> str:
        """Pub/sub channel carrying live event frames for one user."""
        return f"{self.prefix}:live:{user}"
