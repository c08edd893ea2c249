"""The chat load: user pairs sending to each other through one gateway.

Closed loop (``rate`` 0): every sender keeps ``window`` sends in flight, sending one
more per ack (the refills of one read are joined into one write). Open loop
(``rate`` > 0): a pacer spreads ``rate`` sends/s over the senders. Either way the
send and ack times (and, open loop, delivery times) are recorded, and every
connection's acks and events are kept and checked at the end: every acked id arrived
exactly once at both participants' connections, in increasing id order.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from bench import wire
from bench.harness import CpuMeter
from bench.wire import Stage, WsClient
from domain.ids import event_key

MAX_RETRIES = 1000  # per send, while the run is sending; `unavailable` refusals back off:
RETRY_BASE, RETRY_CAP = 0.01, 0.2  # seconds
TICK = 0.001  # pacer period; uvloop rounds shorter timers down to 0, i.e. a busy loop


@dataclass
class Received:
    """What one connection saw: its acks (ref -> id) and event frames (id, client_msg_id)."""

    user: str
    thread: str
    acks: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str, str]] = field(default_factory=list)
    wrong_thread: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Check:
    acked: int = 0  # distinct acked sends
    deliveries: int = 0  # event frames received, over all connections
    missing: int = 0  # (acked event, participant connection) pairs never delivered
    duplicates: int = 0  # an event id delivered twice to one connection
    out_of_order: int = 0  # an event id not greater than the previous one on that connection
    mismatched: int = 0  # an event whose client_msg_id/id pair matches no ack
    wrong_thread: int = 0
    refused: int = 0  # sends finally refused with an error frame (after retries)
    unacked: int = 0  # sends still without an ack or refusal at the end

    @property
    def ok(self) -> bool:
        """Exactly-once and in order: every acked event, to both participants, once."""
        return not (self.missing or self.duplicates or self.out_of_order or self.mismatched
                    or self.wrong_thread or self.unacked)

    @property
    def complete(self) -> bool:
        """Also: no send was finally refused."""
        return self.ok and not self.refused

    def add(self, other: Check) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int | bool]:
        return {**asdict(self), "ok": self.ok, "complete": self.complete}


def check_pair(a: Received, b: Received) -> Check:
    """Every ack of the pair delivered exactly once to both, in increasing id order."""
    acked = {**a.acks, **b.acks}
    expected = set(acked.values())
    check = Check(acked=len(acked), wrong_thread=a.wrong_thread + b.wrong_thread,
                  refused=len(a.errors) + len(b.errors))
    for conn in (a, b):
        seen: set[str] = set()
        last = (0, 0)
        for event_id, ref in conn.events:
            check.deliveries += 1
            if acked.get(ref) != event_id:
                check.mismatched += 1
            if event_id in seen:
                check.duplicates += 1
                continue
            seen.add(event_id)
            key = event_key(event_id)
            if key <= last:
                check.out_of_order += 1
            last = max(last, key)
        check.missing += len(expected - seen)
    return check


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.rate: float = spec["rate"]
        self.window: int = spec["window"]
        self.cap: int = spec["cap"]  # most sends per sender
        self.sending = True
        self.acked = 0
        self.retried = 0  # `unavailable` refusals, resent with the same client_msg_id
        self.rate_limited = 0  # `rate_limited` refusals, resent after retry_after_ms
        self.retry_samples: list[str] = []
        self.sent_at: dict[str, float] = {}
        self.ack_samples: list[tuple[float, float]] = []  # (sent at, seconds to ack)
        self.delivery_samples: list[tuple[float, float]] = []  # (sent at, seconds to event)
        self.record_acks: bool = spec.get("record_acks", False)
        self.ack_log: list[tuple[float, str, str, float]] = []  # (acked at, thread, id,
        # sent at), if asked


class Peer:
    def __init__(self, run: Run, user: str, partner: str) -> None:
        self.run = run
        self.user = user
        self.got = Received(user, "dm:" + ":".join(sorted((user, partner))))
        self.hello: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.partner = partner
        self.presence: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ws: WsClient | None = None
        self.seq = 0
        self.inflight = 0
        self.refill = 0
        self.retries: dict[str, int] = {}
        self.head = (f'{{"type":"send","to":"{partner}","body":"{wire.BODY}",'
                     f'"client_msg_id":"{user}-').encode()

    def next_frame(self) -> tuple[str, bytes]:
        self.seq += 1
        self.inflight += 1
        seq = str(self.seq)
        ref = f"{self.user}-{seq}"
        self.run.sent_at[ref] = time.perf_counter()
        return ref, self.head + seq.encode() + b'"}'

    def frame_for(self, ref: str) -> bytes:
        return self.head + ref.rpartition("-")[2].encode() + b'"}'

    def on_message(self, payload: bytes) -> None:
        frame = wire.DECODE(payload)
        kind, run = frame.type, self.run
        if kind == "event":
            event = frame.event
            ref = event.client_msg_id if event is not None else ""
            self.got.events.append((frame.id, ref))
            if frame.thread != self.got.thread:
                self.got.wrong_thread += 1
            if event is not None and event.sender != self.user:
                sent = run.sent_at.get(ref)
                if sent is not None:
                    run.delivery_samples.append((sent, time.perf_counter() - sent))
        elif kind == "ack":
            assert frame.ref is not None  # an ack always answers a send's client_msg_id
            self.got.acks[frame.ref] = frame.id
            self.inflight -= 1
            run.acked += 1
            sent = run.sent_at.get(frame.ref)
            if sent is not None:
                run.ack_samples.append((sent, time.perf_counter() - sent))
            if run.record_acks:
                run.ack_log.append((time.perf_counter(), frame.thread, frame.id, sent or 0.0))
            if not run.rate:
                self.refill += 1
        elif kind == "hello":
            if not self.hello.done():
                self.hello.set_result(None)
        elif kind == "error":
            self.refused(frame.code, frame.message, frame.ref or "",
                         getattr(frame, "retry_after_ms", None))
        elif kind == "presence" and not self.presence.done():
            self.presence.set_result(None)

    def refused(self, code: str, message: str, ref: str, retry_after_ms: object = None
                ) -> None:
        """``unavailable`` is retried with the same client_msg_id (as the contract says),
        and ``rate_limited`` after its ``retry_after_ms`` (counted apart)."""
        tries = self.retries.get(ref, 0)
        if code == "rate_limited" and ref and isinstance(retry_after_ms, int):
            self.run.rate_limited += 1
            asyncio.get_running_loop().call_later(retry_after_ms / 1000, self.resend, ref)
            return
        if code == "unavailable" and ref and tries < MAX_RETRIES and self.run.sending:
            self.retries[ref] = tries + 1
            self.run.retried += 1
            sent = self.run.sent_at.get(ref)
            waited = f"{(time.perf_counter() - sent) * 1000:.0f} ms after the first send" \
                if sent is not None else ""
            if len(self.run.retry_samples) < 5:
                self.run.retry_samples.append(f"{code}: {message} ({ref}, {waited})")
            delay = min(RETRY_BASE * 2**tries, RETRY_CAP)
            asyncio.get_running_loop().call_later(delay, self.resend, ref)
            return
        self.got.errors.append(f"{code}: {message} ({ref})")
        if ref:
            self.inflight -= 1

    def resend(self, ref: str) -> None:
        if self.ws is not None:
            self.ws.send(self.frame_for(ref))

    def on_batch(self) -> None:
        count, self.refill = self.refill, 0
        if count and self.run.sending:
            self.send(min(count, self.run.cap - self.seq))

    def send(self, count: int) -> None:
        if count > 0 and self.ws is not None:
            self.ws.send_many([self.next_frame()[1] for _ in range(count)])

    async def connect(self, port: int, watch: bool = False) -> None:
        self.ws = await wire.open_ws(port, self.user, self.on_message, self.on_batch)
        await asyncio.wait_for(self.hello, 10)
        if watch:  # the partner's presence, watched for the whole run
            self.ws.send(f'{{"type":"watch","users":["{self.partner}"]}}'.encode())
            await asyncio.wait_for(self.presence, 10)


async def pace(run: Run, senders: list[Peer], until: float) -> None:
    """Open loop: ``run.rate`` sends/s spread evenly over time and over the senders."""
    start = time.perf_counter()
    limit = int(run.rate * (until - start)) + 1
    sent, turn = 0, 0
    while sent < limit and run.sending:
        now = time.perf_counter()
        if now >= until:
            break
        due = min(int((now - start) * run.rate), limit) - sent
        for _ in range(due):
            peer = senders[turn]
            turn = (turn + 1) % len(senders)
            _, data = peer.next_frame()
            assert peer.ws is not None
            peer.ws.send(data)
        sent += max(due, 0)
        await asyncio.sleep(TICK)


def _window(samples: list[tuple[float, float]], lo: float, hi: float) -> list[float]:
    return sorted(round(s * 1000, 3) for at, s in samples if lo <= at < hi)


async def chat(spec: dict[str, Any], stage: Stage) -> dict[str, Any]:
    run = Run(spec)
    pairs: list[tuple[Peer, Peer]] = []
    for i in range(spec["first"], spec["first"] + spec["pairs"]):
        low, high = f"u{i:04d}a", f"u{i:04d}b"
        pairs.append((Peer(run, low, high), Peer(run, high, low)))
    peers = [p for pair in pairs for p in pair]
    active = pairs[:max(0, spec["active_below"] - spec["first"])]
    senders = [p for a, b in active for p in ((a, b) if spec["senders"] == "both" else (a,))]
    await wire.bounded([partial(p.connect, spec["port"], spec.get("watch", False))
                        for p in peers], 50, 120)
    meter = CpuMeter({"server": spec.get("server_pid")}, redis_url=spec.get("redis_url"),
                     redis_pids=spec.get("redis_pids") or ())
    await stage("ready", connections=len(peers))

    t0 = time.perf_counter()
    measure_from, measure_to = t0 + spec["warmup"], t0 + spec["warmup"] + spec["duration"]
    pacer = None
    if run.rate:
        pacer = asyncio.create_task(pace(run, senders, measure_to))
    else:
        for peer in senders:
            peer.send(min(run.window, run.cap))
    window = await meter.window(measure_from, measure_to, lambda: run.acked)
    run.sending = False
    if pacer is not None:
        await pacer
    sent_total = sum(p.seq for p in peers)
    drained = await _drain(peers, spec["drain"])

    check = Check()
    for a, b in pairs:
        check.add(check_pair(a.got, b.got))
    check.unacked = sum(p.inflight for p in peers)
    errors = [e for p in peers for e in p.got.errors][:5]
    for peer in peers:
        if peer.ws is not None:
            peer.ws.close()
    await asyncio.sleep(0.2)
    t1, t2 = window.t1, window.t2  # perf_counter is CLOCK_MONOTONIC: comparable across processes
    return {
        "window": [t1, t2], "acks": [list(a) for a in run.ack_log if t1 <= a[0] < t2],
        "acked_in_window": window.counted, "seconds": window.seconds,
        "rate": window.counted / window.seconds, "sent": sent_total,
        "drain_seconds": drained, "retried_unavailable": run.retried,
        "rate_limited": run.rate_limited, "senders": len(senders),
        "starved_senders": sum(1 for p in senders if not p.got.acks),
        "check": check.as_dict(), "error_samples": errors, "retry_samples": run.retry_samples,
        "cpu": window.cpu(),
        "ack_ms": _window(run.ack_samples, t1, t2),
        "delivery_ms": _window(run.delivery_samples, t1, t2),
        "ack_unanswered": _unanswered(run, run.ack_samples, t1, t2),
        "delivery_unanswered": _unanswered(run, run.delivery_samples, t1, t2),
    }


def _unanswered(run: Run, samples: list[tuple[float, float]], lo: float, hi: float) -> int:
    """Sends of the window that never got their ack (or delivery): infinite latency."""
    sent = sum(1 for at in run.sent_at.values() if lo <= at < hi)
    return sent - sum(1 for at, _ in samples if lo <= at < hi)


async def _drain(peers: list[Peer], timeout: float) -> float:
    """Wait until every send is acked and delivered to both participants (or ``timeout``)."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        acked = sum(len(p.got.acks) for p in peers)
        delivered = sum(len(p.got.events) for p in peers)
        if not any(p.inflight for p in peers) and delivered >= 2 * acked:
            break
        await asyncio.sleep(0.05)
    return round(time.perf_counter() - start, 3)
