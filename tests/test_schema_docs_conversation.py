"""docs/schema.md's worked queries on replies, reactions and blocks give, as
``duologue_analyst``, the answers computed here from the acks (the same produced data
as tests/test_schema_docs.py: its ``data`` fixture)."""

from __future__ import annotations

from collections import Counter

from tests.test_schema_docs import data, day, run, under  # noqa: F401  (data: a fixture)


def test_most_used_reactions(data):  # noqa: F811
    present = data.world.reactions
    counts = Counter(emoji for _, _, _, emoji in present)
    users = {e: len({u for _, _, u, x in present if x == e}) for e in counts}
    messages = {e: len({(t, m) for t, m, _, x in present if x == e}) for e in counts}
    expected = [(e, counts[e], users[e], messages[e])
                for e in sorted(counts, key=lambda e: (-counts[e], e))]
    (text,) = under("Most-used reactions")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
        assert len(rows) >= 3  # the data has reactions worth ranking
        assert rows == expected
        # the archive's count of every reaction ever added includes the removed ones
        added = conn.execute("SELECT count(*) FROM events WHERE kind = 'ReactionAdded'")
        assert added.fetchone() == (len(present) + 5,)


def test_reply_depth(data):  # noqa: F811
    replies = data.world.replies

    def depth(message: str) -> int:
        return 0 if message not in replies else depth(replies[message]) + 1

    all_ids = [m.id for sent in data.world.messages.values() for m in sent]
    expected = Counter(depth(m) for m in all_ids)
    assert max(expected) == 3
    (text,) = under("Reply depth")
    with data.analyst() as conn:
        rows = run(conn, text, data.params)
    assert rows == sorted(expected.items())


def test_blocks_per_day_and_blocks_now(data):  # noqa: F811
    per_day: Counter[tuple[object, str]] = Counter()
    for events in data.world.events.values():
        for event_id, kind, _ in events:
            if kind in ("ThreadBlocked", "ThreadUnblocked"):
                per_day[day(event_id), kind] += 1
    days = sorted({d for d, _ in per_day})
    per_day_sql, now_sql = under("Blocks per day")
    with data.analyst() as conn:
        assert run(conn, per_day_sql, data.params) == [
            (d, per_day[d, "ThreadBlocked"], per_day[d, "ThreadUnblocked"]) for d in days]
        standing = run(conn, now_sql, data.params)
    _, bob, cat = data.world.users
    assert [(t, by) for t, by, _ in standing] == [(f"dm:{bob}:{cat}", cat)]
