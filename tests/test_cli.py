"""The command line and `duologue dev`, run as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import jwt
import pytest
import websockets

from duologue.embedded import free_port
from tests.support import ROOT, SECRET, Client, token, uid


def duologue(*args: str, cwd=ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_SECRET")}
    return subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=cwd,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_token_prints_a_jwt_for_the_user(tmp_path):
    done = duologue("token", "alice", "--ttl", "120", cwd=tmp_path, DUOLOGUE_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and abs(claims["exp"] - time.time() - 120) < 5


def test_cli_refuses_clearly_without_configuration(tmp_path):
    done = duologue("token", "alice", cwd=tmp_path)
    assert done.returncode == 2 and "DUOLOGUE_SECRET is not set" in done.stderr
    done = duologue("gateway", cwd=tmp_path, DUOLOGUE_SECRET=SECRET)
    assert done.returncode == 2 and "REDIS_URL is not set" in done.stderr
    done = duologue("token", "not a user", cwd=tmp_path, DUOLOGUE_SECRET=SECRET)
    assert done.returncode != 0 and "not a valid user id" in done.stderr
    done = duologue("gateway", cwd=tmp_path, DUOLOGUE_SECRET=SECRET, REDIS_URL="redis://x",
                    DUOLOGUE_RATE="fast")
    assert done.returncode == 2 and "DUOLOGUE_RATE must be a number" in done.stderr


def test_tokens_never_reach_the_logs(start_gateway):
    gateway = start_gateway()
    good, bad = token(uid("a")), token(uid("b"), secret="another-secret-" + "y" * 32)

    async def touch() -> None:
        async with websockets.connect(f"{gateway.ws_url}?token={good}") as ws:
            await ws.recv()
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"{gateway.ws_url}?token={bad}")
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(gateway.ws_url,
                                     additional_headers={"Authorization": f"Bearer {bad}"})

    import asyncio

    asyncio.run(touch())
    time.sleep(0.3)
    log = gateway.log()
    assert '"ws_closed"' in log and '"ws_refused"' in log
    for secret_part in (good, bad, good.split(".")[2], bad.split(".")[2]):
        assert secret_part not in log


def test_dev_runs_everything_with_no_setup(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_SECRET")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "duologue.cli", "dev", "--port", str(port)], cwd=tmp_path,
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("".join(lines) + proc.stderr.read())
            lines.append(proc.stdout.readline())
        tokens = dict(re.findall(r"^  (\w+): http://\S+/#token=(\S+)$", "".join(lines), re.M))
        assert set(tokens) == {"alice", "bob"}
        assert "<title>Duologue demo</title>" in httpx.get(f"http://127.0.0.1:{port}/").text
        later = duologue("token", "carol", cwd=tmp_path)  # the dev secret is on disk
        assert later.returncode == 0

        async def chat() -> None:
            url = f"ws://127.0.0.1:{port}/v1/ws"
            alice = Client(await websockets.connect(f"{url}?token={tokens['alice']}"), "alice")
            await alice.next("hello")
            carol = Client(await websockets.connect(
                f"{url}?token={later.stdout.strip()}"), "carol")
            await carol.next("hello")
            ack = await alice.say("carol", "hi from dev")
            assert (await carol.next("event", id=ack["id"]))["event"]["body"] == "hi from dev"
            await alice.close()
            await carol.close()

        import asyncio

        asyncio.run(chat())
        # the projector runs too: the message reaches the Postgres history
        history = f"http://127.0.0.1:{port}/v1/threads/dm:alice:carol/messages"
        deadline = time.monotonic() + 20
        while True:
            page = httpx.get(history, headers={"Authorization": f"Bearer {tokens['alice']}"})
            bodies = [m["body"] for m in page.json().get("messages", [])]
            if page.status_code == 200 and bodies == ["hi from dev"]:
                break
            assert time.monotonic() < deadline, page.text
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
        assert (tmp_path / ".duologue" / "redis").is_dir()
        assert (tmp_path / ".duologue" / "postgres").is_dir()
        # the operator block, and the file every other command reads meanwhile
        text = "".join(lines)
        assert "export REDIS_URL=" in text and "psql '" in text and "duologue_analyst" in text
        written = (tmp_path / ".duologue" / "env").read_text()
        assert "REDIS_URL=redis://127.0.0.1:" in written and "DATABASE_URL=" in written
        status = duologue("status", "--json", cwd=tmp_path / ".duologue")  # from a subdirectory
        assert status.returncode == 0, status.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    redis_port = int(re.search(r'"url": "redis://127.0.0.1:(\d+)/0"', err)[1])
    assert proc.returncode == 128 + signal.SIGTERM
    time.sleep(0.5)
    with pytest.raises(OSError):  # the embedded Redis went away with it
        __import__("socket").create_connection(("127.0.0.1", redis_port), timeout=0.5)
    events = [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "embedded_postgres" in events
    # one line per thing a person needs: no line per partition, no alarming retries
    assert not {"partition_taken", "partition_released", "projector_retry"} & set(events), err
    assert not (tmp_path / ".duologue" / "env").exists()  # gone with the system
