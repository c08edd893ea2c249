"""Exactly-once and in-order checks over what each connection of a pair received."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


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
            key = id_key(event_id)
            if key <= last:
                check.out_of_order += 1
            last = max(last, key)
        check.missing += len(expected - seen)
    return check
