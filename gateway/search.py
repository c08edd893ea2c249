"""Full-text search over the caller's messages (protocol.md section 5, ``GET /v1/search``).

Served from the projection through the GIN index of migration 0004 (``messages_search``
on ``duologue_search_doc(thread, id, body)``), in two round trips:

1. Postgres tokenizes the terms of ``q`` with the same parser and configuration
   (``simple``) that indexed the bodies, so a word of ``q`` and a word of a body always
   agree; the same statement reads the caller's newest activity (the week to start from).
2. The search: the words AND the caller's lexeme, newest first, as a concatenation of
   time windows (this week and the next, the three weeks before, then everything older).
   A window is read only when the newer ones held fewer than a page of hits, so a common
   word costs a page from the newest week, not every match of the caller's history.

User text never reaches Postgres as tsquery syntax: the tsquery is written here from
the lexemes Postgres returned, each one quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.errors import InvalidError
from domain.ids import SORT_BASE, check_participant, participants, sort_key
from gateway.read_model import NO_UPPER_BOUND, ReadModel
from schemas.http import SearchHit

MAX_Q = 200  # characters (code points)
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
WEEK_MS = 604_800_000  # the bucket of the week lexemes (migration 0004)
KEY_PER_MS = SORT_BASE  # key = ms * 10**20 + seq
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Term:
    text: str  # a whitespace-separated piece of q, its trailing `*`s removed
    prefix: bool  # it ended with `*`: every word of it matches as a prefix


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the search order (key DESC, thread DESC): hits strictly after it."""

    key: int
    thread: str  # "" for a bare event id: every hit with a smaller key


def terms_of(q: str) -> list[Term]:
    """The terms of ``q``: 1-200 characters; NUL and whitespace separate terms."""
    if not 1 <= len(q) <= MAX_Q:
        raise InvalidError(f"q must be 1 to {MAX_Q} characters")
    found = []
    for piece in q.replace("\x00", " ").split():
        text = piece.rstrip("*")
        if text:
            found.append(Term(text, prefix=text != piece))
    return found


def parse_limit(raw: str | None) -> int:
    """``limit``: default 20; anything but an integer 1-200 is ``invalid`` (no clamping)."""
    if raw is None:
        return DEFAULT_LIMIT
    digits = raw.lstrip("0") if _DIGITS.fullmatch(raw) else ""
    if not digits or len(digits) > 3 or int(digits) > MAX_LIMIT:
        raise InvalidError(f"limit must be an integer from 1 to {MAX_LIMIT}, "
                           f"got {raw[:40]!r}")
    return int(digits)


def parse_before(raw: str | None) -> Position | None:
    """``before``: an event id (hits older than it, in every thread) or a ``next_before``
    (``<thread>/<id>``: the hits after that one in the search order)."""
    if raw is None:
        return None
    thread, slash, event_id = raw.rpartition("/")
    if slash:
        participants(thread)  # a well-formed thread id (a position only: nothing is read)
    return Position(sort_key(event_id), thread)


def cursor_of(hit: SearchHit, tied: bool) -> str:
    """``next_before``: the last hit's event id, as in the history API; when the next hit
    has the same event id (in another thread: ids of two threads may coincide), the
    thread too (``<thread>/<id>``), so that paging neither skips nor repeats it."""
    return f"{hit.thread}/{hit.id}" if tied else hit.id


def tsquery_of(lexemes: list[tuple[str, bool]]) -> str:
    """The AND of ``lexemes`` (word, prefix?) in tsquery syntax, every one quoted."""
    return " & ".join(_quote(word) + (":*" if prefix else "") for word, prefix in lexemes)


def _quote(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _who(user: str, week: int | None = None) -> str:
    """The lexeme of a participant (migration 0004); user ids need no escaping."""
    return _quote(f" {user}" if week is None else f" {user} {week}")


# Round trip 1: the lexemes of each term, and the newest key of the searched threads.
TOKENIZE_SQL = """
SELECT l.words, l.prefixes, CASE WHEN %(thread)s::text IS NULL THEN greatest(
         (SELECT max(last_key) FROM threads WHERE user_a = %(user)s),
         (SELECT max(last_key) FROM threads WHERE user_b = %(user)s))
       ELSE (SELECT last_key FROM threads WHERE thread = %(thread)s) END
FROM (SELECT coalesce(array_agg(w), '{}') AS words, coalesce(array_agg(t.prefix), '{}')
             AS prefixes
        FROM unnest(%(terms)s::text[], %(prefix)s::bool[]) AS t (term, prefix),
             unnest(tsvector_to_array(to_tsvector('simple', t.term))) AS w) AS l
"""

_WINDOW = """
(SELECT thread, id, key, sender, body, {sent} AS sent_ms, {edited} AS edited_ms, reply_to
   FROM messages
  WHERE duologue_search_doc(thread, id, body) @@ %({name})s::tsquery
    AND deleted_at IS NULL
    AND (split_part(thread, ':', 2) = %(user)s OR split_part(thread, ':', 3) = %(user)s)
    AND (%(thread)s::text IS NULL OR thread = %(thread)s)
    AND (key, thread) < (%(before_key)s::numeric, %(before_thread)s::text)
    AND key >= %({name}_from)s::numeric AND key < %({name}_to)s::numeric
  ORDER BY key DESC, thread DESC LIMIT %(limit)s)"""


def _window(name: str) -> str:
    return _WINDOW.format(name=name, sent="duologue_ms(sent_at)",
                          edited="duologue_ms(edited_at)")


WINDOWS = ("recent", "weeks", "older")
# Postgres runs the branches of UNION ALL in order and stops once LIMIT has its rows.
SEARCH_SQL = ("SELECT * FROM (" + " UNION ALL ".join(_window(w) for w in WINDOWS)
              + ") AS hits LIMIT %(limit)s")


async def search(history: ReadModel, user: str, q: str, thread: str | None,
                 before: Position | None, limit: int) -> tuple[list[SearchHit], str | None]:
    """Up to ``limit`` hits after ``before``, newest first, and the ``next_before`` of
    the next page (None when there is none)."""
    terms = terms_of(q)
    other = check_participant(thread, user) if thread is not None else None
    rows = await history.fetch(TOKENIZE_SQL, {
        "terms": [t.text for t in terms], "prefix": [t.prefix for t in terms],
        "thread": thread, "user": user})
    words, prefixes, newest = rows[0]
    # (a one-letter prefix is the costliest query: docs/search.md)
    lexemes = list(dict.fromkeys(zip(words, prefixes, strict=True)))
    if not lexemes:
        raise InvalidError("q has no word to search for (words are letters and digits)")
    if newest is None:  # nothing of these threads is projected yet
        return [], None
    top = int(newest) if before is None else min(int(newest), before.key)
    params = window_params(tsquery_of(lexemes), user, other, top // KEY_PER_MS // WEEK_MS)
    params |= {"user": user, "thread": thread, "limit": limit + 1,
               "before_key": NO_UPPER_BOUND if before is None else before.key,
               "before_thread": "" if before is None else before.thread}
    found = await history.fetch(SEARCH_SQL, params)
    hits = [SearchHit(thread=t, id=i, sender=s, body=b, sent_at=sent, edited_at=edited,
                      reply_to=reply) for t, i, _key, s, b, sent, edited, reply in found]
    if len(hits) <= limit:
        return hits, None
    return hits[:limit], cursor_of(hits[limit - 1], tied=hits[limit].id == hits[limit - 1].id)


def window_params(words: str, user: str, other: str | None, week: int) -> dict[str, object]:
    """The tsquery and key range of each window, newest first, from ``week`` down."""
    extra = "" if other is None else " & " + _who(other)

    def weeks(*numbers: int) -> str:
        return f"({words}) & ({' | '.join(_who(user, n) for n in numbers)}){extra}"

    recent_from = week * WEEK_MS * KEY_PER_MS
    weeks_from = (week - 3) * WEEK_MS * KEY_PER_MS
    # "recent" names the next week too: a message projected after round trip 1 may be there
    return {
        "recent": weeks(week, week + 1), "recent_from": recent_from,
        "recent_to": NO_UPPER_BOUND,
        "weeks": weeks(week - 1, week - 2, week - 3), "weeks_from": weeks_from,
        "weeks_to": recent_from,
        "older": f"({words}) & {_who(user)}{extra}", "older_from": 0,
        "older_to": weeks_from,
    }
