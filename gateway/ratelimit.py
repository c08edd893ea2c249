"""Per-user token buckets, shared by all of a user's connections to this process."""

from __future__ import annotations

import time
from dataclasses import dataclass

PRUNE_ABOVE = 10_000  # buckets kept before full (idle) ones are dropped


@dataclass(slots=True)
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, Bucket] = {}

    def take(self, user: str) -> int:
        """0 when allowed, else the milliseconds until one token is available."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        bucket = self.buckets.get(user)
        if bucket is None:
            if len(self.buckets) >= PRUNE_ABOVE:
                self.prune(now)
            bucket = self.buckets[user] = Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, int((1 - bucket.tokens) / self.rate * 1000 + 0.999))

    def prune(self, now: float) -> None:
        """Forget buckets that have refilled: they behave exactly like new ones."""
        full = [user for user, b in self.buckets.items()
                if b.tokens + (now - b.stamp) * self.rate >= self.burst]
        for user in full:
            del self.buckets[user]
