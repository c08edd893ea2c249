"""Per-user token buckets, shared by all of a user's connections to this process."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, Bucket] = {}

    def take(self, user: str) -> int:
        """0 when allowed, else the milliseconds until one token is available."""
        if self.rate <= 0:
            return 0
        now = time.monotonic()
        bucket = self._buckets.get(user)
        if bucket is None:
            bucket = self._buckets[user] = Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0
        return max(1, int((1 - bucket.tokens) / self.rate * 1000 + 0.999))

    def forget(self, user: str) -> None:
        """Drop a full bucket (called when the user's last connection leaves)."""
        bucket = self._buckets.get(user)
        if bucket is not None and self.take_preview(bucket) >= self.burst:
            del self._buckets[user]

    def take_preview(self, bucket: Bucket) -> float:
        return bucket.tokens + (time.monotonic() - bucket.stamp) * self.rate
