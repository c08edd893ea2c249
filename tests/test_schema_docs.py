"""docs/schema.md is true: every ```sql block runs as ``duologue_analyst`` on real data,
and the worked queries give the answers computed here from the events we produced.

The events are produced through a real gateway (WebSocket commands, so the gateway's
rules apply) and projected by ``duologue projector --burst``. The expected answers are
computed in Python from the acks (checked first against the thread streams in Redis),
never from the projection. Times are the server's: expectations use the ms part of the
ids, so nothing depends on the wall clock except "the last 7 days", which holds every
event of this test. The analyst's session runs in a time zone where the test's events
fall on another day than in UTC, so that "per UTC day" is really per UTC day.
"""

from __future__ import annotations

import asyncio
import random
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from psycopg import sql

from adapters.postgres import migrations
from adapters.record import B_EVENT, Keys
from adapters.redis_connect import sync_redis
from schemas.events import decode_event
from tests.support import ROOT, Client, ProjectorProcess, id_key, thread_of, token, uid

DOC = ROOT / "docs" / "schema.md"
PARTITIONS = 8
SEED = 20261125
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def far_zone(instant_ms: int) -> str:
    """A time zone in which ``instant_ms`` (and the hours around it) is on another day
    than in UTC: 14 hours ahead from 10:00 UTC on, 12 hours behind before."""
    hour = (EPOCH + timedelta(milliseconds=instant_ms)).hour
    return "Etc/GMT+12" if hour < 10 else "Pacific/Kiritimati"


# --- the document ------------------------------------------------------------------------

@dataclass(frozen=True)
class Block:
    heading: str
    sql: str
    line: int


def sql_blocks(text: str) -> list[Block]:
    """Every fenced block whose info string is ``sql``, with the heading above it."""
    blocks: list[Block] = []
    heading, body, start = "", None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if body is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif line.strip() == "```sql":
                body, start = [], number
        elif line.strip() == "```":
            blocks.append(Block(heading, "\n".join(body), start))
            body = None
        else:
            body.append(line)
    assert body is None, f"unclosed ```sql block at line {start}"
    return blocks


BLOCKS = sql_blocks(DOC.read_text())
PSQL_VARIABLE = re.compile(r"(?<!:):'([A-Za-z_][A-Za-z0-9_]*)'")


def under(heading: str) -> list[str]:
    found = [b.sql for b in BLOCKS if b.heading == heading]
    assert found, f"no ```sql block under the heading {heading!r} in {DOC}"
    return found


def bind(conn: psycopg.Connection, text: str, params: dict[str, str]) -> bytes:
    """Replace psql variables (``:'name'``) by quoted literals, as psql does."""
    def literal(match: re.Match[str]) -> str:
        return sql.Literal(params[match[1]]).as_string(conn)
    return PSQL_VARIABLE.sub(literal, text).encode()


def test_the_document_has_the_sql_blocks_this_test_checks():
    assert len(BLOCKS) >= 10
    for heading in ("SQL helper functions", "Messages per day", "Median reply time",
                    "Most active threads, last 7 days", "Unread backlog per user",
                    "Edits and deletes per day, from the archive",
                    "An event's position in its thread", "Operator queries"):
        under(heading)
    variables = {v for b in BLOCKS for v in PSQL_VARIABLE.findall(b.sql)}
    assert variables == {"thread", "id", "user", "message"}, variables


# --- producing the events ------------------------------------------------------------------

def ms(event_id: str) -> int:
    return id_key(event_id)[0]


def day(event_id: str) -> date:
    return (EPOCH + timedelta(milliseconds=ms(event_id))).date()


def participants(thread: str) -> tuple[str, str]:
    _, a, b = thread.split(":")
    return a, b


@dataclass
class Sent:
    thread: str
    id: str
    sender: str
    deleted: bool = False


@dataclass
class World:
    """What the acks say happened: every appended event, in each thread's order."""

    events: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list))
    messages: dict[str, list[Sent]] = field(default_factory=lambda: defaultdict(list))
    receipts: dict[tuple[str, str], str] = field(default_factory=dict)
    users: tuple[str, ...] = ()
    replies: dict[str, str] = field(default_factory=dict)  # message id -> its reply_to
    # (thread, message, user, emoji) -> the ReactionAdded, for the reactions present
    reactions: dict[tuple[str, str, str, str], str] = field(default_factory=dict)

    def _record(self, answer: dict[str, Any], kind: str, payload: dict[str, Any]) -> str:
        assert answer["type"] == "ack" and not answer["duplicate"], answer
        self.events[answer["thread"]].append((answer["id"], kind, payload))
        return str(answer["id"])

    async def send(self, client: Client, to: str, body: str, reply_to: str | None = None) -> str:
        extra = {} if reply_to is None else {"reply_to": reply_to}
        answer = await client.say(to, body, **extra)
        event_id = self._record(answer, "MessageSent",
                                {"sender": client.user, "body": body, **extra})
        self.messages[answer["thread"]].append(Sent(answer["thread"], event_id, client.user))
        if reply_to is not None:
            self.replies[event_id] = reply_to
        return event_id

    async def react(self, client: Client, thread: str, target: str, emoji: str,
                    kind: str = "react") -> str:
        answer = await client.request({"type": kind, "thread": thread, "target": target,
                                       "emoji": emoji})
        payload = {"sender": client.user, "target": target, "emoji": emoji}
        if kind == "react":
            event_id = self._record(answer, "ReactionAdded", payload)
            self.reactions[thread, target, client.user, emoji] = event_id
        else:
            event_id = self._record(answer, "ReactionRemoved", payload)
            del self.reactions[thread, target, client.user, emoji]
        return event_id

    async def block(self, client: Client, thread: str, kind: str = "block") -> str:
        answer = await client.request({"type": kind, "thread": thread})
        return self._record(answer, "ThreadBlocked" if kind == "block" else "ThreadUnblocked",
                            {"by": client.user})

    async def edit(self, client: Client, thread: str, target: str, body: str) -> str:
        answer = await client.request(
            {"type": "edit", "thread": thread, "target": target, "body": body})
        return self._record(answer, "MessageEdited",
                            {"sender": client.user, "target": target, "body": body})

    async def delete(self, client: Client, thread: str, target: str) -> str:
        answer = await client.request({"type": "delete", "thread": thread, "target": target})
        event_id = self._record(answer, "MessageDeleted", {"sender": client.user,
                                                           "target": target})
        (message,) = [m for m in self.messages[thread] if m.id == target]
        message.deleted = True
        return event_id

    async def read(self, client: Client, thread: str, up_to: str) -> str:
        answer = await client.request({"type": "read", "thread": thread, "up_to": up_to})
        event_id = self._record(answer, "ReadUpTo", {"reader": client.user, "up_to": up_to})
        self.receipts[thread, client.user] = up_to
        return event_id

    def count(self) -> int:
        return sum(len(e) for e in self.events.values())


async def produce(ws_url: str) -> tuple[World, dict[str, str]]:
    """About 150 commands from three users in four threads (one a note to self)."""
    ann, bob, cat = uid("ann"), uid("bob"), uid("cat")  # bytewise: ann < bob < cat
    world = World(users=(ann, bob, cat))
    clients = {u: await Client.connect(ws_url, u) for u in world.users}
    rng = random.Random(SEED)
    ab, ac, bc, aa = (thread_of(ann, bob), thread_of(ann, cat), thread_of(bob, cat),
                      thread_of(ann, ann))
    marks: dict[str, str] = {}
    try:
        couples = [(ann, bob), (ann, cat), (bob, cat), (ann, ann)]
        for step in range(90):
            a, b = rng.choices(couples, weights=(5, 3, 2, 2))[0]
            sender = rng.choice((a, b))
            await world.send(clients[sender], b if sender == a else a, f"message {step}")
            await asyncio.sleep(rng.choice((0, 0, 0.002, 0.005, 0.02)))
        # edits and deletes by the senders, of messages not deleted
        for thread in (ab, ac, bc, aa):
            for message in list(world.messages[thread]):
                roll = rng.random()
                if roll < 0.15:
                    await world.edit(clients[message.sender], thread, message.id, "edited")
                if roll < 0.05 or roll > 0.85:
                    await world.delete(clients[message.sender], thread, message.id)
        # one message with a history: sent, edited twice, deleted
        marks["message"] = await world.send(clients[ann], bob, "version 0")
        await world.edit(clients[ann], ab, marks["message"], "version 1")
        await asyncio.sleep(0.003)
        await world.edit(clients[ann], ab, marks["message"], "version 2")
        await world.delete(clients[ann], ab, marks["message"])
        # receipts: bob read half of ab; ann read up to bob's receipt (not a message)
        half = world.events[ab][len(world.events[ab]) // 2][0]
        marks["receipt"] = await world.read(clients[bob], ab, half)
        await world.read(clients[ann], ab, marks["receipt"])
        # cat read all of ac, then ann wrote more; ann read her second note; bc unread
        await world.read(clients[cat], ac, world.events[ac][-1][0])
        await world.read(clients[ann], aa, world.messages[aa][1].id)
        await conversation(world, clients, rng)
        for n in range(3):
            await world.send(clients[ann], cat, f"after cat read {n}")
            await world.send(clients[ann], ann, f"note after reading {n}")
            await world.send(clients[bob], ann, f"bob again {n}")
        # repeats append nothing: a resent command, a receipt behind the current one
        last_command = f"{bob}-{clients[bob].seq}"  # Client numbers its client_msg_ids
        again = await clients[bob].say(ann, "bob again 2", client_msg_id=last_command)
        assert again["type"] == "ack" and again["duplicate"], again
        behind = await clients[bob].request(
            {"type": "read", "thread": ab, "up_to": world.events[ab][0][0]})
        assert behind["type"] == "ack" and behind["duplicate"], behind
    finally:
        for client in clients.values():
            await client.close()
    return world, marks


async def conversation(world: World, clients: dict[str, Client], rng: random.Random) -> None:
    """Replies (a chain four deep, a reply to a deleted message), reactions on live
    messages (some removed again), and blocks in ``bc`` (bob's lifted, cat's stands)."""
    ann, bob, cat = world.users
    ab, bc = thread_of(ann, bob), thread_of(bob, cat)
    target = await world.send(clients[ann], bob, "start of a chain")
    for depth, who in enumerate((bob, ann, bob), 1):
        other = ann if who == bob else bob
        target = await world.send(clients[who], other, f"reply depth {depth}", target)
    deleted = next(m for m in world.messages[ab] if m.deleted)
    await world.send(clients[bob], ann, "re: a deleted one", deleted.id)
    for thread in world.messages:
        live = [m for m in world.messages[thread] if not m.deleted]
        for message in rng.sample(live, min(6, len(live))):
            for user in set(participants(thread)):
                for emoji in rng.sample(("👍", "❤️", "😂", "🎉"), rng.randint(0, 3)):
                    await world.react(clients[user], thread, message.id, emoji)
    for thread, message, user, emoji in rng.sample(sorted(world.reactions), 5):
        await world.react(clients[user], thread, message, emoji, "unreact")
    await world.block(clients[bob], bc)
    await world.block(clients[cat], bc)
    await world.block(clients[bob], bc, "unblock")


def check_against_the_streams(world: World, redis_url: str, prefix: str) -> None:
    """The acks tell the whole story: each thread stream holds exactly these events."""
    keys = Keys(prefix, PARTITIONS)
    client = sync_redis(redis_url)
    try:
        for thread, events in world.events.items():
            stored = [(i.decode(), decode_event(f[B_EVENT])) for i, f in
                      client.xrange(keys.stream(thread))]
            assert [(i, type(e).__name__) for i, e in stored] == \
                [(i, k) for i, k, _ in events], thread
            for (_, event), (_, _, payload) in zip(stored, events, strict=True):
                fields = msgspec.structs.asdict(event)
                assert {k: fields[k] for k in payload} == payload, (thread, event)
    finally:
        client.close()


@dataclass
class Data:
    world: World
    marks: dict[str, str]
    owner_url: str
    analyst_url: str
    http_url: str

    def analyst(self) -> psycopg.Connection:
        first = min(ms(e[0][0]) for e in self.world.events.values())
        conn = psycopg.connect(self.analyst_url, autocommit=True,
                               options=f"-c TimeZone={far_zone(first)}")
        assert conn.execute("SELECT current_user").fetchone() == ("duologue_analyst",)
        local_day = conn.execute("SELECT duologue_ts(%s)::date", (first,)).fetchone()
        assert local_day != (day(f"{first}-0"),), "the session's time zone changes no day"
        assert conn.execute("SHOW default_transaction_read_only").fetchone() == ("on",)
        return conn

    @property
    def params(self) -> dict[str, str]:
        ann, bob, _ = self.world.users
        return {"thread": thread_of(ann, bob), "id": self.marks["receipt"], "user": ann,
                "message": self.marks["message"]}


@pytest.fixture
def data(fresh_database: str, prefix: str, redis_url: str, start_gateway: Any,
         log_dir: Path) -> Iterator[Data]:
    gateway = start_gateway(DATABASE_URL=fresh_database, DUOLOGUE_PARTITIONS=str(PARTITIONS))
    world, marks = asyncio.run(produce(gateway.ws_url))
    check_against_the_streams(world, redis_url, prefix)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": fresh_database, "DUOLOGUE_PREFIX": prefix,
           "DUOLOGUE_PARTITIONS": str(PARTITIONS)}
    projector = ProjectorProcess(env=env, args=("--burst",)).start(log_dir)
    assert projector.wait(60) == 0, projector.log()
    with psycopg.connect(fresh_database) as owner:
        assert owner.execute("SELECT count(*) FROM events").fetchone() == (world.count(),)
    yield Data(world, marks, fresh_database,
               psycopg.conninfo.make_conninfo(fresh_database, user="duologue_analyst"),
               gateway.http_url)


def run(conn: psycopg.Connection, text: str, params: dict[str, str]) -> list[tuple[Any, ...]]:
    with conn.transaction():
        return conn.execute(bind(conn, text, params)).fetchall()


# --- the tests -----------------------------------------------------------------------------

def test_every_sql_block_runs_as_the_analyst(data):
    failed = []
    with data.analyst() as conn:
        for block in BLOCKS:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(bind(conn, block.sql, data.params))
                    assert cur.description is not None, "returns no rows"
                    cur.fetchall()
            except (psycopg.Error, AssertionError) as exc:
                failed.append(f"line {block.line} ({block.heading}): "
                              f"{type(exc).__name__}: {exc}")
    assert not failed, "\n".join(failed)


def test_helper_functions_answer_as_the_document_shows(data):
    (text,) = under("SQL helper functions")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
    assert rows == [(173246789012300000000000000000005,
                     EPOCH + timedelta(milliseconds=1732467890123), 1732467890123,
                     "1732467890123-5", True, True)]
    assert "173246789012300000000000000000005 | 2024-11-24 17:04:50.123+00" in DOC.read_text()


def test_messages_per_day(data):
    expected: Counter[tuple[date, bool]] = Counter(
        (day(m.id), m.deleted) for sent in data.world.messages.values() for m in sent)
    days = sorted({d for d, _ in expected})
    (text,) = under("Messages per day")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
    assert rows == [(d, expected[d, False] + expected[d, True], expected[d, False],
                     expected[d, True]) for d in days]
    assert sum(r[1] for r in rows) == sum(len(m) for m in data.world.messages.values())
    assert sum(r[3] for r in rows) > 0


def reply_times(messages: list[Sent]) -> list[int]:
    """For each message, ms until the next message by the other participant, if any."""
    ordered = sorted(messages, key=lambda m: id_key(m.id))
    found = []
    for i, message in enumerate(ordered):
        reply = next((m for m in ordered[i + 1:] if m.sender != message.sender), None)
        if reply is not None:
            found.append(ms(reply.id) - ms(message.id))
    return found


def test_median_reply_time(data):
    per_thread = {t: reply_times(m) for t, m in data.world.messages.items()
                  if len(set(participants(t))) == 2}
    per_thread = {t: times for t, times in per_thread.items() if times}
    everything = [x for times in per_thread.values() for x in times]
    assert len(per_thread) == 3 and len(everything) > 50
    (text,) = under("Median reply time")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
    got = {thread: (replies, median / timedelta(milliseconds=1))
           for thread, replies, median in rows}
    assert set(got) == {None, *per_thread}
    for thread, times in [(None, everything), *per_thread.items()]:
        replies, median = got[thread]
        assert replies == len(times), thread
        assert median == pytest.approx(statistics.median(times), abs=0.001), thread
    assert [r[0] for r in rows] == [None, *sorted(per_thread)]


def test_most_active_threads_last_7_days(data):
    messages = data.world.messages
    expected = sorted(
        ((t, *participants(t), len(m), sum(x.deleted for x in m),
          EPOCH + timedelta(milliseconds=max(ms(x.id) for x in m))) for t, m in messages.items()),
        key=lambda row: (-row[3], row[0]))
    (text,) = under("Most active threads, last 7 days")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
    assert rows == expected
    assert len({r[3] for r in rows}) > 1  # the order says something


def unread(world: World, thread: str, reader: str) -> int:
    """protocol.md section 3: not-deleted messages of the other participant after the
    reader's receipt; in dm:x:x the other participant is x."""
    a, b = participants(thread)
    other = b if reader == a else a
    up_to = id_key(world.receipts.get((thread, reader), "0"))
    return sum(1 for m in world.messages[thread]
               if not m.deleted and m.sender == other and id_key(m.id) > up_to)


def seats(world: World) -> list[tuple[str, str]]:
    return [(t, u) for t in world.events for u in sorted(set(participants(t)))]


def test_unread_backlog_per_user(data):
    world = data.world
    per_user: dict[str, list[int]] = defaultdict(list)
    for thread, reader in seats(world):
        per_user[reader].append(unread(world, thread, reader))
    expected = sorted(((u, sum(n), sum(1 for x in n if x), len(n)) for u, n in per_user.items()),
                      key=lambda row: (-row[1], row[0]))
    everyone, one_user = under("Unread backlog per user")
    with data.analyst() as conn:
        rows = run(conn, everyone, data.params)
        ann_rows = run(conn, one_user, data.params)
    assert rows == expected
    ann = world.users[0]
    assert unread(world, thread_of(ann, ann), ann) >= 3  # her own notes after her receipt
    assert all(r[1] > 0 for r in rows)

    # one user's threads: as computed here, and as the HTTP API answers
    def last(thread: str) -> str:
        return world.events[thread][-1][0]
    mine = sorted((t for t, u in seats(world) if u == ann),
                  key=lambda t: (tuple(-x for x in id_key(last(t))), t))
    assert ann_rows == [(t, next(iter(set(participants(t)) - {ann}), ann), last(t),
                         unread(world, t, ann)) for t in mine]
    answer = httpx.get(f"{data.http_url}/v1/threads",
                       headers={"Authorization": f"Bearer {token(ann)}"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert [(t["thread"], t["with"], t["last_id"], t["unread"])
            for t in answer.json()["threads"]] == ann_rows


def test_edits_and_deletes_per_day_and_a_message_history(data):
    world = data.world
    kinds = Counter((day(i), k) for events in world.events.values() for i, k, _ in events)
    days = sorted({d for d, k in kinds if k in ("MessageEdited", "MessageDeleted")})
    per_day, history = under("Edits and deletes per day, from the archive")
    with data.analyst() as conn:
        rows = run(conn, per_day, data.params)
        versions = run(conn, history, data.params)
    assert rows == [(d, kinds[d, "MessageEdited"], kinds[d, "MessageDeleted"]) for d in days]
    assert sum(r[1] for r in rows) >= 3 and sum(r[2] for r in rows) >= 2
    target = data.marks["message"]
    expected = [(i, k, EPOCH + timedelta(milliseconds=ms(i)), p.get("body"))
                for i, k, p in world.events[data.params["thread"]]
                if i == target or p.get("target") == target]
    assert versions == expected
    assert [v[3] for v in versions] == ["version 0", "version 1", "version 2", None]


def test_an_events_position_in_its_thread(data):
    thread, event_id = data.params["thread"], data.params["id"]
    events = data.world.events[thread]
    position = [i for i, _, _ in events].index(event_id) + 1
    sent_before = sum(1 for i, k, _ in events[:position] if k == "MessageSent")
    (text,) = under("An event's position in its thread")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
        elsewhere = run(conn, text, {**data.params, "thread": thread_of(*data.world.users[1:])})
    assert rows == [(thread, event_id, "ReadUpTo", EPOCH + timedelta(milliseconds=ms(event_id)),
                     position, sent_before, len(events))]
    assert 1 < position < len(events)
    assert elsewhere == []  # the id is not in that thread


def test_operator_queries(data):
    workers, checkpoints, dead, versions = under("Operator queries")
    with data.analyst() as conn:
        assert run(conn, workers, data.params) == []  # the burst projector retired
        rows = run(conn, checkpoints, data.params)
        assert run(conn, dead, data.params) == []
        applied = [(v, n) for v, n, _, _ in run(conn, versions, data.params)]
        assert applied == [(m.version, m.name) for m in migrations()]
        assert applied[:3] == [(1, "history"), (2, "retention"), (3, "conversation")]
    keys = Keys("x", PARTITIONS)
    used = {keys.partition(t) for t in data.world.events}
    assert {r[0] for r in rows if r[4]} == used
    assert sum(r[4] for r in rows) == data.world.count()  # no dead letters, nothing twice
    for partition, stream, log_id, entry_at, _, _ in rows:
        assert stream.endswith(f":{{p{partition}}}:log")
        assert entry_at == (None if log_id == "0" else EPOCH + timedelta(milliseconds=ms(log_id)))
