"""The webhook sender's process, supervised by a ``duologue projector`` process.

The sender (``projector.webhook_sender``) runs in a child process: its Python (aiohttp,
the outbox queries) would otherwise share the projector's GIL, and a backlog of
deliveries would slow the projection. The child runs at a lower CPU priority (``NICE``)
so that, on a busy machine, the projection and Postgres come first.

- ``Supervisor.start``/``stop``: the projector starts it with its worker and stops it
  (SIGTERM: the POSTs in flight end and are recorded) when the worker stops.
- A child that dies is started again (logged, ``webhook_sender_died``); inside it, a
  session that crashes is restarted by ``Sender.run``.
- A child whose projector died (SIGKILL: no SIGTERM came) notices that its parent
  changed and stops the same way.
- ``Supervisor.lag``: how far behind its projector is, in seconds (the age of the oldest
  entry its last read returned; 0 when that read was empty), in shared memory, written by
  the worker (``projector.worker``) and read by the senders, which hold their claims while
  it is large (``projector.webhook_sender``): a backlog is projected first.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import multiprocessing.sharedctypes
import os
import signal
import threading
from types import FrameType

import structlog

from adapters import logs
from adapters.settings import Settings
from projector.webhook_sender import Sender

log = structlog.get_logger("duologue.webhook")
NICE = 15  # the sender's CPU priority below the projector's
WATCH_S = 0.5  # how often the child checks its parent, and the parent its child


def _child(settings: Settings, level: str, parent: int,
           lag: multiprocessing.sharedctypes.Synchronized[float]) -> None:
    logs.configure(level)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the projector, which stops us

    def orphaned() -> None:
        while not stop.wait(WATCH_S):
            if os.getppid() != parent:
                log.warning("webhook_sender_orphaned", parent=parent)
                stop.set()

    threading.Thread(target=orphaned, name="webhook-orphan", daemon=True).start()
    Sender(settings, stop, lambda: float(lag.value)).run()


class Supervisor:
    """Keeps ``webhook_senders`` sender processes running until ``stop``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.level = os.environ.get("DUOLOGUE_LOG_LEVEL", "INFO")
        self.stopping = threading.Event()
        self.context = multiprocessing.get_context("spawn")
        # a double in shared memory, written by one thread: no lock needed to read it whole
        self.lag = self.context.Value("d", 0.0, lock=False)
        self.children: list[multiprocessing.process.BaseProcess | None] = (
            [None] * settings.webhook_senders)
        self.thread = threading.Thread(target=self._watch, name="webhook-supervisor",
                                       daemon=True)

    def start(self) -> Supervisor:
        for n in range(len(self.children)):
            self._spawn(n)
        self.thread.start()
        return self

    def _spawn(self, n: int) -> None:
        child = self.context.Process(target=_child, name=f"duologue-webhook-sender-{n}",
                                     args=(self.settings, self.level, os.getpid(), self.lag),
                                     daemon=False)
        child.start()
        self.children[n] = child

    def _watch(self) -> None:
        while not self.stopping.wait(WATCH_S):
            for n, child in enumerate(self.children):
                if child is not None and child.exitcode is not None \
                        and not self.stopping.is_set():
                    log.error("webhook_sender_died", pid=child.pid, exitcode=child.exitcode)
                    self._spawn(n)

    def report_lag(self, seconds: float) -> None:
        """The worker's lag after a read (see the module doc)."""
        self.lag.value = seconds

    def stop(self) -> None:
        """SIGTERM the senders and wait for the POSTs in flight (at most the timeout)."""
        self.stopping.set()
        self.thread.join(WATCH_S * 2)
        running = [c for c in self.children if c is not None and c.exitcode is None]
        for child in running:
            child.terminate()
        for child in running:
            child.join(self.settings.webhook_timeout + 5)
            if child.exitcode is None:
                child.kill()
                child.join(5)
