"""Presence in Redis (protocol.md section 5, Presence): the record format, shared by the
gateways (which write it and tell watchers) and the projector (whose webhook asks whether
a message's recipient is online).

One hash per user, ``<prefix>:pr:{<user>}``:

- field ``<gateway id>`` = the epoch ms of that gateway's last heartbeat for the user,
  present while the gateway holds at least one of the user's WebSockets. It is a lease:
  it counts as online only until the lease length (``DUOLOGUE_PRESENCE_LEASE``, default
  ``LEASE_MS``) after that heartbeat, so a gateway that dies (SIGKILL, power) takes its
  users offline by expiry, with nobody cleaning up. Gateways renew their users' leases
  every ``heartbeat_s(lease_ms)`` seconds (``HEARTBEAT_S`` at the default lease).
- field ``ls`` = the epoch ms at which the user's last connection closed cleanly.

A user is online while one lease is live; ``last_seen`` is the newest of ``ls`` and the
heartbeats of expired leases (a dead gateway's users were last seen at its last
heartbeat). Changes are published, once per change, on ``<prefix>:presence:{<user>}``
as the presence frame itself; watchers' gateways subscribe to the users their sockets
watch. The hash tag keeps a user's key and channel in one Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Mapping

LEASE_MS = 45_000  # a gateway's claim that a user is online lasts this long unrenewed
HEARTBEAT_S = 15.0  # how often a gateway renews its users' leases
SWEEP_S = 10.0  # how often a gateway re-reads its watched users (catches expired leases)
LAST_SEEN = b"ls"


def key(prefix: str, user: str) -> str:
    return f"{prefix}:pr:{{{user}}}"


def channel(prefix: str, user: str) -> str:
    return f"{prefix}:presence:{{{user}}}"


def heartbeat_s(lease_ms: int = LEASE_MS) -> float:
    """Seconds between two renewals of a gateway's leases: a third of the lease, so two
    renewals may fail before a live user looks offline."""
    return min(HEARTBEAT_S, lease_ms / 3000)


def sweep_s(lease_ms: int = LEASE_MS) -> float:
    """Seconds between two re-reads of the users a gateway's sockets watch."""
    return min(SWEEP_S, lease_ms / 3000)


def status(
    fields: Mapping[bytes, bytes], now_ms: int, lease_ms: int = LEASE_MS
) -> tuple[bool, int | None]:
    """(online, last_seen) from a user's presence hash at ``now_ms`` (Redis ``TIME``),
    leases lasting ``lease_ms`` (``Settings.presence_lease_ms``)."""
    last_seen: int | None = None
    for name, value in fields.items():
        try:
            ms = int(value)
        except ValueError:
            continue
        if name != LAST_SEEN and ms + lease_ms > now_ms:
            return True, None
        if last_seen is None or ms > last_seen:
            last_seen = ms
    return False, last_seen
