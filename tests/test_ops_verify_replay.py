"""protocol.md section 4: `duologue verify` names every thread whose log, archive and
projection differ, and `duologue replay` repairs it (idempotent, refusing bad arguments
with exit 2).
"""

from __future__ import annotations

from domain.ids import sort_key, thread_id
from tests.ops_support import (
    assert_projection_is_fold,
    differing,
    duologue,
    duologue_all,
    project_burst,
    snapshot,
)
from tests.projection_support import PARTITIONS
from tests.support import Client, uid

# --- 1. verify names what differs, replay repairs it --------------------------------

async def _talk(first: Client, second: Client) -> list[str]:
    """Six messages over the WebSocket, an edit, a delete and two receipts."""
    ids = []
    for i in range(6):
        speaker, listener = (first, second) if i % 2 == 0 else (second, first)
        ack = await speaker.say(listener.user, f"{speaker.user} says {i}")
        assert ack["type"] == "ack", ack
        ids.append(ack["id"])
    thread = ack["thread"]
    for client, frame in (
        (first, {"type": "edit", "thread": thread, "target": ids[0], "body": "edited"}),
        (second, {"type": "delete", "thread": thread, "target": ids[1]}),
        (second, {"type": "read", "thread": thread, "up_to": ids[2]}),
        (first, {"type": "read", "thread": thread, "up_to": ids[5]}),
    ):
        answer = await client.request(frame)
        assert answer["type"] == "ack", answer
    return ids


async def test_verify_names_differing_threads_and_replay_repairs_them(
        start_gateway, ops_env, ops_keys, rclient, db, log_dir):
    gateway = start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS))
    users = [uid(f"u{i}") for i in range(6)]
    clients = [await Client.connect(gateway.ws_url, u) for u in users]
    try:
        # X, Y, Z, W are corrupted below, V never is
        couples = {"X": (0, 1), "Y": (2, 3), "Z": (0, 2), "W": (1, 3), "V": (4, 5)}
        ids: dict[str, list[str]] = {}
        threads: dict[str, str] = {}
        for name, (i, j) in couples.items():
            ids[name] = await _talk(clients[i], clients[j])
            threads[name] = thread_id(users[i], users[j])
    finally:
        for client in clients:
            await client.close()
    X, Y, Z, W, V = (threads[n] for n in "XYZWV")
    everything = sorted(threads.values())

    project_burst(ops_env, log_dir)
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert differing(done) == set()
    assert "5 threads, 50 events checked; 0 differ; 0 events not yet projected" in done.stdout
    assert_projection_is_fold(db, rclient, ops_keys, everything)

    # hand-made damage: a message row gone in X, a body changed in Y
    gone = db.execute("DELETE FROM messages WHERE thread = %s AND id = %s",
                      (X, ids["X"][3])).rowcount
    changed = db.execute("UPDATE messages SET body = 'tampered' WHERE thread = %s AND id = %s",
                         (Y, ids["Y"][2])).rowcount
    bogus = ids["X"][3].split("-")[0] + "-999"
    db.execute("INSERT INTO messages (thread, id, key, sender, body, sent_at) "
               "VALUES (%s, %s, %s, %s, 'bogus', now())", (X, bogus, sort_key(bogus), users[0]))
    assert (gone, changed) == (1, 1)
    done = duologue(ops_env, "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert differing(done) == {X, Y}
    for name in "ZWV":
        assert threads[name] not in done.stdout
    assert f"messages missing: {ids['X'][3]}" in done.stdout
    assert f"messages not in the log: {bogus}" in done.stdout
    assert f"messages differ: {ids['Y'][2]}" in done.stdout
    assert "2 differ" in done.stdout

    whole, tail = duologue_all(ops_env, ("replay", "--thread", X),
                               ("replay", "--thread", Y, "--from", ids["Y"][2]))
    assert whole.returncode == 0 and tail.returncode == 0, whole.stderr + tail.stderr
    assert f"replayed {X}: 10 events" in whole.stdout
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_projection_is_fold(db, rclient, ops_keys, everything)

    # replay is idempotent: a second run (whole thread, and from an id) changes no row
    before = snapshot(db)
    for done in duologue_all(ops_env, ("replay", "--thread", X),
                             ("replay", "--thread", Y, "--from", ids["Y"][2]),
                             ("replay", "--thread", Y, "--from", ids["Y"][0])):
        assert done.returncode == 0, done.stderr
    assert snapshot(db) == before

    # an archive row gone in Z, a read receipt moved back in W, an archived body forged in X
    assert db.execute("DELETE FROM events WHERE thread = %s AND id = %s",
                      (Z, ids["Z"][4])).rowcount == 1
    assert db.execute("UPDATE events SET payload = jsonb_set(payload, '{body}', '\"forged\"') "
                      "WHERE thread = %s AND id = %s", (X, ids["X"][4])).rowcount == 1
    reader = users[couples["W"][0]]
    assert db.execute(
        "UPDATE read_receipts SET up_to = %s, up_to_key = %s WHERE thread = %s AND reader = %s",
        (ids["W"][1], sort_key(ids["W"][1]), W, reader)).rowcount == 1
    done, some = duologue_all(ops_env, ("verify",), ("verify", "--thread", V, "--thread", Z))
    assert done.returncode == 1, done.stdout + done.stderr
    assert differing(done) == {Z, W, X}
    assert "archive holds 9 events, the log 10" in done.stdout
    assert "read receipts" in done.stdout
    assert f"archive payload of {ids['X'][4]} differs from the log" in done.stdout
    assert some.returncode == 1 and differing(some) == {Z}, some.stdout
    assert "2 threads, 20 events checked" in some.stdout

    for done in duologue_all(ops_env, *(("replay", "--thread", t) for t in (Z, W, X))):
        assert done.returncode == 0, done.stderr
    done = duologue(ops_env, "verify")
    assert done.returncode == 0, done.stdout + done.stderr
    assert_projection_is_fold(db, rclient, ops_keys, everything)
    before = snapshot(db)
    for done in duologue_all(ops_env, *(("replay", "--thread", t) for t in (Z, W, X))):
        assert done.returncode == 0, done.stderr
    assert snapshot(db) == before


def test_replay_refuses_bad_arguments_with_exit_2(ops_env, db):
    thread = thread_id(uid("a"), uid("b"))
    a, b = thread.split(":")[1:]
    cases = (
        (("--thread", "nope"), "not a valid thread id"),
        (("--thread", f"dm:{b}:{a}"), "not a valid thread id"),  # not canonical
        (("--thread", ""), "not a valid thread id"),
        (("--thread", thread, "--from", "12-abc"), "not a valid event id"),
        (("--thread", thread, "--from", "-1"), "not a valid event id"),
        (("--thread", thread, "--from", "01-1"), "not a valid event id"),
        ((), "--thread"),
    )
    runs = duologue_all(ops_env, *(("replay", *args) for args, _ in cases))
    for (args, message), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert message in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
    assert snapshot(db) == {"events": [], "messages": [], "threads": [], "read_receipts": []}


def test_replay_of_a_thread_without_events_exits_1_and_writes_nothing(ops_env, db):
    thread = thread_id(uid("a"), uid("b"))
    done = duologue(ops_env, "replay", "--thread", thread)
    assert done.returncode == 1, done.stderr
    assert f"no thread {thread}" in done.stderr and "Traceback" not in done.stderr
    assert snapshot(db) == {"events": [], "messages": [], "threads": [], "read_receipts": []}


