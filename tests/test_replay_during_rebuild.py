"""protocol.md section 7: a replay during a rebuild is refused or composed, never undone by
the swap (two rebuilds at once: test_rebuild.py).
"""

from __future__ import annotations

import subprocess
import time
from typing import Any

import psycopg

from domain.ids import thread_id
from tests.projection_support import (
    Fleet,
    thread_streams,
)
from tests.record_support import (
    assert_projection_of,
    duologue,
    duologue_start,
    finish,
    leftovers,
    shown,
)
from tests.support import Client, uid
from tests.workload_support import Workload

# --- 3. rebuild against a second rebuild, and against a replay ---------------------------

SYNTHETIC_EVENTS = 300_000
SYNTHETIC_THREADS = 2000
SYNTHETIC_ARCHIVE = """
INSERT INTO events (thread, id, key, kind, payload, ts)
SELECT 'dm:syn' || (g %% %(threads)s) || ':tyn' || (g %% %(threads)s),
       (1700000000000 + g) || '-0', duologue_event_key((1700000000000 + g) || '-0'),
       'MessageSent',
       jsonb_build_object('kind', 'MessageSent', 'sender', 'syn' || (g %% %(threads)s),
                          'body', 'archived message ' || g, 'client_msg_id', 'c' || g),
       duologue_ts(1700000000000 + g)
FROM generate_series(1, %(events)s) AS g
"""
# The fold of a thread of MessageSent events only: one message per event, as sent.
SYNTHETIC_DIFF = """
WITH want AS (SELECT thread, id, payload->>'sender' AS sender, payload->>'body' AS body,
                     duologue_ms(ts) AS sent FROM events WHERE thread LIKE 'dm:syn%%'),
     got AS (SELECT thread, id, sender, body, duologue_ms(sent_at) AS sent FROM messages
             WHERE thread LIKE 'dm:syn%%' AND edited_at IS NULL AND deleted_at IS NULL),
     heads AS (SELECT thread, count(*) AS n, max(key) AS k, min(ts) AS f, max(ts) AS l
               FROM events WHERE thread LIKE 'dm:syn%%' GROUP BY thread)
SELECT (SELECT count(*) FROM (SELECT * FROM want EXCEPT ALL SELECT * FROM got) AS d),
       (SELECT count(*) FROM (SELECT * FROM got EXCEPT ALL SELECT * FROM want) AS d),
       (SELECT count(*) FROM messages WHERE thread LIKE 'dm:syn%%'),
       (SELECT count(*) FROM heads h FULL JOIN (SELECT * FROM threads
                                               WHERE thread LIKE 'dm:syn%%') t USING (thread)
        WHERE h.n IS DISTINCT FROM t.events OR h.k IS DISTINCT FROM t.last_key
           OR h.f IS DISTINCT FROM t.first_at OR h.l IS DISTINCT FROM t.last_at)
"""


def fill_archive(conn: psycopg.Connection) -> None:
    """Archived events of threads Redis no longer holds (retention), enough that a
    rebuild works for a few seconds."""
    conn.execute(SYNTHETIC_ARCHIVE, {"threads": SYNTHETIC_THREADS, "events": SYNTHETIC_EVENTS})


def assert_archive_only_threads_projected(conn: psycopg.Connection) -> None:
    row = conn.execute(SYNTHETIC_DIFF).fetchone()
    assert row == (0, 0, SYNTHETIC_EVENTS, 0), (
        "projection of the archive-only threads != their fold: (archived events without "
        "their message, messages without their event, messages, threads rows that differ) "
        f"= {row}")


def wait_loading(conn: psycopg.Connection, process: subprocess.Popen[str]) -> None:
    """Until the rebuild copies (COPY) the archive's fold into its fresh tables: it has
    read its snapshot of the archive by then."""
    deadline = time.monotonic() + 30
    while not conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND query ILIKE 'COPY %'").fetchone()[0]:
        if process.poll() is not None:
            raise AssertionError(f"the rebuild ended before it loaded:\n{shown(finish(process))}")
        assert time.monotonic() < deadline, "the rebuild never started loading"
        time.sleep(0.01)


def assert_clear_refusal(done: subprocess.CompletedProcess[str], what: str) -> None:
    """Exit non-zero with a readable message: no traceback, a line or three on stderr."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, shown(done)
    assert "Traceback" not in done.stderr, f"{what} crashed instead of refusing:\n{shown(done)}"
    assert 1 <= len(lines) <= 3, f"{what} did not refuse in a line or three:\n{shown(done)}"


async def _project_some(gateway: Any, fleet: Fleet, seed: int) -> None:
    async with Workload(gateway.ws_url, users=8, threads=10, seed=seed) as work:
        assert await work.run(300) == 300
    fleet.burst()


async def test_a_replay_during_a_rebuild_is_not_undone_by_its_swap(
        gateway, fleet, rclient, db, pkeys):
    """Defect 4 (replay during rebuild). A message's archived copy and its projected row
    are damaged (as by a bad manual fix); the stream still has the message as sent. A
    ``duologue rebuild`` starts (it reads the damaged archive), and while it loads, an
    operator runs ``duologue replay --thread``, which repairs archive and row from the
    stream. When both have ended the repair must be in effect (the rebuild's swap must
    not bring the damage back), unless the replay refused in a readable line while the
    rebuild ran: then a replay after the rebuild repairs it."""
    fill_archive(db)
    await _project_some(gateway, fleet, seed=37)
    alice, bob = uid("a"), uid("b")
    thread = thread_id(alice, bob)
    a = await Client.connect(gateway.ws_url, alice)
    try:
        acks = [await a.say(bob, f"message {n} as sent") for n in range(5)]
    finally:
        await a.close()
    assert all(x["type"] == "ack" for x in acks), acks
    fleet.burst()
    target = acks[2]["id"]
    assert db.execute("UPDATE events SET payload = jsonb_set(payload, '{body}', '\"forged\"') "
                      "WHERE thread = %s AND id = %s", (thread, target)).rowcount == 1
    assert db.execute("UPDATE messages SET body = 'forged' WHERE thread = %s AND id = %s",
                      (thread, target)).rowcount == 1
    env = fleet.env
    rebuild = duologue_start(env, "rebuild")
    try:
        wait_loading(db, rebuild)
        replay = duologue(env, "replay", "--thread", thread)
        rebuilding = rebuild.poll() is None
        rebuilt = finish(rebuild)
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
    both = f"rebuild: {shown(rebuilt)}\nreplay: {shown(replay)}"
    assert rebuilding, f"the rebuild ended before the replay did; nothing was tested:\n{both}"
    assert rebuilt.returncode == 0 and "Traceback" not in rebuilt.stderr, both
    assert "Traceback" not in replay.stderr, both
    if replay.returncode != 0:  # it refused while the rebuild ran: run it again now
        assert_clear_refusal(replay, "the replay during a rebuild")
        again = duologue(env, "replay", "--thread", thread)
        assert again.returncode == 0, shown(again)
    body = db.execute("SELECT body FROM messages WHERE thread = %s AND id = %s",
                      (thread, target)).fetchone()
    archived = db.execute("SELECT payload->>'body' FROM events WHERE thread = %s AND id = %s",
                          (thread, target)).fetchone()
    assert (body, archived) == (("message 2 as sent",), ("message 2 as sent",)), (
        f"after the replay (exit {replay.returncode}) and the rebuild, {target} reads "
        f"{body} in messages and {archived} in the archive: the replay's repair was "
        f"undone by the rebuild's swap\n{both}")
    assert leftovers(db) == []
    assert_archive_only_threads_projected(db)
    assert_projection_of(db, thread_streams(rclient, pkeys))
    verify = duologue(env, "verify")
    assert verify.returncode == 0, shown(verify)
