"""Every benchmark figure at a tiny size (``python -m bench --smoke``), so that none can
rot unnoticed. The numbers mean nothing here; each figure must run to its rows without
an error, and leave no key, database or process behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import psycopg
import pytest

from adapters.redis_connect import scan_keys, sync_redis
from tests.support import ROOT


def _bench_keys(redis_url: str) -> set[bytes]:
    client = sync_redis(redis_url)
    try:
        return set(scan_keys(client, "dlbench-*"))  # every primary of a cluster
    finally:
        client.close()


def _bench_databases(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
        return {row[0] for row in rows.fetchall()}


@pytest.mark.single_redis  # bench/ drives one Redis (cluster_publish starts its own cluster)
@pytest.mark.timeout(600)  # every figure, each its own gateway and services: the run's bound
def test_every_figure_runs_at_a_tiny_size(tmp_path, redis_url, admin_url):
    keys_before, databases_before = _bench_keys(redis_url), _bench_databases(admin_url)
    out = tmp_path / "smoke.json"
    env = {**os.environ, "DLBENCH_REDIS_URL": redis_url, "DLBENCH_POSTGRES_URL": admin_url}
    args = [sys.executable, "-m", "bench", "--smoke", "--json", str(out)]
    if shutil.which("redis-benchmark") is None:  # its ceilings need the real tool
        args += [f"--only={name}" for name in _figures() if name != "ceilings"]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())["figures"]
    assert set(figures) >= set(_figures()) - {"ceilings"}
    for name, figure in figures.items():
        assert figure["rows"], name
        failed = [run["error"] for run in figure["runs"]
                  if isinstance(run, dict) and run.get("error")]
        assert not failed, (name, failed)
        assert not [n for n in figure["notes"] if "failed" in n], (name, figure["notes"])
    (deflate,) = figures["deflate_memory"]["runs"]  # each case negotiated what it claims
    offered = {label: case["negotiated"] for label, case in deflate["cases"].items()}
    assert offered.pop("not offered") == offered.pop("offered, server off") == 0, offered
    assert set(offered.values()) == {json.loads(out.read_text())["options"]["deflate_idle"]}
    assert _bench_keys(redis_url) - keys_before == set()  # (a bench running beside is fine)
    assert _bench_databases(admin_url) - databases_before == set()


def _figures() -> list[str]:
    from bench.__main__ import FIGURES

    return list(FIGURES)
