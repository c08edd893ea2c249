"""``duologue projector``: one worker in this process, or N worker processes.

SIGTERM/SIGINT: every worker finishes the batch in hand, releases its partitions
and exits. With ``--workers N`` a supervisor restarts a worker that dies.

With ``DUOLOGUE_WEBHOOK_URL`` set, every worker process also supervises a webhook sender
(``projector.webhook_process``, a child process of its own; not with ``--burst``, a batch
job): it stops with the worker, after the POSTs in flight end.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from types import FrameType

import structlog

from adapters import logs
from adapters.settings import Settings, SettingsError
from projector.webhook_process import Supervisor
from projector.worker import Worker

log = structlog.get_logger("duologue.projector")


def run(settings: Settings, workers: int = 1, burst: bool = False) -> int:
    settings.require("redis_url", "database_url")
    if settings.webhook_url and not settings.webhook_secret:
        raise SettingsError("DUOLOGUE_WEBHOOK_SECRET is not set (DUOLOGUE_WEBHOOK_URL is): "
                            "webhook deliveries are always signed")
    if workers <= 1:
        return _run_one(settings, burst)
    return _supervise(settings, workers, burst)


def _run_one(settings: Settings, burst: bool) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _: FrameType | None) -> None:
        log.info("projector_stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sender = Supervisor(settings).start() if settings.webhook_url and not burst else None
    try:
        Worker(settings, burst=burst, stop=stop,
               report_lag=sender.report_lag if sender is not None else None).run()
    finally:
        if sender is not None:
            sender.stop()
    return 0


def _child(settings: Settings, burst: bool, level: str) -> None:
    logs.configure(level)
    _run_one(settings, burst)


def _supervise(settings: Settings, count: int, burst: bool) -> int:
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()
    level = os.environ.get("DUOLOGUE_LOG_LEVEL", "INFO")

    def start() -> multiprocessing.process.BaseProcess:
        process = context.Process(target=_child, args=(settings, burst, level), daemon=False)
        process.start()
        return process

    def on_signal(signum: int, _: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    children = [start() for _ in range(count)]
    while not stopping.is_set():
        for index, child in enumerate(children):
            if child.exitcode is None:
                continue
            if burst and child.exitcode == 0:
                continue
            log.warning("projector_worker_died", pid=child.pid, exitcode=child.exitcode)
            children[index] = start()
        if burst and all(c.exitcode == 0 for c in children):
            return 0
        stopping.wait(0.5)
    for child in children:
        if child.exitcode is None and child.pid is not None:
            child.terminate()  # SIGTERM: the worker finishes its batch
    for child in children:
        child.join(30)
        if child.exitcode is None:
            child.kill()
    return 0
