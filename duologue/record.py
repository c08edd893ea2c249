"""The Redis record format of a thread, in one place: what its keys hold.

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

from importlib.resources import files

EVENT = "e"
LOG_THREAD, LOG_ID, LOG_EVENT = "t", "i", "e"
DELETED = "x:"
RECEIPT = "r:"
RECEIPT_EVENT = "ri:"
ARCHIVED_BELOW = "lo"

OK, DUPLICATE, GUARD_FAILED, FENCED = 0, 1, 2, 3


def lua(package: str, *names: str) -> str:
    """A Redis script: ``duologue/ids.lua`` (event ids compared and stepped in Lua), then
    the named files of ``package`` in order."""
    return "".join([files("duologue").joinpath("ids.lua").read_text(),
                    *(files(package).joinpath(name).read_text() for name in names)])
