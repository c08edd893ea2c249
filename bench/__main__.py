"""``python -m bench``: run the gateway benchmarks and print a table of medians.

Each figure is measured ``--runs`` times (default 3), each run on a fresh gateway
process with its own Redis key prefix, deleted afterwards. ``--only`` picks figures:
throughput, latency, sync, memory, deflate_memory, ceilings (gateway); projector, freshness,
pg_ceilings, history_read, search_read, rebuild (projector and history: each run also has a Postgres
database of its own, dropped afterwards); idle_memory, archive_sync, retention (the two
tiers of protocol.md section 7); presence_sends, presence_churn (presence, section 5);
webhook (offline notifications, protocol.md section 6); client_catchup (the JavaScript
client's reconnect and catch-up, in Node); cluster_publish, cluster_chat,
cluster_projector (Redis Cluster, section 9: each starts its own local cluster);
redis_memory (Redis bytes per event, by structure, for docs/capacity.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import redis

from adapters import logs
from bench.ceilings import ceilings
from bench.fig_capacity import redis_memory
from bench.fig_catchup import client_catchup
from bench.fig_chat import latency, throughput
from bench.fig_cluster import cluster_publish
from bench.fig_cluster_load import cluster_chat, cluster_projector
from bench.fig_handshake import handshakes
from bench.fig_history import history_read
from bench.fig_limits import hostile, limits_sends
from bench.fig_memory import deflate_memory, memory
from bench.fig_presence import presence_churn, presence_sends
from bench.fig_projector import freshness, projector_rate
from bench.fig_rebuild import rebuild
from bench.fig_search import search_read
from bench.fig_sync import sync
from bench.fig_tiers import archive_sync, idle_memory, retention
from bench.fig_webhook import webhook
from bench.harness import REDIS_URL, RESULTS, ROOT, Result, stop_all, table
from bench.options import SMOKE, Options, helps
from bench.pg_ceilings import pg_ceilings

FIGURES: dict[str, Callable[[Options], Awaitable[Result]]] = {
    "throughput": throughput, "latency": latency, "sync": sync, "memory": memory,
    "deflate_memory": deflate_memory,
    "ceilings": ceilings,
    # projector and history (Postgres)
    "projector": projector_rate, "freshness": freshness, "pg_ceilings": pg_ceilings,
    "history_read": history_read, "search_read": search_read, "rebuild": rebuild,
    # the two tiers: Redis hot, the Postgres archive cold (protocol.md section 7)
    "idle_memory": idle_memory, "archive_sync": archive_sync, "retention": retention,
    # presence (protocol.md section 5): watches beside the chat, connect/disconnect churn
    "presence_sends": presence_sends, "presence_churn": presence_churn,
    # offline notifications (protocol.md section 6)
    "webhook": webhook,
    # per-user limits (protocol.md section 8)
    "limits_sends": limits_sends, "hostile": hostile, "handshakes": handshakes,
    # the JavaScript client (clients/js): reconnect and catch-up, measured in Node
    "client_catchup": client_catchup,
    # Redis Cluster (protocol.md section 9): what the fan-out costs each master; the chat
    # and the projector on a 3-master cluster beside one Redis
    "cluster_publish": cluster_publish, "cluster_chat": cluster_chat,
    "cluster_projector": cluster_projector,
    # Redis memory per hot event, by structure (docs/capacity.md)
    "redis_memory": redis_memory,
}


def parse(argv: list[str] | None = None) -> tuple[Options, list[str], Path | None]:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=sorted(FIGURES),
                   help="run only this figure (repeatable)")
    p.add_argument("--smoke", action="store_true",
                   help="every figure at a tiny size, one run (scripts/test runs this)")
    p.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                   help="EXPERIMENT: extra gateway setting for the chat figures, e.g. "
                        "DUOLOGUE_REDIS_POOL=128 (repeatable)")
    p.add_argument("--json", type=Path, default=None,
                   help="write results here (default bench/results/<time>.json)")
    knobs, helped = [f for f in fields(Options) if f.name != "gateway_env"], helps()
    for f in knobs:
        flag = "--" + f.name.replace("_", "-")
        if isinstance(f.default, bool):
            p.add_argument(flag, action="store_true", default=None, help=helped.get(f.name))
        else:
            p.add_argument(flag, type=type(f.default), default=None, help=helped.get(f.name),
                           metavar=f.name.upper())
    a = p.parse_args(argv)
    given = {f.name: getattr(a, f.name) for f in knobs if getattr(a, f.name) is not None}
    opts = replace(SMOKE if a.smoke else Options(), **given,
                   gateway_env=tuple(_pair(item, p) for item in a.gateway_env))
    if opts.runs < 1:
        p.error("--runs must be >= 1")
    only = a.only or list(FIGURES)
    if opts.profile and not {"throughput", "hostile"} & set(only):
        only.append("throughput")
    return opts, [name for name in FIGURES if name in only], a.json


def _pair(item: str, p: argparse.ArgumentParser) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name.startswith("DUOLOGUE_"):
        p.error(f"--gateway-env wants DUOLOGUE_NAME=VALUE, got {item!r}")
    return name, value


def plain(value: Any) -> Any:
    """JSON-safe: infinities and NaN as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def machine() -> dict[str, object]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        version = client.info("server")["redis_version"]
    finally:
        client.close()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "redis": version, "gateway": _commit()}


def _commit() -> str:
    """The commit the gateway code is at, ``+changes`` if its files differ from it."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=10, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "gateway", "domain", "schemas", "duologue",
                "projector")
    return head + ("+changes" if dirty else "")


async def run_all(opts: Options, names: list[str]) -> dict[str, Result]:
    results: dict[str, Result] = {}
    for name in names:
        print(f"== {name}", flush=True)
        started = time.monotonic()
        results[name] = await FIGURES[name](opts)
        for row in results[name].rows:
            row.figure = name
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    # Ctrl-C and SIGTERM (even when started with SIGINT ignored, as background jobs are)
    # unwind through every run's clean-up: processes stopped, Redis keys deleted
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    opts, names, json_path = parse(argv)
    logs.configure("WARNING")  # no "migrated" line per fresh database in the output
    info = machine()
    print(f"machine: {info}; runs per figure: {opts.runs}", flush=True)
    if opts.experiment:
        print(f"EXPERIMENT: chat figures with gateway settings {opts.experiment}", flush=True)
    started = time.monotonic()
    try:
        results = asyncio.run(run_all(opts, names))
    except KeyboardInterrupt:
        print("interrupted: servers and workers stopped, run keys deleted", file=sys.stderr)
        return 130
    finally:
        stop_all()
    rows = [row for r in results.values() for row in r.rows]
    if any(not r.ceiling for r in rows):
        print()
        print(table([r for r in rows if not r.ceiling]))
    if any(r.ceiling for r in rows):
        print("\nceilings (same run):")
        print(table([r for r in rows if r.ceiling]))
    for name, result in results.items():
        for note in result.notes:
            print(f"\n[{name}] {note}")
    print(f"\ntotal {time.monotonic() - started:.0f} s")
    path = json_path or RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain({
        "machine": info, "options": asdict(opts),
        "figures": {name: {"rows": [vars(r) for r in res.rows], "runs": res.runs,
                           "notes": res.notes} for name, res in results.items()},
    }), indent=1, default=str))
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
