"""``duologue verify``: compare, thread by thread, the log, the archive and the projection.

For each thread the log is its Redis stream (with archived events older than the
stream's first entry in front). Everything up to the thread's projected position
(``threads.last_id``) must be in the archive exactly (ids and payloads) and the
projection must equal the domain fold of it; events above that position are lag,
counted but not a difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import redis

from domain.ids import event_key
from domain.state import Message, ThreadState, fold
from duologue.keys import Keys
from projector.entries import Entry, parse, stored
from projector.history import stream_threads
from schemas.events import decode_event, encode_event

CHUNK = 200


@dataclass
class Report:
    threads: int = 0
    events: int = 0
    lag: int = 0
    differ: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Projected:
    archive: list[tuple[str, str]] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    receipts: dict[str, str] = field(default_factory=dict)
    head: tuple[str, int] | None = None  # (last_id, events)


def all_threads(conn: psycopg.Connection, client: redis.Redis, keys: Keys) -> list[str]:
    found = set(stream_threads(client, keys))
    rows = conn.execute("SELECT thread FROM threads UNION SELECT DISTINCT thread FROM events")
    found.update(str(r[0]) for r in rows)
    return sorted(found)


def verify(conn: psycopg.Connection, client: redis.Redis, keys: Keys,
           threads: Sequence[str], progress: Any = None) -> Report:
    report = Report()
    for start in range(0, len(threads), CHUNK):
        chunk = list(threads[start:start + CHUNK])
        logs = _logs(client, keys, chunk)
        projected = _projected(conn, chunk)
        for thread in chunk:
            problems = compare(thread, logs[thread], projected[thread], report)
            if problems:
                report.differ[thread] = problems
        report.threads += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return report


def _logs(client: redis.Redis, keys: Keys, threads: list[str]) -> dict[str, list[Entry]]:
    with client.pipeline(transaction=False) as pipe:
        for thread in threads:
            pipe.xrange(keys.stream(thread), "-", "+")
        replies: list[Any] = pipe.execute()
    out: dict[str, list[Entry]] = {}
    for thread, entries in zip(threads, replies, strict=True):
        parsed = (parse(i.decode(), {b"t": thread.encode(), b"i": i, b"e": f.get(b"e", b"")})
                  for i, f in entries)
        out[thread] = [e for e in parsed if isinstance(e, Entry)]
    return out


def _projected(conn: psycopg.Connection, threads: list[str]) -> dict[str, _Projected]:
    out: dict[str, _Projected] = defaultdict(_Projected)
    for thread, event_id, payload in conn.execute(
            "SELECT thread, id, payload::text FROM events WHERE thread = ANY(%s) "
            "ORDER BY thread, key", (threads,)):
        out[thread].archive.append((event_id, payload))
    for thread, mid, sender, body, sent, edited, deleted in conn.execute(
            "SELECT thread, id, sender, body, duologue_ms(sent_at), duologue_ms(edited_at), "
            "duologue_ms(deleted_at) FROM messages WHERE thread = ANY(%s)", (threads,)):
        out[thread].messages[mid] = Message(sender, body, sent, edited, deleted)
    for thread, reader, up_to in conn.execute(
            "SELECT thread, reader, up_to FROM read_receipts WHERE thread = ANY(%s)", (threads,)):
        out[thread].receipts[reader] = up_to
    for thread, last_id, events in conn.execute(
            "SELECT thread, last_id, events FROM threads WHERE thread = ANY(%s)", (threads,)):
        out[thread].head = (last_id, events)
    return out


def compare(thread: str, log: list[Entry], projected: _Projected, report: Report) -> list[str]:
    problems: list[str] = []
    last_id, counted = projected.head or ("0", 0)
    log = _with_older(thread, log, projected.archive)
    upto = [e for e in log if event_key(e.id) <= event_key(last_id)]
    report.events += len(log)
    report.lag += len(log) - len(upto)
    if (upto[-1].id if upto else "0") != last_id:
        problems.append(f"threads.last_id is {last_id}, the log has no such event")
    if counted != len(upto):
        problems.append(f"threads.events is {counted}, the log has {len(upto)} up to {last_id}")
    problems += _archive_problems(upto, projected.archive, last_id)
    expected = fold(thread, ((e.id, e.event) for e in upto))
    problems += _projection_problems(expected, projected)
    return problems


def _with_older(thread: str, log: list[Entry], archive: list[tuple[str, str]]) -> list[Entry]:
    """Put archived events older than the stream's first entry (trimmed) in front."""
    first = event_key(log[0].id) if log else None
    older = [(i, p) for i, p in archive if first is None or event_key(i) < first]
    if not older:
        return log
    parsed = (stored(thread, i, p) for i, p in older)
    return [e for e in parsed if isinstance(e, Entry)] + log


def _archive_problems(upto: list[Entry], archive: list[tuple[str, str]],
                      last_id: str) -> list[str]:
    if len(archive) != len(upto):
        return [f"archive holds {len(archive)} events, the log {len(upto)} up to {last_id}"]
    for entry, (event_id, payload) in zip(upto, archive, strict=True):
        if entry.id != event_id:
            return [f"archive event {event_id} where the log has {entry.id}"]
        try:
            archived = encode_event(decode_event(payload))
        except msgspec.DecodeError:  # a damaged archive row is a difference, not a crash
            return [f"archive payload of {event_id} does not decode"]
        if encode_event(entry.event) != archived:
            return [f"archive payload of {event_id} differs from the log"]
    return []


def _projection_problems(expected: ThreadState, projected: _Projected) -> list[str]:
    problems = []
    missing = sorted(set(expected.messages) - set(projected.messages), key=event_key)
    extra = sorted(set(projected.messages) - set(expected.messages), key=event_key)
    changed = sorted((m for m in expected.messages if m in projected.messages
                      and expected.messages[m] != projected.messages[m]), key=event_key)
    for label, ids in (("missing", missing), ("not in the log", extra), ("differ", changed)):
        if ids:
            problems.append(f"messages {label}: {', '.join(_few(ids))}")
    if dict(expected.receipts) != projected.receipts:
        problems.append(f"read receipts {projected.receipts} should be {dict(expected.receipts)}")
    return problems


def _few(ids: list[str]) -> Iterator[str]:
    yield from ids[:5]
    if len(ids) > 5:
        yield f"... ({len(ids)} in all)"
