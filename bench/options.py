"""Benchmark knobs: every field is a command-line option of ``python -m bench``
(``--backlog-threads`` sets ``backlog_threads``); ``--smoke`` starts from ``SMOKE``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    runs: int = 3
    pairs: int = 100  # user pairs for the chat figures
    window: int = 16  # sends in flight per sender (throughput)
    senders: str = "both"  # both participants send, or one per pair
    active_pairs: int = 30  # second series: only this many pairs send (0 = skip); 60 senders
    # stay under the 63 command connections of the default DUOLOGUE_REDIS_POOL=64
    warmup: float = 1.0  # seconds of load before a measurement window
    duration: float = 5.0  # seconds of a measurement window
    rate: float = 2000.0  # sends/s for the latency figure
    load_procs: int = 1  # load-generator processes for the chat figures
    events: int = 10000  # events to catch up on (sync figure)
    idle: int = 2000  # idle sockets (memory figure)
    deflate_idle: int = 1000  # idle sockets per permessage-deflate case
    echo_clients: int = 100
    quiet_wait: float = 20.0  # before a run, wait up to this long for an idle machine
    redo_noisy: int = 2  # chat runs disturbed by other sessions redone, at most, per series
    profile: bool = False  # one extra throughput run under py-spy
    profile_seconds: float = 5.0
    gateway_env: tuple[tuple[str, str], ...] = ()  # experiment: extra gateway settings
    # projector figures
    backlog: int = 200_000  # events in the projector's backlog
    backlog_threads: int = 2000  # threads they are spread over
    projector_timeout: float = 300.0  # most seconds a backlog may take to project
    fresh_rate: float = 2000.0  # sends/s for the freshness figure
    fresh_duration: float = 20.0  # seconds of its measurement window
    poll_ms: float = 5.0  # freshness poller period
    pg_rows: int = 200_000  # rows per Postgres ceiling
    pg_batch: int = 1000  # rows per transaction there
    history_messages: int = 100_000  # messages in the thread GET reads pages of
    history_rate: float = 200.0  # GET requests/s
    history_duration: float = 15.0  # seconds of its measurement window
    idle_threads: int = 10_000  # idle archived threads (idle_memory figure)
    rebuild_events: int = 1_000_000  # archived events the rebuild figure rebuilds from
    rebuild_threads: int = 10_000

    @property
    def experiment(self) -> dict[str, str]:
        """What differs from the gateway as shipped (empty: as shipped)."""
        return dict(self.gateway_env)


# Every figure at a tiny size, one run, no waiting for a quiet machine: what the smoke
# test in scripts/test runs so that no figure can rot unnoticed (its numbers mean nothing).
SMOKE = Options(
    runs=1, pairs=4, active_pairs=0, warmup=0.2, duration=0.5, rate=100.0, events=200,
    idle=20, deflate_idle=10, echo_clients=4, quiet_wait=0.0, redo_noisy=0, backlog=400,
    backlog_threads=20, projector_timeout=60.0, fresh_rate=50.0, fresh_duration=1.0,
    pg_rows=2000, pg_batch=500, history_messages=300, history_rate=20.0,
    history_duration=1.0, idle_threads=100, rebuild_events=2000, rebuild_threads=40)
