"""One log line per key a second: a flood of refusals (handshakes refused for a user, or
for a client address) is one line a second with how many went unlogged, not a line each.
A refused handshake's line cost ~60 us, a fifth of the refusal (docs/benchmarks.md)."""

from __future__ import annotations

import time

EVERY = 1.0  # seconds between two lines of one key
KEYS = 10_000  # keys remembered; past it the oldest go (their next line is logged at once)


class LogThrottle:
    def __init__(self, every: float = EVERY, keys: int = KEYS) -> None:
        self.every = every
        self.keys = keys
        self.seen: dict[str, tuple[float, int]] = {}  # key -> (last logged, unlogged since)

    def take(self, key: str) -> int | None:
        """None: do not log this one (counted); else log it, saying how many went unlogged
        since the key's last line."""
        now = time.monotonic()
        last = self.seen.get(key)
        if last is not None and now - last[0] < self.every:
            self.seen[key] = (last[0], last[1] + 1)
            return None
        if last is None and len(self.seen) >= self.keys:
            for old in list(self.seen)[: max(1, self.keys // 10)]:  # the oldest tenth
                del self.seen[old]
        self.seen.pop(key, None)  # re-inserted: newest last
        self.seen[key] = (now, 0)
        return last[1] if last is not None else 0
