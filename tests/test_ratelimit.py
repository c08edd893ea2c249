"""The token bucket on its own (the wire behaviour is in test_ws_errors_refusals.py)."""

from __future__ import annotations

import time

from gateway.ratelimit import PRUNE_ABOVE, RateLimiter


def test_burst_then_rate_then_retry_hint():
    limiter = RateLimiter(rate=10, burst=3)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    wait = limiter.take("a")
    assert 1 <= wait <= 100
    assert limiter.take("b") == 0  # buckets are per user
    time.sleep(wait / 1000 + 0.01)
    assert limiter.take("a") == 0


def test_zero_rate_means_off_and_idle_buckets_are_pruned():
    assert all(RateLimiter(rate=0, burst=1).take("a") == 0 for _ in range(100))
    limiter = RateLimiter(rate=1000, burst=1)
    for n in range(PRUNE_ABOVE):
        limiter.take(f"u{n}")
    time.sleep(0.01)  # every bucket refills
    limiter.take("late")
    assert len(limiter.buckets) == 1
