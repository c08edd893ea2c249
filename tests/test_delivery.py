"""The delivery state machine (gateway/delivery.py) without sockets, Redis or a loop:
given a hello, live frames and subscription confirmations, when X, then these frames out.
Guarantees 2-3 of protocol.md: every event once, in order per thread, live or replayed."""

from __future__ import annotations

import pytest

from gateway.delivery import Delivery, Phase, SlowConsumerError

T, U = "a:b", "a:c"


def frame(event_id: str, thread: str = T) -> str:
    return f"{thread}/{event_id}"


def live(d: Delivery, event_id: str, thread: str = T) -> list[str]:
    return d.live(thread, event_id, frame(event_id, thread))


def started(threads: list[tuple[str, str]] | None = None, capacity: int = 8) -> Delivery:
    d = Delivery(capacity)
    d.awaiting_subscription = True
    assert d.subscription_confirmed() is False  # its own SUBSCRIBE: no gap
    d.awaiting_subscription = False
    out, catch_up = d.hello(threads or [(T, "5-0")])
    assert (out, catch_up) == ([], False)
    return d


def test_live_frames_newer_than_the_hello_go_out_once_in_order():
    d = started()
    assert live(d, "4-0") == []  # at or below the hello's last id
    assert live(d, "5-0") == []
    assert live(d, "6-0") == [frame("6-0")]
    assert live(d, "6-0") == []  # a repeat
    assert live(d, "7-1") == [frame("7-1")]
    assert d.last[T] == (7, 1)


def test_frames_before_the_hello_wait_and_are_deduplicated_against_it():
    d = Delivery(8)
    assert d.phase is Phase.HELLO
    assert live(d, "5-0") == []
    assert live(d, "6-0") == []
    out, catch_up = d.hello([(T, "5-0")])
    assert (out, catch_up, d.phase) == ([frame("6-0")], False, Phase.LIVE)


def test_a_gap_confirmed_while_the_hello_state_was_read_pauses_after_the_hello():
    d = Delivery(8)
    assert d.subscription_confirmed() is False  # not its own subscription: a gap
    assert live(d, "6-0") == []
    out, catch_up = d.hello([(T, "5-0")])
    assert (out, catch_up, d.phase) == ([], True, Phase.PAUSED)
    d.begin_round()
    assert d.behind([(T, "6-0")]) == [(T, "5-0")]
    d.begin_replay(T)
    assert d.end_replay(T, "6-0") == []  # the replay delivered 6-0 itself
    assert d.end_round() == []  # the waiting 6-0 is a repeat
    assert d.phase is Phase.LIVE
    assert live(d, "7-0") == [frame("7-0")]


def test_a_gap_pauses_live_frames_until_the_catch_up_reached_the_stream():
    d = started()
    assert d.subscription_confirmed() is True  # start a catch-up
    assert d.phase is Phase.PAUSED
    assert live(d, "8-0") == []  # might pass events lost in the gap: waits
    d.begin_round()
    assert d.behind([(T, "8-0"), (U, "1-0")]) == [(T, "5-0"), (U, "0")]
    d.begin_replay(T)
    assert live(d, "9-0") == []
    assert d.end_replay(T, "8-0") == []
    d.begin_replay(U)
    assert d.end_replay(U, "1-0") == []
    assert d.end_round() == [frame("9-0")]  # 8-0 was replayed; 9-0 is new
    assert d.phase is Phase.LIVE and d.catching_up is False


def test_a_second_gap_during_a_catch_up_asks_for_another_round_not_another_task():
    d = started()
    assert d.subscription_confirmed() is True
    d.begin_round()
    assert d.subscription_confirmed() is False  # one catch-up at a time ...
    assert d.end_round() is None  # ... which runs another round
    d.begin_round()
    assert d.end_round() == []
    assert d.subscription_confirmed() is True  # over: the next gap starts a new one


def test_a_replay_holds_live_frames_and_releases_newer_ones_sorted_after_it():
    d = started()
    d.begin_replay(T)
    assert live(d, "9-0") == []
    assert live(d, "7-0") == []
    assert live(d, "6-0") == []
    assert live(d, "4-0", U) == [frame("4-0", U)]  # other threads are not held
    assert d.end_replay(T, "7-0") == [frame("9-0")]
    assert d.last[T] == (9, 0)


def test_a_failed_replay_keeps_the_thread_held_and_stale_until_a_catch_up():
    d = started()
    d.begin_replay(T)
    d.fail_replay(T, "6-0")
    assert live(d, "8-0") == []  # held: the replay may not have reached 7-0
    assert d.want_catch_up() is True
    d.begin_round()
    assert d.behind([(T, "8-0")]) == [(T, "6-0")]
    d.begin_replay(T)
    assert d.end_replay(T, "8-0") == []
    assert d.end_round() == []
    assert T not in d.stale
    assert live(d, "9-0") == [frame("9-0")]


def test_a_stale_thread_is_caught_up_even_when_the_index_shows_nothing_newer():
    d = started()
    d.fail_replay(T)  # a sync failed before it delivered anything
    assert d.behind([(T, "5-0")]) == [(T, "5-0")]


def test_a_stopped_catch_up_lets_the_next_gap_start_another():
    d = started()
    assert d.subscription_confirmed() is True
    d.stop_catch_up()  # the task died (socket closed, or it failed)
    assert d.want_catch_up() is True


@pytest.mark.parametrize("setup", ["hello", "paused", "held"])
def test_more_waiting_frames_than_the_capacity_is_a_slow_consumer(setup):
    d = Delivery(3) if setup == "hello" else started(capacity=3)
    if setup == "paused":
        d.subscription_confirmed()
    elif setup == "held":
        d.begin_replay(T)
    for n in range(3):
        live(d, f"{10 + n}-0")
    with pytest.raises(SlowConsumerError):
        live(d, "20-0")


def test_a_sync_of_a_thread_without_events_leaves_no_state():
    """Attacks (protocol.md section 8): `sync` on threads with no events leaving ~290 bytes
    of state each on the connection, for ever (a client naming 10,000 empty threads)."""
    delivery = Delivery(capacity=8)
    delivery.hello([("dm:a:b", "5-0")])
    for n in range(10_000):
        thread = f"dm:a:z{n}"
        delivery.begin_replay(thread)
        assert delivery.end_replay(thread, "0") == []
    assert delivery.last == {"dm:a:b": (5, 0)} and delivery.held == {}
