"""The analyst role cannot stall or block the projector (protocol.md section 4, issue 10;
migration 0007): no advisory locks, a statement timeout and a connection limit; and the
projector's own lock waits are bounded and logged. Real Postgres, a real projector."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from domain.ids import thread_id
from projector.tables import PROJECTION_LOCK
from tests.support import uid
from tests.test_analyst_role import analyst_url
from tests.webhook_support import send_many, wait_until

LOCKS = [f"SELECT pg_advisory_lock({PROJECTION_LOCK})",
         f"SELECT pg_try_advisory_lock({PROJECTION_LOCK})",
         "SELECT pg_advisory_lock_shared(1, 2)",
         "SELECT pg_try_advisory_lock_shared(7)",
         "BEGIN; SELECT pg_advisory_xact_lock(7)",
         "BEGIN; SELECT pg_try_advisory_xact_lock_shared(7)"]


@pytest.mark.parametrize("statement", LOCKS)
def test_the_analyst_cannot_take_an_advisory_lock(fresh_database, statement):
    """Attacks: an analyst's session holding the lock every projector batch shares (the
    projection stops) or a partition's ownership lock (no projector can take it)."""
    with (psycopg.connect(analyst_url(fresh_database), autocommit=True) as conn,
          pytest.raises(psycopg.errors.InsufficientPrivilege)):
        for part in statement.split("; "):
            conn.execute(part)


def test_the_analyst_has_a_statement_timeout_and_a_connection_limit(fresh_database):
    """Attacks: an analyst's query running for hours on the projection's Postgres, or a
    notebook opening connections until the server has none left for the projector."""
    with psycopg.connect(analyst_url(fresh_database), autocommit=True) as conn:
        assert conn.execute("SHOW statement_timeout").fetchone() == ("30s",)
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SET statement_timeout = '200ms'")
            conn.execute("SELECT pg_sleep(2)")
        row = conn.execute("SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (10,)


def test_a_batch_waits_for_a_lock_at_most_5_s_logs_it_and_goes_on(
        fleet, redis_url, pkeys, fresh_database):
    """Attacks: a projector with no lock_timeout waiting for ever behind a stray session's
    lock (silently), or giving up on the batch."""
    alice, bob = uid("alice"), uid("bob")
    thread = thread_id(alice, bob)
    projector = fleet.start()
    with psycopg.connect(fresh_database, autocommit=True) as holder:
        wait_until(lambda: holder.execute(
            "SELECT count(*) FROM projector_checkpoints").fetchone()[0] > 0, 15,
            "the projector owns its partitions")
        holder.execute("SELECT pg_advisory_lock(%s)", (PROJECTION_LOCK,))  # exclusive
        asyncio.run(send_many(redis_url, pkeys, [(thread, alice, "behind a lock")]))
        wait_until(lambda: "projector_lock_wait" in projector.log(), 15,
                   "the lock wait logged")
        assert holder.execute("SELECT count(*) FROM messages").fetchone() == (0,)
        holder.execute("SELECT pg_advisory_unlock(%s)", (PROJECTION_LOCK,))
        started = time.monotonic()
        wait_until(lambda: holder.execute(
            "SELECT count(*) FROM messages WHERE thread = %s", (thread,)).fetchone() == (1,),
            15, "the batch projected once the lock is free")
        assert time.monotonic() - started < 7
    assert projector.process is not None and projector.process.poll() is None
