"""The operators' commands: status, replay, rebuild, verify (protocol.md section 4)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import psycopg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from adapters.record import Keys
from adapters.redis_connect import SyncRedis, sync_redis
from adapters.settings import Settings, SettingsError
from domain.errors import DomainError
from domain.ids import check_event_id, participants

if TYPE_CHECKING:
    from projector.status import Status

# Wide enough off a terminal (pipes, CI logs) that event ids are never cut
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


@contextmanager
def _connect(settings: Settings) -> Iterator[tuple[psycopg.Connection, SyncRedis, Keys]]:
    settings.require("redis_url", "database_url")
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        _require_schema(conn)
        client = sync_redis(settings.redis_url)
        try:
            yield conn, client, Keys(settings.prefix, settings.partitions)
        finally:
            client.close()


class SchemaMissingError(SettingsError):
    """The database has not been migrated (or is older than this code)."""


def _require_schema(conn: psycopg.Connection) -> None:
    from adapters.postgres import migrations, schema_version

    try:
        version = schema_version(conn)
    except psycopg.errors.UndefinedTable:
        version = 0
        conn.rollback()
    latest = migrations()[-1].version
    if version < latest:
        raise SchemaMissingError(f"the database schema is at version {version}, this code needs "
                            f"{latest}: run `duologue migrate` first")


def cmd_status(args: argparse.Namespace) -> int:
    from projector.status import status

    with _connect(Settings.from_env()) as (conn, client, keys):
        found = status(conn, client, keys)
    if args.json:
        print(json.dumps(found.as_dict(), indent=2))
        return 0
    for table in status_tables(found, every=args.all):
        out.print(table)
    return 0


def status_tables(found: Status, every: bool = False) -> list[Table]:
    """The three tables of ``duologue status``, laid out to fit 80 columns without cutting
    an id: a partition's owner is the worker's number in the Workers table, the lag's age
    shares its cell, and no column repeats another (pending is always the lag, since reads
    start at the checkpoint; a worker's pid is in its name; ``--json`` keeps both). Past
    80 columns' worth, a cell wraps (at a space, else mid-word); none is ever cut short."""
    number = {w["name"]: f"#{i}" for i, w in enumerate(found.workers, 1)}
    nodes = sorted({p.node for p in found.partitions})
    node_number = {n: f"N{i}" for i, n in enumerate(nodes, 1)}
    several = len(nodes) > 1  # a Redis Cluster: which node holds each partition
    table = _table("Partition logs", "part", "checkpoint", "projected", "lag", "dead",
                   "owner", *(["node"] if several else []), "in\nRedis", "Redis\nbytes")
    for p in found.partitions:
        if p.projected or p.lag_events or p.dead_letters or p.redis_events or every:
            lag = f"{p.lag_events} ({p.lag_seconds:.1f} s)" if p.lag_events else "0"
            table.add_row(str(p.partition), p.checkpoint, str(p.projected), lag,
                          str(p.dead_letters), number.get(p.owner or "", "-"),
                          *([node_number[p.node]] if several else []),
                          str(p.redis_events), _size(p.redis_bytes))
    if not table.rows:
        table.caption = "no partition has had an event yet (--all lists every partition)"
    _wrap_only(table, "lag", "Redis\nbytes")
    workers = _table("Workers", "#", "alive", "heartbeat\nage s", "parts",
                     "worker (host:pid:tag)")
    for w in found.workers:
        workers.add_row(number[w["name"]], "yes" if w["alive"] else "no",
                        str(w["heartbeat_age_s"]), str(w["partitions"]), w["name"])
    _wrap_only(workers, "worker (host:pid:tag)")  # a long host name folds
    totals = _table("Log and projection", "", "count")
    for name, value in found.totals.items():
        totals.add_row(name.replace("_", " "), str(value))
    for name, value in found.webhooks.items():
        totals.add_row(f"webhook {name}", str(value))
    tables = [table, workers, totals]
    if several:
        held = _table("Redis Cluster nodes", "node", "host:port", "partitions")
        for name in nodes:
            held.add_row(node_number[name], name,
                         str(sum(p.node == name for p in found.partitions)))
        tables.insert(2, held)
    return tables


def _wrap_only(table: Table, *headers: str) -> None:
    """On a narrow terminal only these columns wrap (the ids and numbers keep whole)."""
    for column in table.columns:
        column.no_wrap = column.header not in headers


def _table(title: str, *headers: str) -> Table:
    table = Table(title=title, show_edge=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    return table


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def cmd_replay(args: argparse.Namespace) -> int:
    from projector.reproject import replay
    from projector.tables import BusyError

    try:
        participants(args.thread)
        start = check_event_id(args.start)
    except DomainError as exc:
        err.print(f"duologue replay: {exc.message}")
        return 2
    with _connect(Settings.from_env()) as (conn, client, keys):
        try:
            done = replay(conn, client, keys, args.thread, start)
        except BusyError as exc:
            err.print(f"duologue replay: {exc}")
            return 1
    if not done.events and not done.skipped:
        err.print(f"duologue replay: no thread {args.thread}: neither the archive nor Redis "
                  "holds an event of it")
        return 1
    out.print(f"replayed {done.thread}: {done.events} events, {done.messages} messages "
              f"rewritten" + (f", {done.skipped} undecodable entries skipped"
                              if done.skipped else ""))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from projector.audit import all_threads, audit

    with _connect(Settings.from_env()) as (conn, client, keys):
        threads = args.thread or all_threads(conn, client, keys)
        with _progress() as progress:
            task = progress.add_task("verify", total=len(threads))
            report = audit(conn, client, keys, threads,
                            lambda n: progress.advance(task, n))
    for thread, problems in sorted(report.differ.items()):
        print(f"DIFFERS {thread}")
        for problem in problems:
            print(f"  {problem}")
    print(f"{report.threads} threads, {report.events} events checked; "
          f"{len(report.differ)} differ; {report.lag} events not yet projected")
    return 1 if report.differ else 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from projector.rebuild import RebuildError, rebuild
    from projector.tables import BusyError

    settings = Settings.from_env().require("database_url")
    with psycopg.connect(settings.database_url) as conn:
        _require_schema(conn)
    with _progress() as progress:
        load = progress.add_task("archive -> fresh tables", total=None)
        phases: dict[str, TaskID] = {}

        def tick(phase: str, amount: int) -> None:
            if phase == "total":
                progress.update(load, total=amount)
            elif phase == "load":
                progress.advance(load, amount)
            elif phase not in phases:
                _finish(progress, load, *phases.values())
                phases[phase] = progress.add_task(phase, total=None)
            if phase == "catch-up":
                progress.advance(phases[phase], amount)

        try:
            done = rebuild(settings.database_url, tick)
        except (RebuildError, BusyError) as exc:
            err.print(f"duologue rebuild: {exc}")
            return 1
        _finish(progress, load, *phases.values())
    out.print(f"rebuilt {done.threads} threads from {done.events} archived events "
              f"(+{done.caught_up} caught up while rebuilding); swapped in")
    return 0


def _finish(progress: Progress, *tasks: TaskID) -> None:
    """Phases that ended show what they did (``n/n``), not ``0/?``."""
    for task in tasks:
        done = max(int(progress.tasks[task].completed), 1)
        progress.update(task, total=done, completed=done)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err, transient=False)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("status", help="projector lag, pending entries, checkpoints, counts")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="list idle partitions too")
    p.set_defaults(run=cmd_status)
    p = sub.add_parser("replay", help="re-project one thread from its log (idempotent)")
    p.add_argument("--thread", required=True)
    p.add_argument("--from", dest="start", default="0", help="event id to start from")
    p.set_defaults(run=cmd_replay)
    p = sub.add_parser("rebuild", help="rebuild every projection into fresh tables, swap")
    p.set_defaults(run=cmd_rebuild)
    p = sub.add_parser("verify", help="compare the log with the projection; exit 1 if not")
    p.add_argument("--thread", action="append", help="only this thread (repeatable)")
    p.set_defaults(run=cmd_verify)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: duologue status|replay|rebuild|verify")
