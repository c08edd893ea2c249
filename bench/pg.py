"""Postgres for the projector figures: a fresh migrated database per run, CPU of the server.

Every database created here is registered, so ``drop_all`` (run from ``__main__``'s
``finally``) drops whatever an error or Ctrl-C left behind.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from adapters.postgres import migrate

ADMIN_URL = os.environ.get(
    "DLBENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_created: list[str] = []


def url_of(name: str) -> str:
    return psycopg.conninfo.make_conninfo(ADMIN_URL, dbname=name)


def create(tag: str, schema: bool = True) -> tuple[str, str]:
    """CREATE DATABASE bench_<tag>_<random> (and migrate it); returns (name, url)."""
    name = f"bench_{tag}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    _created.append(name)
    url = url_of(name)
    if schema:
        migrate(url)
    return name, url


def drop(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if name in _created:
        _created.remove(name)


@contextlib.contextmanager
def database(tag: str, schema: bool = True) -> Iterator[str]:
    """A fresh database of its own (migrated unless ``schema`` is false), dropped after."""
    name, url = create(tag, schema)
    try:
        yield url
    finally:
        drop(name)


def drop_all() -> None:
    for name in list(_created):
        with contextlib.suppress(psycopg.Error):
            drop(name)


def server_cpu() -> float:
    """utime + stime of every ``postgres`` process on the machine (backends, WAL writer,
    checkpointer...), in seconds. Other sessions' backends are included: compare with
    the machine's ``other``."""
    total = 0.0
    hz = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        if raw[raw.index("(") + 1:raw.rindex(")")] != "postgres":
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / hz
    return total


def tree_cpu(pid: int) -> float:
    """utime + stime of a process and all its descendants (those still alive), seconds."""
    hz = os.sysconf("SC_CLK_TCK")
    total, todo, seen = 0.0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            raw = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / hz
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return total
