"""``duologue gateway --workers N``: N gateway processes on one port, supervised.

Each worker binds the port with ``SO_REUSEPORT``, so the kernel spreads new connections
over them and one machine's cores all serve sockets. The supervisor holds the port
(bound, never listening: with ``--port 0`` it is how the workers share the port it got),
passes SIGTERM and SIGINT on (each worker drains its sockets with 1001), and starts a
worker that died again after a second.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import structlog

log = structlog.get_logger("duologue.workers")
RESTART_AFTER = 1.0  # seconds before a dead worker is started again
STOP_GRACE = 40.0  # seconds the workers get to drain before they are killed (default)


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_workers(host: str, port: int, workers: int, grace: float = STOP_GRACE,
                preexec: Callable[[], None] | None = None) -> int:
    """Supervise ``workers`` gateway processes until SIGTERM or SIGINT. Each runs in a
    session of its own (a terminal's Ctrl-C reaches only the supervisor, which passes one
    SIGTERM on: a second signal would cut uvicorn's drain short); ``preexec`` runs in each
    (``duologue`` makes a worker die with its supervisor); ``grace``: seconds they get to
    drain before they are killed."""
    holder = reuse_port_socket(host, port)
    port = holder.getsockname()[1]
    argv = [sys.executable, "-c", "from duologue.cli import main; raise SystemExit(main())",
            "gateway", "--host", host, "--port", str(port), "--reuse-port"]
    stopping: list[int] = []

    def stop(signum: int, _: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, start_new_session=True, preexec_fn=preexec)

    children = [spawn() for _ in range(workers)]
    log.info("gateway_workers", workers=workers, host=host, port=port,
             pids=[c.pid for c in children])
    died_at: dict[int, float] = {}  # worker slot -> when its process was found dead
    while not stopping:
        time.sleep(0.2)
        for n, child in enumerate(children):
            code = child.poll()
            if code is None or stopping:
                continue
            if n not in died_at:
                log.warning("gateway_worker_died", pid=child.pid, exit_code=code,
                            restart_in_s=RESTART_AFTER)
                died_at[n] = time.monotonic()
            elif time.monotonic() - died_at[n] >= RESTART_AFTER:
                del died_at[n]
                children[n] = spawn()
                log.info("gateway_worker_started", pid=children[n].pid)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    holder.close()
    return 0
