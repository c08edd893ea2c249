"""Redis Cluster figures (protocol.md section 9, docs/cluster.md).

``cluster_publish``: what a cluster-wide ``PUBLISH`` (what ``append.lua`` does) costs each
master, against ``SPUBLISH`` (sharded pub/sub: the message stays on its shard), on a
3-master cluster started here from ``redis-server`` 7+. ``redis-benchmark`` sends
``--cluster-messages`` publishes of a 300-byte live frame to one node, pipelined, with a
subscriber on every node (as every gateway's hub is subscribed somewhere); each node's
CPU is read from ``/proc`` before and after. Rows: CPU µs per publish on the publishing
node and on each other node, for each kind; the same run's ``SET`` on the publishing node
is the ceiling (µs of CPU per plain write).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import redis

from bench.harness import Result, Row, counted_runs, value
from bench.options import Options
from duologue.local_cluster import LocalCluster

FRAME = "x" * 300
TICK_US = 1_000_000 / 100  # /proc stat ticks (USER_HZ 100)


def _cpu_us(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_US  # utime + stime


def _pid(cluster: LocalCluster, port: int) -> int:
    process = cluster.server(port).process
    assert process is not None
    return process.pid


def _bench(port: int, count: int, *command: str) -> None:
    subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(count), "-c", "8", "-P", "16",
                    "-q", *command], check=True, capture_output=True, timeout=300)


def _measure(cluster: LocalCluster, count: int) -> dict[str, Any]:
    ports = [port for _, port in cluster.masters()]
    pids = {port: _pid(cluster, port) for port in ports}
    publisher = ports[0]
    channel = "dl:live:{u0}"  # the same name for both kinds; SPUBLISH goes to its owner
    owner = redis.cluster.RedisCluster(host="127.0.0.1", port=publisher)
    node = owner.get_node_from_key(channel)  # type: ignore[no-untyped-call]
    assert node is not None
    listeners = []
    for port in ports:  # one subscriber per node, as the gateways' hubs are
        client = redis.Redis(port=port)
        ps = client.pubsub()
        ps.subscribe(channel)
        listeners.append((client, ps))
    shard = redis.Redis(port=int(node.port)).pubsub()
    shard.execute_command("SSUBSCRIBE", channel)  # type: ignore[no-untyped-call]
    out: dict[str, Any] = {}
    port = int(node.port)  # every command to the node owning {u0}'s slot
    for name, command in (("set", ("SET", "k:{u0}", FRAME)),
                          ("publish", ("PUBLISH", channel, FRAME)),
                          ("spublish", ("SPUBLISH", channel, FRAME))):
        before = {p: _cpu_us(pid) for p, pid in pids.items()}
        _bench(port, count, *command)
        after = {p: _cpu_us(pid) for p, pid in pids.items()}
        spent = {p: (after[p] - before[p]) / count for p in ports}
        out[name] = {"sender_us": spent[port],
                     "others_us": max(spent[p] for p in ports if p != port),
                     "all_us": sum(spent.values())}
    for client, ps in listeners:
        ps.close()
        client.close()
    shard.close()
    owner.close()
    out["masters"] = len(ports)
    return out


async def cluster_publish(opts: Options) -> Result:
    result = Result()
    if shutil.which("redis-benchmark") is None:
        result.notes.append("cluster_publish: redis-benchmark is not on PATH")
        return result

    async def one() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="dlbench-cluster-") as base, \
                LocalCluster(Path(base)) as cluster:
            return await asyncio.to_thread(_measure, cluster, opts.cluster_messages)

    runs = await counted_runs(
        opts, result, "cluster publish", one,
        lambda r: ", ".join(f"{k}: {v['sender_us']:.2f} us here, {v['others_us']:.2f} us on "
                            "another master" for k, v in r.items() if isinstance(v, dict)))
    for kind in ("set", "publish", "spublish"):
        label = {"set": "SET (ceiling: a plain write)", "publish": "PUBLISH (cluster-wide)",
                 "spublish": "SPUBLISH (sharded)"}[kind]
        result.rows += [
            Row(f"{label}: CPU per command, node it is sent to", "us",
                [value(r, kind, "sender_us") for r in runs], lower=True, digits=2,
                ceiling=kind == "set"),
            Row(f"  {label}: CPU per command, each other master", "us",
                [value(r, kind, "others_us") for r in runs], lower=True, digits=2,
                ceiling=kind == "set"),
        ]
    return result
