"""protocol.md section 7: `duologue replay --thread` after Redis lost part or all of a
thread stream keeps every archived event in the archive, the projection, the HTTP
history and sync.
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from domain.ids import event_key, thread_id
from tests.http_support import auth
from tests.projection_support import (
    PARTITIONS,
    Stream,
    assert_projection,
    dead_letters,
    thread_streams,
)
from tests.record_support import acked_problems, assert_projection_of, duologue, shown
from tests.support import Client, uid


async def _conversation(first: Client, second: Client, tag: str) -> list[str]:
    """Ten messages, an edit, a delete and read receipts, all acked; their ids in order."""
    ids: list[str] = []

    async def ok(answer: dict[str, Any]) -> None:
        assert answer["type"] == "ack", answer
        ids.append(answer["id"])

    for i in range(8):
        speaker, listener = (first, second) if i % 2 == 0 else (second, first)
        await ok(await speaker.say(listener.user, f"{tag} {speaker.user} says {i}"))
    thread = thread_id(first.user, second.user)
    sent = list(ids)
    await ok(await first.request({"type": "edit", "thread": thread, "target": sent[6],
                                  "body": f"{tag} edited"}))
    await ok(await second.request({"type": "delete", "thread": thread, "target": sent[5]}))
    await ok(await second.request({"type": "read", "thread": thread, "up_to": sent[6]}))
    await ok(await first.say(second.user, f"{tag} after the edit"))
    await ok(await second.say(first.user, f"{tag} the last word"))
    await ok(await first.request({"type": "read", "thread": thread, "up_to": ids[-1]}))
    return ids


def snapshot(conn: psycopg.Connection, threads: list[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row (every column) of the archive and the projection for these threads."""
    return {table: conn.execute(f"SELECT * FROM {table} WHERE thread = ANY(%s) "
                                "ORDER BY 1, 2", (threads,)).fetchall()
            for table in ("events", "messages", "threads", "read_receipts")}


async def history_page(gateway: Any, user: str, thread: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gateway.http_url, headers=auth(user),
                                 timeout=15) as client:
        answer = await client.get(f"/v1/threads/{thread}/messages", params={"limit": "200"})
    assert answer.status_code == 200, answer.text
    return answer.json()["messages"]


async def synced_ids(client: Client, thread: str) -> tuple[list[str], dict[str, Any]]:
    """``sync(after=0)`` on ``thread``: the ids it replays, and its ``synced`` frame."""
    client.frames.clear()
    await client.send({"type": "sync", "thread": thread, "after": "0"})
    done = await client.next("synced", thread=thread)
    return [f["id"] for f in client.events(thread)], done


def merged_streams(*streams: Stream) -> Stream:
    events: dict[str, str] = {}
    for stream in streams:
        events.update(stream)
    return sorted(events.items(), key=lambda item: event_key(item[0]))


async def test_replay_after_redis_lost_part_of_a_stream_keeps_every_archived_event(
        start_gateway, fleet, rclient, db, pkeys, fresh_database):
    """Defect 2. Four conversations over the WebSocket, projected. Then Redis loses, by
    hand, the tail of X's stream (XDEL of its last five entries), three entries in the
    middle of Y's, and Z's whole stream; V keeps everything. ``duologue replay --thread``
    of each must keep every acked event in the archive (the durable copy) and leave the
    projection and the HTTP history as they were; ``verify`` must not call the
    projection's rows of those events damaged ("not in the log"), and be clean after the
    replays; ``sync`` from 0 still delivers every acked event; sending goes on."""
    gateway = start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS), DATABASE_URL=fresh_database)
    env = fleet.env
    names = "XYZV"
    users = {n: (uid(f"{n.lower()}a"), uid(f"{n.lower()}b")) for n in names}
    clients = {n: (await Client.connect(gateway.ws_url, a), await Client.connect(gateway.ws_url, b))
               for n, (a, b) in users.items()}
    try:
        acked = {n: await _conversation(*clients[n], n) for n in names}
        thread = {n: thread_id(*users[n]) for n in names}
        everything = [thread[n] for n in names]
        fleet.burst()
        assert not acked_problems(db, {thread[n]: acked[n] for n in names})
        before_streams = thread_streams(rclient, pkeys)
        assert_projection(db, before_streams)
        before = snapshot(db, everything)
        pages = {n: await history_page(gateway, users[n][0], thread[n]) for n in names}
        assert len(pages["X"]) == 10, pages["X"]  # ten messages sent, one deleted

        # Redis loses events the archive holds
        x, y, z = (pkeys.stream(thread[n]) for n in "XYZ")
        assert rclient.xdel(x, *acked["X"][-5:]) == 5
        assert rclient.xdel(y, *acked["Y"][4:7]) == 3
        assert rclient.delete(z) == 1
        verify_before = duologue(env, "verify")

        replays = [duologue(env, "replay", "--thread", thread[n]) for n in names]
        for done in replays:
            assert done.returncode == 0 and "Traceback" not in done.stderr, shown(done)
        problems = acked_problems(db, {thread[n]: acked[n] for n in names})
        assert not problems, ("`duologue replay --thread` deleted archived events Redis had "
                              "lost:\n  " + "\n  ".join(problems))
        assert snapshot(db, everything) == before, \
            "replay changed the archive or the projection of events Redis lost"
        for n in names:
            assert await history_page(gateway, users[n][0], thread[n]) == pages[n], n

        for n in "XYZ":  # before the replays: a loss in Redis, not a damaged projection
            report = _report_of(verify_before.stdout, thread[n])
            assert "not in the log" not in report and "no such event" not in report, \
                shown(verify_before)
        after = duologue(env, "verify")
        assert after.returncode == 0, shown(after)

        for n in names:
            ids, done = await synced_ids(clients[n][0], thread[n])
            assert ids == acked[n], (n, done, [i for i in acked[n] if i not in ids])
            assert done["recovered"] is True, done

        # the conversations go on: new events after what Redis lost, each projected once
        for n in names:
            answer = await clients[n][1].say(users[n][0], f"{n} after the loss")
            assert answer["type"] == "ack", answer
            assert event_key(answer["id"]) > event_key(acked[n][-1]), (answer, acked[n])
            acked[n].append(answer["id"])
    finally:
        for pair in clients.values():
            for client in pair:
                await client.close()
    fleet.burst()
    assert not acked_problems(db, {thread[n]: acked[n] for n in names})
    now = thread_streams(rclient, pkeys)
    assert_projection_of(db, {t: merged_streams(before_streams[t], now.get(t, []))
                              for t in everything})
    assert dead_letters(db) == []
    final = duologue(env, "verify")
    assert final.returncode == 0, shown(final)


def _report_of(stdout: str, thread: str) -> str:
    """The lines ``duologue verify`` printed about one thread."""
    lines = stdout.splitlines()
    out: list[str] = []
    for n, line in enumerate(lines):
        if line.startswith("DIFFERS ") and line.removeprefix("DIFFERS ").strip() == thread:
            for more in lines[n + 1:]:
                if not more.startswith(" "):
                    break
                out.append(more)
    return "\n".join(out)


