"""``duologue verify``: compare, thread by thread, the log, the archive and the projection.

For each thread the log is the archive and the Redis stream merged (``projector.thread_log``).
Three kinds of difference are told apart, each with the repair that applies:

- Redis lost events the archive holds, where replays read only the stream (at or above
  its ``lo``): the projection is fine; ``duologue replay --thread`` makes ``sync`` serve
  them from the archive again.
- The archive lacks events of the stream up to the projected position, or its copy of
  one differs: ``duologue replay --thread`` archives them again.
- The projection differs from the domain fold of the log up to ``threads.last_id``:
  ``duologue replay --thread`` (or ``duologue rebuild``) re-projects it.

Events above the projected position are lag, counted but not a difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from adapters.record import ARCHIVED_BELOW, B_EVENT, Keys
from adapters.redis_connect import SyncRedis
from domain.ids import event_key
from domain.state import Message, ReactionKey, ThreadState, fold
from projector.entries import Entry, stored
from projector.thread_log import stream_threads
from schemas.events import encode_event

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
    reactions: dict[ReactionKey, str] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)
    head: tuple[str, int] | None = None  # (last_id, events)


def all_threads(conn: psycopg.Connection, client: SyncRedis, keys: Keys) -> list[str]:
    found = set(stream_threads(client, keys))
    rows = conn.execute("SELECT thread FROM threads UNION SELECT DISTINCT thread FROM events")
    found.update(str(r[0]) for r in rows)
    return sorted(found)


def audit(conn: psycopg.Connection, client: SyncRedis, keys: Keys,
           threads: Sequence[str], progress: Any = None) -> Report:
    report = Report()
    for start in range(0, len(threads), CHUNK):
        chunk = list(threads[start:start + CHUNK])
        logs, los = _logs(client, keys, chunk)
        projected = _projected(conn, chunk)
        for thread in chunk:
            problems = compare(thread, logs[thread], los[thread], projected[thread], report)
            if problems:
                report.differ[thread] = problems
        report.threads += len(chunk)
        if progress is not None:
            progress(len(chunk))
    return report


def _logs(client: SyncRedis, keys: Keys,
          threads: list[str]) -> tuple[dict[str, list[Entry]], dict[str, str | None]]:
    """Each thread's stream, parsed, and its ``lo``."""
    with client.pipeline(transaction=False) as pipe:
        for thread in threads:
            pipe.xrange(keys.stream(thread), "-", "+")
            pipe.hget(keys.state(thread), ARCHIVED_BELOW)
        replies: list[Any] = pipe.execute()
    out: dict[str, list[Entry]] = {}
    los: dict[str, str | None] = {}
    for n, thread in enumerate(threads):
        entries, lo = replies[2 * n], replies[2 * n + 1]
        parsed = (stored(thread, i.decode(), f.get(B_EVENT, b"").decode()) for i, f in entries)
        out[thread] = [e for e in parsed if isinstance(e, Entry)]
        los[thread] = lo.decode() if lo else None
    return out, los


def _projected(conn: psycopg.Connection, threads: list[str]) -> dict[str, _Projected]:
    out: dict[str, _Projected] = defaultdict(_Projected)
    for thread, event_id, payload in conn.execute(
            "SELECT thread, id, payload::text FROM events WHERE thread = ANY(%s) "
            "ORDER BY thread, key", (threads,)):
        out[thread].archive.append((event_id, payload))
    for thread, mid, sender, body, sent, edited, deleted, reply_to in conn.execute(
            "SELECT thread, id, sender, body, duologue_ms(sent_at), duologue_ms(edited_at), "
            "duologue_ms(deleted_at), reply_to FROM messages WHERE thread = ANY(%s)", (threads,)):
        out[thread].messages[mid] = Message(sender, body, sent, edited, deleted, reply_to)
    for thread, mid, user, emoji, added in conn.execute(
            'SELECT thread, message_id, "user", emoji, event_id FROM reactions '
            "WHERE thread = ANY(%s)", (threads,)):
        out[thread].reactions[(mid, user, emoji)] = added
    for thread, by, blocked in conn.execute(
            "SELECT thread, by, event_id FROM blocks WHERE thread = ANY(%s)", (threads,)):
        out[thread].blocks[by] = blocked
    for thread, reader, up_to in conn.execute(
            "SELECT thread, reader, up_to FROM read_receipts WHERE thread = ANY(%s)", (threads,)):
        out[thread].receipts[reader] = up_to
    for thread, last_id, events in conn.execute(
            "SELECT thread, last_id, events FROM threads WHERE thread = ANY(%s)", (threads,)):
        out[thread].head = (last_id, events)
    return out


def compare(thread: str, stream: list[Entry], lo: str | None, projected: _Projected,
            report: Report) -> list[str]:
    last_id, counted = projected.head or ("0", 0)
    archived, problems = _archived(thread, projected.archive)
    history = _merged(archived, stream)
    upto = [e for e in history if event_key(e.id) <= event_key(last_id)]
    report.events += len(history)
    report.lag += len(history) - len(upto)
    problems += _lost_by_redis(thread, stream, lo, archived)
    if (upto[-1].id if upto else "0") != last_id:
        problems.append(f"threads.last_id is {last_id}, the log has no such event")
    if counted != len(upto):
        problems.append(f"threads.events is {counted}, the log has {len(upto)} up to {last_id}")
    problems += _archive_problems(thread, upto, archived, last_id)
    expected = fold(thread, ((e.id, e.event) for e in upto))
    projection = _projection_problems(expected, projected)
    if projection:
        problems += [*projection, f"repair: duologue replay --thread {thread} re-projects it"]
    return problems


def _archived(thread: str, rows: list[tuple[str, str]]) -> tuple[list[Entry], list[str]]:
    parsed = [stored(thread, i, p) for i, p in rows]
    bad = [p.log_id for p in parsed if not isinstance(p, Entry)]
    problems = [f"archive payload of {bad[0]} does not decode"] if bad else []
    return [p for p in parsed if isinstance(p, Entry)], problems


def _merged(archived: list[Entry], stream: list[Entry]) -> list[Entry]:
    """Archive and stream in id order; the stream's copy where both hold an id."""
    events = {e.id: e for e in archived}
    events.update((e.id, e) for e in stream)
    return sorted(events.values(), key=lambda e: event_key(e.id))


def _lost_by_redis(thread: str, stream: list[Entry], lo: str | None,
                   archived: list[Entry]) -> list[str]:
    """Archived events the stream lacks where replays read only the stream."""
    if not stream:
        return []  # no stream: replays read the whole thread from the archive
    floor = event_key(lo) if lo else (0, 0)
    have = {e.id for e in stream}
    lost = [e.id for e in archived if event_key(e.id) >= floor and e.id not in have]
    if not lost:
        return []
    return [f"Redis lost {len(lost)} events the archive holds: {', '.join(_few(lost))}; "
            "the projection keeps them",
            f"repair: duologue replay --thread {thread} serves them from the archive again"]


def _archive_problems(thread: str, upto: list[Entry], archived: list[Entry],
                      last_id: str) -> list[str]:
    """Events up to the projected position the archive lacks or holds differently."""
    held = {e.id: e for e in archived}
    below = [e for e in archived if event_key(e.id) <= event_key(last_id)]
    missing = [e.id for e in upto if e.id not in held]
    differ = [e.id for e in upto if e.id in held and encode_event(e.event)
              != encode_event(held[e.id].event)]
    problems = []
    if missing:
        problems.append(f"archive holds {len(below)} events, the log {len(upto)} up to "
                        f"{last_id}; missing: {', '.join(_few(missing))}")
    problems += [f"archive payload of {i} differs from the log" for i in differ[:5]]
    if missing or differ:
        problems.append(f"repair: duologue replay --thread {thread} archives the log's copy")
    return problems


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
    if dict(expected.reactions) != projected.reactions:
        missing_r = len(expected.reactions.keys() - projected.reactions.keys())
        extra_r = len(projected.reactions.keys() - expected.reactions.keys())
        problems.append(f"reactions differ: {missing_r} missing, {extra_r} not in the log")
    if dict(expected.blocks) != projected.blocks:
        problems.append(f"blocks {projected.blocks} should be {dict(expected.blocks)}")
    return problems


def _few(ids: list[str]) -> Iterator[str]:
    yield from ids[:5]
    if len(ids) > 5:
        yield f"... ({len(ids)} in all)"
