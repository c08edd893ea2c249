"""gateway.log_throttle: one line per key a second, the rest counted; bounded."""

from __future__ import annotations

import pytest

from gateway import log_throttle
from gateway.log_throttle import LogThrottle


def test_one_line_a_second_per_key_with_the_count_of_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(log_throttle.time, "monotonic", lambda: now[0])
    throttle = LogThrottle(every=1.0)
    assert throttle.take("a") == 0
    assert [throttle.take("a") for _ in range(5)] == [None] * 5
    assert throttle.take("b") == 0  # keys apart
    now[0] += 1.0
    assert throttle.take("a") == 5
    assert throttle.take("a") is None
    now[0] += 5.0
    assert throttle.take("a") == 1


def test_the_keys_remembered_are_bounded() -> None:
    throttle = LogThrottle(every=60.0, keys=100)
    for n in range(1_000):
        assert throttle.take(f"k{n}") == 0
    assert len(throttle.seen) <= 100
    assert throttle.take("k999") is None  # the newest are kept
