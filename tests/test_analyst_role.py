"""The read-only analyst role (protocol.md section 4, docs/schema.md).

``duologue_analyst`` logs in (trust on the test server: it has no password) and reads
every table; it can change nothing, neither in its read-only default nor after it
turns read-only off, when privileges alone must refuse every write.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from projector.rebuild import rebuild

ROLE = "duologue_analyst"
TABLES = ("events", "messages", "threads", "read_receipts", "projector_checkpoints",
          "projector_workers", "dead_letters", "schema_migrations")
PROJECTION = ("messages", "threads", "read_receipts")
# a column of each table, for UPDATE ... SET c = c
COLUMN = {"events": "kind", "messages": "body", "threads": "last_id", "read_receipts": "up_to",
          "projector_checkpoints": "log_id", "projector_workers": "host",
          "dead_letters": "reason", "schema_migrations": "name"}
WRITES = {
    "insert": "INSERT INTO {t} DEFAULT VALUES",
    "update": "UPDATE {t} SET {c} = {c}",
    "delete": "DELETE FROM {t}",
    "truncate": "TRUNCATE {t}",
    "lock": "LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE",  # Postgres allows it read-only
    "row lock": "SELECT * FROM {t} FOR KEY SHARE",  # would block the projector's updates
    "alter": "ALTER TABLE {t} ADD COLUMN analyst_note text",
    "index": "CREATE INDEX analyst_index ON {t} ({c})",
    "drop": "DROP TABLE {t}",
}
DDL = {
    "create table": "CREATE TABLE analyst_table (i int)",
    "create table in public": "CREATE TABLE public.analyst_table (i int)",
    "create table as": "CREATE TABLE analyst_copy AS SELECT * FROM messages",
    "create view": "CREATE VIEW analyst_view AS SELECT 1 AS one",
    "create function": "CREATE FUNCTION analyst_f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "create schema": "CREATE SCHEMA analyst_schema",
    "replace helper": "CREATE OR REPLACE FUNCTION duologue_ts(ms bigint) RETURNS timestamptz "
                      "LANGUAGE sql AS 'SELECT now()'",
    "drop helper": "DROP FUNCTION duologue_event_key(text)",
    "advance archive sequence": "SELECT nextval('events_archived_seq')",
}
MODES = ("read-only default", "read-only off")


def analyst_url(url: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=ROLE)


def connect(url: str, mode: str) -> psycopg.Connection:
    conn = psycopg.connect(analyst_url(url), autocommit=True)
    if mode == "read-only off":
        conn.execute("SET default_transaction_read_only = off")
    return conn


@pytest.fixture(params=MODES)
def analyst(request: pytest.FixtureRequest, database_url: str) -> Iterator[psycopg.Connection]:
    with connect(database_url, request.param) as conn:
        yield conn


def refused(conn: psycopg.Connection, statement: str) -> psycopg.Error:
    """Run ``statement`` in a transaction of its own, never committed (should a write
    ever succeed, the shared database keeps its rows); return the error it must raise."""
    with pytest.raises(psycopg.Error) as caught, conn.transaction(force_rollback=True):
        conn.execute(statement.encode())
    return caught.value


def expected_errors(conn: psycopg.Connection) -> tuple[type[psycopg.Error], ...]:
    """Read-only off: only privileges stand in the way. Default: either refusal will do."""
    if conn.execute("SHOW default_transaction_read_only").fetchone() == ("off",):
        return (errors.InsufficientPrivilege,)
    return (errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)


def test_the_role_logs_in_read_only_with_no_power_of_its_own(database_url):
    with psycopg.connect(analyst_url(database_url), autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (ROLE,)
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
        role = conn.execute(
            "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
            "rolbypassrls FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        assert role == (True, False, False, False, False, False)
        assert conn.execute(
            "SELECT count(*) FROM pg_auth_members WHERE member = %s::regrole",
            (ROLE,)).fetchone() == (0,), "member of another role"
        owned = conn.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = %s::regrole", (ROLE,)).fetchone()
        assert owned == (0,)


@pytest.mark.parametrize("table", TABLES)
def test_it_reads_every_table(analyst, table):
    rows = analyst.execute(f"SELECT * FROM {table} LIMIT 1".encode()).fetchall()
    assert isinstance(rows, list)
    (count,) = analyst.execute(f"SELECT count(*) FROM {table}".encode()).fetchone() or (None,)
    assert count is not None


def test_it_calls_the_helper_functions(analyst):
    row = analyst.execute(
        "SELECT duologue_event_key('1732467890123-5'), duologue_ms(duologue_ts(1732467890123))"
    ).fetchone()
    assert row == (173246789012300000000000000000005, 1732467890123)


def test_read_only_is_only_a_default_the_analyst_can_turn_off(database_url):
    """So the privileges below are what really protects the data."""
    with connect(database_url, "read-only off") as conn:
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("off",)


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("table", TABLES)
def test_it_cannot_write_any_table(analyst, table, write):
    statement = WRITES[write].format(t=table, c=COLUMN[table])
    error = refused(analyst, statement)
    assert isinstance(error, expected_errors(analyst)), (statement, type(error), error)


@pytest.mark.parametrize("what", DDL)
def test_it_cannot_create_or_replace_anything(analyst, what):
    error = refused(analyst, DDL[what])
    assert isinstance(error, expected_errors(analyst)), (DDL[what], type(error), error)


@pytest.mark.parametrize("mode", MODES)
def test_after_a_rebuild_the_swapped_in_tables_are_readable_and_still_protected(
        fresh_database, mode):
    """``duologue rebuild`` replaces messages, threads and read_receipts by new tables."""
    with psycopg.connect(fresh_database, autocommit=True) as owner:
        before = dict(owner.execute(
            "SELECT relname, oid FROM pg_class WHERE relname = ANY(%s)", (list(PROJECTION),)))
    rebuild(fresh_database, lambda phase, done: None)
    with psycopg.connect(fresh_database, autocommit=True) as owner:
        after = dict(owner.execute(
            "SELECT relname, oid FROM pg_class WHERE relname = ANY(%s)", (list(PROJECTION),)))
    assert set(after) == set(PROJECTION)
    assert all(after[t] != before[t] for t in PROJECTION), "rebuild did not swap tables"
    with connect(fresh_database, mode) as conn:
        for table in PROJECTION:
            conn.execute(f"SELECT * FROM {table} LIMIT 1".encode()).fetchall()
            for write in ("insert", "update", "delete", "truncate", "lock"):
                error = refused(conn, WRITES[write].format(t=table, c=COLUMN[table]))
                assert isinstance(error, expected_errors(conn)), (table, write, error)
