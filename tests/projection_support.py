"""Helpers for the projector tests (the workload that feeds them is in workload_support.py).

- ``Fleet``: projector processes of one test.
- ``expected_projection``: what Postgres must hold, computed with the domain fold over
  every thread stream in Redis (or over given per-thread event lists).
- ``projection_diff``: the exact comparison of that with the rows in Postgres (messages,
  read_receipts, threads, the events archive); returns readable differences.
- ``log_heads``/``wait_drained``/``drain_problems``: the partition logs against the
  checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis

from adapters.record import B_EVENT, B_LOG_EVENT, B_LOG_ID, B_LOG_THREAD, Keys
from domain.ids import event_key, participants, sort_key
from domain.state import fold
from schemas.events import ReadUpTo, decode_event
from tests.support import ProjectorProcess

PARTITIONS = 8


def ms(event_id: str) -> int:
    return event_key(event_id)[0]


def projector_env(redis_url: str, database_url: str, prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "DUOLOGUE_PREFIX": prefix,
            "DUOLOGUE_PARTITIONS": str(PARTITIONS), "DUOLOGUE_LOG_LEVEL": "INFO"}


class Fleet:
    """Projector processes of one test; whatever is still running at teardown is killed."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.started: list[ProjectorProcess] = []

    def start(self, *args: str, **env: str) -> ProjectorProcess:
        process = ProjectorProcess({**self.env, **env}, tuple(args)).start(self.log_dir)
        self.started.append(process)
        return process

    def burst(self, *args: str, timeout: float = 60, **env: str) -> ProjectorProcess:
        """Run ``projector --burst``; it must exit 0 on its own."""
        process = self.start("--burst", *args, **env)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"burst projector did not exit:\n{tail(process)}") from None
        assert code == 0, f"burst projector exited {code}:\n{tail(process)}"
        return process

    def stop_all(self) -> None:
        for process in self.started:
            process.kill()


def tail(process: ProjectorProcess, lines: int = 40) -> str:
    return "\n".join(process.log().splitlines()[-lines:])


# --- expected projection: the domain fold ----------------------------------------------

Stream = list[tuple[str, str]]  # (event id, payload JSON) in stream order


def thread_streams(client: redis.Redis, keys: Keys) -> dict[str, Stream]:
    """Every thread stream of the prefix, read whole."""
    streams: dict[str, Stream] = {}
    for key in client.scan_iter(match=keys.stream_pattern(), count=20000):
        name = key.decode()
        thread = name.split(":t:", 1)[1]
        assert keys.stream(thread) == name, name
        entries: Any = client.xrange(name)
        streams[thread] = [(i.decode(), f[B_EVENT].decode()) for i, f in entries]
    return streams


@dataclass
class Expected:
    threads: dict[str, tuple[Any, ...]]
    messages: dict[tuple[str, str], tuple[Any, ...]]
    receipts: dict[tuple[str, str], tuple[Any, ...]]
    events: dict[str, list[tuple[Any, ...]]]
    reactions: dict[tuple[str, str, str, str], tuple[Any, ...]] = field(default_factory=dict)
    blocks: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)


def expected_projection(streams: Mapping[str, Stream]) -> Expected:
    """The rows the projection must hold for these per-thread event sequences."""
    out = Expected({}, {}, {}, {})
    for thread, entries in streams.items():
        if not entries:
            continue
        events = [(i, decode_event(p)) for i, p in entries]
        state = fold(thread, events)
        a, b = participants(thread)
        last = entries[-1][0]
        out.threads[thread] = (a, b, last, sort_key(last), ms(entries[0][0]), ms(last),
                               len(entries))
        for mid, m in state.messages.items():
            out.messages[(thread, mid)] = (sort_key(mid), m.sender, m.body, m.sent_at,
                                           m.edited_at, m.deleted_at, m.reply_to)
        for (mid, user, emoji), added in state.reactions.items():
            out.reactions[(thread, mid, user, emoji)] = (sort_key(mid), added, sort_key(added),
                                                         ms(added))
        for by, blocked in state.blocks.items():
            out.blocks[(thread, by)] = (blocked, ms(blocked))
        setters: dict[str, str] = {}  # the ReadUpTo that last raised each reader's receipt
        current: dict[str, str] = {}
        for event_id, event in events:
            if isinstance(event, ReadUpTo) and (
                    event.reader not in current
                    or event_key(event.up_to) > event_key(current[event.reader])):
                current[event.reader] = event.up_to
                setters[event.reader] = event_id
        assert current == dict(state.receipts)
        for reader, up_to in state.receipts.items():
            setter = setters[reader]
            out.receipts[(thread, reader)] = (up_to, sort_key(up_to), setter, ms(setter))
        out.events[thread] = [(i, sort_key(i), type(e).__name__, json.loads(p), ms(i))
                              for (i, e), (_, p) in zip(events, entries, strict=True)]
    return out


def actual_projection(conn: psycopg.Connection) -> Expected:
    """The same shapes, read from Postgres (a database of the test's own)."""
    out = Expected({}, {}, {}, {})
    for row in conn.execute(
            "SELECT thread, user_a, user_b, last_id, last_key, duologue_ms(first_at), "
            "duologue_ms(last_at), events FROM threads"):
        out.threads[row[0]] = (row[1], row[2], row[3], int(row[4]), row[5], row[6], row[7])
    for row in conn.execute(
            "SELECT thread, id, key, sender, body, duologue_ms(sent_at), "
            "duologue_ms(edited_at), duologue_ms(deleted_at), reply_to FROM messages"):
        out.messages[(row[0], row[1])] = (int(row[2]), *row[3:])
    for row in conn.execute(
            'SELECT thread, message_id, "user", emoji, message_key, event_id, event_key, '
            "duologue_ms(reacted_at) FROM reactions"):
        out.reactions[row[:4]] = (int(row[4]), row[5], int(row[6]), row[7])
    for row in conn.execute("SELECT thread, by, event_id, duologue_ms(since) FROM blocks"):
        out.blocks[row[:2]] = row[2:]
    for row in conn.execute(
            "SELECT thread, reader, up_to, up_to_key, event_id, duologue_ms(read_at) "
            "FROM read_receipts"):
        out.receipts[(row[0], row[1])] = (row[2], int(row[3]), row[4], row[5])
    events: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in conn.execute(  # in archive order: per thread it must be the stream order
            "SELECT thread, id, key, kind, payload, duologue_ms(ts) FROM events "
            "ORDER BY archived"):
        events[row[0]].append((row[1], int(row[2]), row[3], row[4], row[5]))
    out.events = dict(events)
    return out


def _short(value: object, width: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width] + "..."


def _diff_rows(name: str, want: Mapping[Any, Any], got: Mapping[Any, Any],
               limit: int = 5) -> list[str]:
    problems = []
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    wrong = [k for k in want if k in got and want[k] != got[k]]
    if missing:
        problems.append(f"{name}: {len(missing)} missing, e.g. "
                        + "; ".join(f"{k}={_short(want[k])}" for k in missing[:limit]))
    if extra:
        problems.append(f"{name}: {len(extra)} unexpected, e.g. "
                        + "; ".join(f"{k}={_short(got[k])}" for k in extra[:limit]))
    if wrong:
        problems.append(f"{name}: {len(wrong)} differ, e.g. "
                        + "; ".join(f"{k}: want {_short(want[k])} got {_short(got[k])}"
                                  for k in wrong[:limit]))
    return problems


def projection_diff(want: Expected, got: Expected) -> list[str]:
    """Every difference between the expected and the actual projection, readable."""
    problems = _diff_rows("threads", want.threads, got.threads)
    problems += _diff_rows("messages", want.messages, got.messages)
    problems += _diff_rows("read_receipts", want.receipts, got.receipts)
    problems += _diff_rows("reactions", want.reactions, got.reactions)
    problems += _diff_rows("blocks", want.blocks, got.blocks)
    differing = [t for t in sorted(set(want.events) | set(got.events))
                 if want.events.get(t, []) != got.events.get(t, [])]
    if differing:
        problems.append(f"events archive: {len(differing)} threads differ from their stream")
    for thread in differing[:5]:
        w, g = want.events.get(thread, []), got.events.get(thread, [])
        ids = [e[0] for e in g]
        dupes = [i for i, n in Counter(ids).items() if n > 1]
        order = "" if ids == sorted(ids, key=event_key) else " (archive order != stream order)"
        first = next((n for n, (a, b) in enumerate(zip(w, g, strict=False)) if a != b),
                     min(len(w), len(g)))
        problems.append(
            f"events of {thread}: {len(g)} archived, {len(w)} in the stream, "
            f"{len(dupes)} duplicated{order}; first difference at #{first}: "
            f"want {_short(w[first] if first < len(w) else None)} "
            f"got {_short(g[first] if first < len(g) else None)}")
    return problems


def assert_projection(conn: psycopg.Connection, want: Expected | Mapping[str, Stream]) -> None:
    if not isinstance(want, Expected):
        want = expected_projection(want)
    problems = projection_diff(want, actual_projection(conn))
    assert not problems, "projection != fold of the log:\n  " + "\n  ".join(problems)


# --- partition logs, checkpoints ------------------------------------------------------


def log_heads(client: redis.Redis, keys: Keys) -> dict[str, str]:
    """Last id ever added to each partition log ("0" for none)."""
    heads = {}
    for p in range(keys.partitions):
        stream = keys.log(p)
        try:
            info: Any = client.xinfo_stream(stream)
        except redis.ResponseError:  # no such key: nothing was ever appended
            heads[stream] = "0"
            continue
        last = info["last-generated-id"]
        last = last.decode() if isinstance(last, bytes) else str(last)
        heads[stream] = "0" if last == "0-0" else last
    return heads


def checkpoints(conn: psycopg.Connection) -> dict[str, str]:
    return dict(conn.execute("SELECT stream, log_id FROM projector_checkpoints").fetchall())


def checkpoint_events(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT coalesce(sum(events), 0) FROM projector_checkpoints").fetchone()
    return int(row[0]) if row else 0


def drain_problems(client: redis.Redis, conn: psycopg.Connection, keys: Keys) -> list[str]:
    """Why the projector is not done: a checkpoint behind its log head."""
    problems = []
    marks = checkpoints(conn)
    for stream, head in log_heads(client, keys).items():
        mark = marks.get(stream, "0")
        if mark != head:
            problems.append(f"{stream}: checkpoint {mark}, log head {head}")
    return problems


def wait_drained(client: redis.Redis, conn: psycopg.Connection, keys: Keys,
                 timeout: float = 30, what: str = "") -> float:
    """Poll until every checkpoint reached its log head."""
    started = time.monotonic()
    while True:
        problems = drain_problems(client, conn, keys)
        if not problems:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not drained after {timeout}s {what}:\n  "
                                 + "\n  ".join(problems))
        time.sleep(0.1)


def assert_done(client: redis.Redis, conn: psycopg.Connection, keys: Keys) -> None:
    """Projection == fold of every thread stream; every log drained; no dead letters."""
    assert_projection(conn, thread_streams(client, keys))
    assert drain_problems(client, conn, keys) == []
    assert dead_letters(conn) == []


def dead_letters(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT stream, log_id, thread, event_id, payload, reason FROM dead_letters "
        "ORDER BY seq").fetchall()


def log_entries(client: redis.Redis, keys: Keys) -> dict[str, list[tuple[str, dict[bytes, bytes]]]]:
    """Every entry still in each partition log."""
    out = {}
    for p in range(keys.partitions):
        entries: Any = client.xrange(keys.log(p))
        out[keys.log(p)] = [(i.decode(), f) for i, f in entries]
    return out


def streams_up_to(entries: Mapping[str, Iterable[tuple[str, dict[bytes, bytes]]]],
                  marks: Mapping[str, str]) -> dict[str, Stream]:
    """Per thread, the events of the partition-log entries at or below each checkpoint."""
    out: dict[str, Stream] = defaultdict(list)
    for stream, items in entries.items():
        mark = event_key(marks.get(stream, "0"))
        for log_id, fields in items:
            if event_key(log_id) <= mark:
                out[fields[B_LOG_THREAD].decode()].append(
                    (fields[B_LOG_ID].decode(), fields[B_LOG_EVENT].decode()))
    return dict(out)


def log_lines(process: ProjectorProcess, *events: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``process`` whose event is one of ``events``, in order."""
    found = []
    for line in process.log().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") in events:
                found.append(record)
    return found


def owned_now(process) -> set[int]:
    """The partitions a worker holds, from its own log (taken minus released)."""
    owned: set[int] = set()
    for record in log_lines(process, "partition_taken", "partition_released"):
        if record["event"] == "partition_taken":
            owned.add(record["partition"])
        else:
            owned.discard(record["partition"])
    return owned
