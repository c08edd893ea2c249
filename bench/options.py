"""Benchmark knobs: every field is a command-line option of ``python -m bench``
(``--backlog-threads`` sets ``backlog_threads``; its comment is the option's help);
``--smoke`` starts from ``SMOKE``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    runs: int = 3  # runs per figure (the median of them is reported)
    pairs: int = 100  # user pairs connected in the chat figures
    window: int = 16  # sends in flight per sender (throughput)
    senders: str = "both"  # both participants of a pair send, or one ("one")
    active_pairs: int = 30  # second throughput series with only this many pairs sending (0: none)
    # (60 senders stay under the 63 command connections of the default DUOLOGUE_REDIS_POOL=64)
    warmup: float = 1.0  # seconds of load before a measurement window
    duration: float = 5.0  # seconds of a measurement window
    rate: float = 2000.0  # sends/s for the latency figure
    load_procs: int = 1  # load-generator processes for the chat figures
    events: int = 10000  # events to catch up on (sync figures)
    idle: int = 2000  # idle sockets (memory figure)
    idle_watch: float = 60.0  # seconds the memory figure reads the gateway's CPU, sockets idle
    deflate_idle: int = 1000  # idle sockets per permessage-deflate case
    echo_clients: int = 100  # clients of the echo ceiling
    quiet_wait: float = 20.0  # before a run, wait up to this long for an idle machine (0: not)
    redo_noisy: int = 2  # redo at most this many runs per series disturbed by other sessions
    profile: bool = False  # one more throughput (or hostile) run under py-spy: top functions
    profile_seconds: float = 5.0  # seconds py-spy samples
    gateway_env: tuple[tuple[str, str], ...] = ()  # experiment: extra gateway settings
    backlog: int = 200_000  # events in the projector figures' backlog
    backlog_threads: int = 2000  # threads the backlog is spread over
    projector_timeout: float = 300.0  # most seconds a backlog may take to project
    fresh_rate: float = 2000.0  # sends/s for the freshness figure
    fresh_duration: float = 20.0  # seconds of the freshness figure's measurement window
    poll_ms: float = 5.0  # freshness poller period
    pg_rows: int = 200_000  # rows per Postgres ceiling
    pg_batch: int = 1000  # rows per transaction in the Postgres ceilings
    history_messages: int = 100_000  # messages in the thread GET reads pages of
    history_rate: float = 200.0  # GET requests/s in the history figure
    history_duration: float = 15.0  # seconds of the history figure's measurement window
    search_messages: int = 100_000  # the searching user's messages (search figure)
    search_others: int = 1_000_000  # other users' messages beside them (search figure)
    search_rate: float = 50.0  # GET /v1/search requests/s in the search figure
    search_duration: float = 15.0  # seconds of the search figure's measurement window
    idle_threads: int = 10_000  # idle archived threads (idle_memory figure)
    rebuild_events: int = 1_000_000  # archived events the rebuild figure rebuilds from
    rebuild_threads: int = 10_000  # threads the rebuild figure's events belong to
    churn_users: int = 200  # watched users whose sockets open and close (presence_churn)
    churn_rate: float = 200.0  # socket opens + closes per second (presence_churn)
    churn_duration: float = 20.0  # seconds of churn (presence_churn)
    webhook_rate: float = 2000.0  # sends/s to offline recipients in the webhook figure
    webhook_duration: float = 10.0  # seconds the webhook figure sends for
    webhook_pairs: int = 200  # user pairs the webhook figure's sends go between
    webhook_backlog: int = 50_000  # events of the backlog projected with and without webhooks
    limits_pairs: int = 500  # pairs of the limits figure (each user under every limit)
    hostile_send_rate: float = 1000.0  # sends/s of the normal pairs in the hostile figure
    hostile_sockets: int = 10  # the hostile user's sockets
    hostile_rate: float = 5000.0  # the hostile user's frames/s, all sockets together
    hostile_kinds: str = "typing,sync,oversized"  # the hostile user's frames (comma-separated)
    handshake_clients: int = 10  # clients reconnecting in a loop (handshakes figure)
    handshake_users: int = 10  # users those clients are (handshakes figure)
    cluster_messages: int = 400_000  # publishes per kind in the cluster_publish figure
    catchup_events: int = 10_000  # events the JS client misses while the gateway is down
    catchup_threads: int = 100  # threads those events are spread over (client_catchup)

    @property
    def experiment(self) -> dict[str, str]:
        """What differs from the gateway as shipped (empty: as shipped)."""
        return dict(self.gateway_env)


def helps() -> dict[str, str]:
    """Each field's comment above, the help of its option."""
    return dict(re.findall(r"^    (\w+): .+? = .+?  # (.+)$", Path(__file__).read_text(), re.M))


# Every figure at a tiny size, one run, no waiting for a quiet machine: what the smoke
# test in scripts/test runs so that no figure can rot unnoticed (its numbers mean nothing).
SMOKE = Options(
    runs=1, pairs=4, active_pairs=0, warmup=0.2, duration=0.5, rate=100.0, events=200,
    idle=20, idle_watch=0.5, deflate_idle=10, echo_clients=4, quiet_wait=0.0, redo_noisy=0,
    backlog=400, backlog_threads=20, projector_timeout=60.0, fresh_rate=50.0, fresh_duration=1.0,
    pg_rows=2000, pg_batch=500, history_messages=300, history_rate=20.0,
    history_duration=1.0, idle_threads=100, rebuild_events=2000, rebuild_threads=40,
    churn_users=10, churn_rate=20.0, churn_duration=1.0,
    search_messages=300, search_others=3000, search_rate=20.0, search_duration=1.0,
    webhook_rate=50.0, webhook_duration=1.0, webhook_pairs=4, webhook_backlog=400,
    limits_pairs=4, hostile_send_rate=50.0, hostile_rate=200.0, handshake_clients=2,
    catchup_events=100, catchup_threads=5, cluster_messages=2000)
