"""Every Redis key and channel name, in one place.

Each key of a thread carries its partition as a Redis Cluster hash tag, so the
thread stream, its state, its dedupe keys, the partition log and the participants'
index entries for that partition share one slot and one script can write them all.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass


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

