"""Postgres ceilings on this machine: how fast rows shaped like ``events`` go in.

A table like the archive (thread text, id text, key numeric, kind text, payload jsonb,
ts timestamptz, PRIMARY KEY (thread, key)), ``--pg-rows`` rows written in batches of
``--pg-batch`` rows, one transaction per batch, from one connection, three ways:

- ``COPY ... FROM STDIN`` with psycopg's ``Copy.write_row``;
- ``executemany`` of a parameterised INSERT (psycopg 3 pipelines it: one round trip
  per batch, one Bind/Execute per row);
- the projector's own form: one ``INSERT ... SELECT FROM json_to_recordset(%s)`` per
  batch with the rows as one JSON document (``projector/tables.py`` ``ARCHIVE``).

The rows are built before the clock starts (what the projector spends building them
is its own cost). Each run has a database of its own, a fresh table per method.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg

from bench.harness import Result, Row, counted_runs, postgres_cpu, scratch, value
from bench.options import Options
from domain.ids import sort_key

TABLE = """CREATE TABLE bench_events (
  thread  text        NOT NULL,
  id      text        NOT NULL,
  key     numeric(40) NOT NULL,
  kind    text        NOT NULL,
  payload jsonb       NOT NULL,
  ts      timestamptz NOT NULL,
  PRIMARY KEY (thread, key)
)"""
INSERT = ("INSERT INTO bench_events (thread, id, key, kind, payload, ts) "
          "VALUES (%s, %s, %s, %s, %s::jsonb, %s)")
JSON_INSERT = ("INSERT INTO bench_events (thread, id, key, kind, payload, ts) "
               "SELECT t, i, k, kd, p::jsonb, to_timestamp(ms / 1000.0) "
               "FROM json_to_recordset(%s::json) AS u(t text, i text, k numeric, kd text, "
               "p json, ms int8)")
METHODS = ("copy", "executemany", "json_to_recordset")

Rows = list[tuple[str, str, int, str, str, datetime]]


def make_rows(count: int, threads: int = 2000) -> Rows:
    base = 1_764_000_000_000
    rows: Rows = []
    for n in range(count):
        ms, seq = base + n // 4, n % 4
        thread = f"dm:c{n % threads:05d}a:c{n % threads:05d}b"
        event_id = f"{ms}-{seq}"
        payload = (f'{{"kind":"MessageSent","sender":"c{n % threads:05d}a","body":"ceiling '
                   f'message {n}: the quick brown fox jumps over the lazy dog",'
                   f'"client_msg_id":"c-{n}"}}')
        rows.append((thread, event_id, sort_key(event_id), "MessageSent", payload,
                     datetime.fromtimestamp(ms / 1000, UTC)))
    return rows


def _copy(conn: psycopg.Connection, batch: Rows) -> None:
    with conn.transaction(), conn.cursor() as cur, cur.copy(
            "COPY bench_events (thread, id, key, kind, payload, ts) FROM STDIN") as copy:
        for row in batch:
            copy.write_row(row)


def _executemany(conn: psycopg.Connection, batch: Rows) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT, batch)


_encoder = msgspec.json.Encoder()


def _json(conn: psycopg.Connection, batch: Rows) -> None:
    document = _encoder.encode([
        {"t": t, "i": i, "k": k, "kd": kd, "p": msgspec.Raw(p.encode()),
         "ms": int(ts.timestamp() * 1000)} for t, i, k, kd, p, ts in batch]).decode()
    with conn.transaction():
        conn.execute(JSON_INSERT, (document,))


WRITERS = {"copy": _copy, "executemany": _executemany, "json_to_recordset": _json}


def measure(url: str, rows: Rows, batch: int) -> dict[str, Any]:
    """Rows/s of each method into a fresh table; also checks the row count."""
    out: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for method in METHODS:
            conn.execute("DROP TABLE IF EXISTS bench_events")
            conn.execute(TABLE)
            conn.execute("CHECKPOINT")  # start each method with no dirty pages pending
            write = WRITERS[method]
            cpu0 = postgres_cpu()
            start = time.perf_counter()
            for n in range(0, len(rows), batch):
                write(conn, rows[n:n + batch])
            seconds = time.perf_counter() - start
            cpu = postgres_cpu() - cpu0
            count = conn.execute("SELECT count(*) FROM bench_events").fetchone()
            out[method] = {"rate": len(rows) / seconds, "seconds": round(seconds, 3),
                           "postgres_cores": round(cpu / seconds, 3),
                           "ok": bool(count and count[0] == len(rows))}
        conn.execute("DROP TABLE IF EXISTS bench_events")
    return out


async def pg_ceilings(opts: Options) -> Result:
    result = Result()
    rows = await asyncio.to_thread(make_rows, opts.pg_rows)

    async def one() -> dict[str, Any]:
        async with scratch(opts, "ceil", database=True, schema=False) as world:
            run = await asyncio.to_thread(measure, world.database_url, rows, opts.pg_batch)
        return run | {"busy_before": world.busy_before}

    runs = await counted_runs(opts, result, "pg ceilings", one, lambda r: ", ".join(
        f"{m} {r[m]['rate']:,.0f} rows/s (postgres {r[m]['postgres_cores']} cores)"
        for m in METHODS))
    what = f"{opts.pg_rows:,} rows, {opts.pg_batch:,} per transaction"
    labels = {"copy": "psycopg COPY (write_row)",
              "executemany": "psycopg executemany INSERT (pipelined)",
              "json_to_recordset": "INSERT ... SELECT FROM json_to_recordset (projector's form)"}
    result.rows += [Row(f"{labels[m]}, events-shaped table, {what}", "rows/s",
                        [value(r, m, "rate", ok=r.get(m, {}).get("ok")) for r in runs],
                        ceiling=True) for m in METHODS]
    return result
