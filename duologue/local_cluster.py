"""A local Redis Cluster for the tests and ``duologue dev``: no setup needed but Redis 7.

``LocalCluster(base).start()`` runs N masters (default 3) and R replicas per master, each
an ``EmbeddedRedis`` (``redis-server`` on PATH, ``--cluster-enabled yes``, no persistence,
a 2 s node timeout so failovers are quick) on free 127.0.0.1 ports in a directory of
its own under ``base``. It assembles the cluster itself, as ``redis-cli --cluster
create`` does: even contiguous slot ranges (``even_slot_ranges``) with ``CLUSTER
ADDSLOTSRANGE``, a distinct config epoch per master, ``CLUSTER MEET``, ``CLUSTER
REPLICATE``; then waits until every node answers ``cluster_state:ok`` and every node
sees the same masters, replicas and slots. ``stop()`` kills the nodes and removes their
directories (also at exit).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis

from duologue.embedded import EmbeddedRedis, free_port

SLOTS = 16384
HOST = "127.0.0.1"
MIN_VERSION = (7, 0)  # CLUSTER ADDSLOTSRANGE, cluster-port

# (port, role, port of its master or None, slot ranges): one node as every node sees it
NodeView = tuple[int, str, int | None, tuple[tuple[int, int], ...]]


class LocalClusterError(RuntimeError):
    """A local cluster cannot run here; the message is one line saying why."""


def even_slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The slot ranges ``redis-cli --cluster create`` gives ``masters`` masters: even,
    contiguous, inclusive (3 masters: 0-5460, 5461-10922, 10923-16383)."""
    if masters < 1:
        raise ValueError("a cluster needs at least one master")
    per_node = SLOTS / masters
    ranges: list[tuple[int, int]] = []
    first, cursor = 0, 0.0
    for index in range(masters):
        last = math.floor(cursor + per_node - 1 + 0.5)  # C's lround: halves away from 0
        if last > SLOTS or index == masters - 1:
            last = SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per_node
    return ranges


def redis_server_version(binary: str) -> tuple[int, int, int]:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", done.stdout)
    if found is None:
        raise LocalClusterError(f"cannot tell the version of {binary}: {done.stdout.strip()!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


def require_redis_7() -> str:
    """The ``redis-server`` on PATH, when it is Redis 7 or newer; else one line why not."""
    binary = shutil.which("redis-server")
    hint = "install Redis 7+ (Debian 12: apt-get install redis-server)"
    if binary is None:
        raise LocalClusterError(f"a local Redis Cluster needs redis-server >= 7 on PATH; "
                                f"there is none: {hint}")
    version = redis_server_version(binary)
    if version[:2] < MIN_VERSION:
        raise LocalClusterError(
            f"a local Redis Cluster needs redis-server >= 7 on PATH; {binary} is "
            f"{'.'.join(map(str, version))}: {hint}")
    return binary


def _distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, decode_responses=True,
                       socket_connect_timeout=2, socket_timeout=5)


def _ask(client: redis.Redis, *args: str | int) -> str:
    """One command's answer as text (``decode_responses``: no parsing by redis-py)."""
    return str(client.execute_command(*args))  # type: ignore[no-untyped-call]


def _info_fields(text: str) -> dict[str, str]:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass(frozen=True)
class _Row:
    """One line of CLUSTER NODES."""

    node_id: str
    port: int | None  # None: its own address, before the first MEET
    flags: frozenset[str]
    master_id: str
    link: str
    slots: tuple[str, ...]


def _rows(text: str) -> list[_Row]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        node_id, address, flags, master_id, _ping, _pong, _epoch, link, *slots = line.split()
        host_port = address.split("@", 1)[0]
        port = int(host_port.rsplit(":", 1)[1]) if host_port.startswith(f"{HOST}:") else None
        rows.append(_Row(node_id, port, frozenset(flags.split(",")), master_id, link,
                         tuple(slots)))
    return rows


def _view(text: str) -> tuple[NodeView, ...] | None:
    """CLUSTER NODES as (port, role, master's port, slots) per node, sorted; None while
    any node is still being met, failing, unreachable, or a slot is in migration."""
    rows = _rows(text)
    port_of = {row.node_id: row.port for row in rows}
    view: list[NodeView] = []
    for row in rows:
        if row.port is None or row.flags & {"handshake", "fail", "fail?", "noaddr"} \
                or row.link != "connected" or any(s.startswith("[") for s in row.slots):
            return None
        if "master" in row.flags:
            ranges = tuple((int(s.split("-")[0]), int(s.split("-")[-1])) for s in row.slots)
            view.append((row.port, "master", None, ranges))
        elif port_of.get(row.master_id) is not None:
            view.append((row.port, "replica", port_of[row.master_id], ()))
        else:
            return None
    return tuple(sorted(view))


@dataclass
class LocalCluster:
    """Masters and replicas of one Redis Cluster on 127.0.0.1, under ``base``."""

    base: Path
    masters_count: int = 3
    replicas: int = 0  # per master
    node_timeout_ms: int = 2000
    own_session: bool = False  # out of the terminal's process group (Ctrl-C)
    ready_timeout: float = 30.0
    servers: list[EmbeddedRedis] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A URL of the first node (any node will do for a cluster client)."""
        return f"redis://{HOST}:{self.servers[0].port}/0"

    @property
    def nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node, the initial masters first."""
        return [(HOST, server.port) for server in self.servers]

    def server(self, port: int) -> EmbeddedRedis:
        """The node on ``port`` (to kill it, as a failover test does)."""
        return next(server for server in self.servers if server.port == port)

    def masters(self) -> list[tuple[str, int]]:
        """(host, port) of the nodes that are masters now, as the first node that
        answers sees them (after a failover, a promoted replica is one)."""
        for _host, port in self.nodes:
            with contextlib.suppress(redis.RedisError), _client(port) as client:
                rows = _rows(_ask(client, "CLUSTER", "NODES"))
                return sorted((HOST, row.port) for row in rows if row.port is not None
                              and "master" in row.flags and not row.flags & {"fail", "fail?"})
        raise LocalClusterError(f"no node of the cluster at {self.nodes} answers")

    def start(self) -> LocalCluster:
        require_redis_7()
        if self.masters_count < 1 or self.replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replicas")
        total = self.masters_count * (1 + self.replicas)
        ports = _distinct_free_ports(2 * total)
        atexit.register(self.stop)
        try:
            for port, bus in zip(ports[:total], ports[total:], strict=True):
                self.servers.append(EmbeddedRedis(
                    self.base / f"node-{port}", port=port, persist=False,
                    own_session=self.own_session,
                    args=("--appendonly", "no", "--cluster-enabled", "yes",
                          "--cluster-config-file", "nodes.conf", "--cluster-port", str(bus),
                          "--cluster-node-timeout", str(self.node_timeout_ms),
                          "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1",
                          "--enable-debug-command", "local")))  # DEBUG SLEEP, from 127.0.0.1
                self.servers[-1].start()
            self._assemble(dict(zip(ports[:total], ports[total:], strict=True)))
        except BaseException:
            self.stop()
            raise
        return self

    def expected_view(self) -> tuple[NodeView, ...]:
        """What every node must see once the cluster is up."""
        ports = [server.port for server in self.servers]
        masters = ports[:self.masters_count]
        view: list[NodeView] = [(port, "master", None, (slots,)) for port, slots
                                in zip(masters, even_slot_ranges(self.masters_count),
                                       strict=True)]
        for index, port in enumerate(ports[self.masters_count:]):
            view.append((port, "replica", masters[index // self.replicas], ()))
        return tuple(sorted(view))

    def _assemble(self, bus_of: dict[int, int]) -> None:
        masters = self.servers[:self.masters_count]
        with contextlib.ExitStack() as stack:
            clients = {s.port: stack.enter_context(_client(s.port)) for s in self.servers}
            for epoch, (server, (first, last)) in enumerate(
                    zip(masters, even_slot_ranges(self.masters_count), strict=True), start=1):
                _ask(clients[server.port], "CLUSTER", "ADDSLOTSRANGE", first, last)
                _ask(clients[server.port], "CLUSTER", "SET-CONFIG-EPOCH", epoch)
            first_node = clients[self.servers[0].port]
            for server in self.servers[1:]:
                _ask(first_node, "CLUSTER", "MEET", HOST, server.port, bus_of[server.port])
            self._wait_until("every node knows every other", lambda: all(
                len(_ask(c, "CLUSTER", "NODES").splitlines())
                == len(self.servers) for c in clients.values()))
            ids = {port: _ask(c, "CLUSTER", "MYID") for port, c in clients.items()}
            for index, replica in enumerate(self.servers[self.masters_count:]):
                master = masters[index // self.replicas]
                self._replicate(clients[replica.port], ids[master.port])
            expected = self.expected_view()
            self._wait_until("cluster_state:ok and one view of the slots on every node",
                             lambda: all(self._node_ready(c, expected)
                                         for c in clients.values()))

    def _replicate(self, client: redis.Redis, master_id: str) -> None:
        """CLUSTER REPLICATE, once the replica has heard that its master is a master."""
        def done() -> bool:
            try:
                _ask(client, "CLUSTER", "REPLICATE", master_id)
            except redis.ResponseError:
                return False  # "I don't know about node" / "not a master" yet
            return True

        self._wait_until("CLUSTER REPLICATE accepted", done)

    def _node_ready(self, client: redis.Redis, expected: tuple[NodeView, ...]) -> bool:
        info = _info_fields(_ask(client, "CLUSTER", "INFO"))
        if info.get("cluster_state") != "ok" or \
                info.get("cluster_known_nodes") != str(len(self.servers)):
            return False
        if _view(_ask(client, "CLUSTER", "NODES")) != expected:
            return False
        replication: dict[str, object] = client.info("replication")
        if replication.get("role") != "master" and \
                replication.get("master_link_status") != "up":
            return False
        # CLUSTER SLOTS names a replica only once it has replicated something (Redis 7:
        # repl_offset > 0, learnt by gossip): the replicas' pings see to that within 1 s
        slots: list[list[object]] = client.execute_command(  # type: ignore[no-untyped-call]
            "CLUSTER", "SLOTS")
        return all(len(entry) == 3 + self.replicas for entry in slots)

    def _wait_until(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise LocalClusterError(
                    f"local Redis Cluster on ports {[p for _, p in self.nodes]}: not "
                    f"{what} after {self.ready_timeout:.0f} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Kill every node and remove its directory (and ``base``, when left empty)."""
        atexit.unregister(self.stop)
        for server in self.servers:
            if server.process is not None and server.process.poll() is None:
                server.process.kill()
        for server in self.servers:
            if server.process is not None:
                server.process.wait(timeout=10)
            shutil.rmtree(server.directory, ignore_errors=True)
        self.servers.clear()
        with contextlib.suppress(OSError):
            self.base.rmdir()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
