"""The first fifteen minutes of a new user: the command line finds the dev system from
any directory, refuses a second `duologue dev` before starting anything, keeps the dev
Redis port across quick restarts, and says one readable line when a service is away."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.settings import Settings
from duologue import devenv
from duologue.dev import analyst_conninfo, banner
from duologue.embedded import free_port
from tests.support import SECRET, uid


def duologue(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_SECRET", "COLUMNS")}
    return subprocess.run([sys.executable, "-m", "duologue.cli", *args], cwd=cwd,
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def a_project(tmp_path: Path) -> tuple[Path, Path]:
    """A project root (it has pyproject.toml) with a subdirectory to work from."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'app'\n")
    deep = tmp_path / "docs" / "notes"
    deep.mkdir(parents=True)
    return tmp_path, deep


def test_token_finds_the_dev_secret_from_a_subdirectory(tmp_path):
    root, deep = a_project(tmp_path)
    (root / ".duologue").mkdir()
    (root / ".duologue" / "secret").write_text(SECRET)
    done = duologue("token", "alice", cwd=deep)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(".") == 2  # a JWT
    elsewhere = duologue("token", "alice", cwd=tmp_path.parent)  # outside the project
    assert elsewhere.returncode == 2 and "DUOLOGUE_SECRET" in elsewhere.stderr
    assert "`duologue dev` makes one, or export DUOLOGUE_SECRET" in elsewhere.stderr


def test_operator_commands_read_the_running_dev_system_from_any_directory(
        tmp_path, redis_url, fresh_database, prefix):
    root, deep = a_project(tmp_path)
    state = root / ".duologue"
    held = devenv.lock(state)  # as the running `duologue dev` holds it
    devenv.write_env(state, {"REDIS_URL": redis_url, "DATABASE_URL": fresh_database})
    done = duologue("migrate", cwd=deep)
    assert done.returncode == 0, done.stderr
    done = duologue("status", "--json", cwd=deep, DUOLOGUE_PREFIX=prefix)
    assert done.returncode == 0, done.stderr
    assert '"partitions"' in done.stdout
    # set variables win over the file
    done = duologue("status", cwd=deep, REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 1
    assert done.stderr.strip() == ("duologue: cannot reach Redis at redis://127.0.0.1:1/0: "
                                   "Error 111 connecting to 127.0.0.1:1. Connection refused.")
    held.close()
    # the `duologue dev` that wrote the file is gone (killed: it could not remove it)
    done = duologue("status", cwd=deep)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"duologue: REDIS_URL is not set, and no `duologue dev` is running for {root}: "
        "start one (scripts/dev), or export REDIS_URL")


def test_only_a_running_dev_makes_its_env_file_current(tmp_path):
    state = tmp_path / ".duologue"
    state.mkdir()
    devenv.write_env(state, {"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert not devenv.running(state)
    environ: dict[str, str] = {}
    devenv.load_into(environ, tmp_path)
    assert environ == {}
    with devenv.lock(state):
        assert devenv.running(state)
        devenv.load_into(environ, tmp_path)
        assert environ == {"REDIS_URL": "redis://127.0.0.1:1/0"}
        environ["REDIS_URL"] = "redis://elsewhere:6379/0"  # a set variable wins
        devenv.load_into(environ, tmp_path)
        assert environ == {"REDIS_URL": "redis://elsewhere:6379/0"}
    assert not devenv.running(state)


def test_an_unreachable_service_is_one_line_naming_the_url_without_its_password(
        tmp_path, redis_url, fresh_database):
    for command in ("status", "verify", "replay --thread dm:a:b"):
        done = duologue(*command.split(), cwd=tmp_path, REDIS_URL=redis_url,
                        DATABASE_URL="postgresql://postgres:hunter2@127.0.0.1:1/x")
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.startswith(
            "duologue: cannot reach Postgres at postgresql://postgres:***@127.0.0.1:1/x: ")
        assert len(done.stderr.strip().splitlines()) == 1 and "hunter2" not in done.stderr
        done = duologue(*command.split(), cwd=tmp_path, DATABASE_URL=fresh_database,
                        REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
        if command == "status":
            assert duologue("migrate", cwd=tmp_path, DATABASE_URL=fresh_database).returncode == 0
            done = duologue(*command.split(), cwd=tmp_path, DATABASE_URL=fresh_database,
                            REDIS_URL="redis://:hunter2@127.0.0.1:1/0")
        assert done.returncode == 1, (command, done.stderr)
        assert done.stderr.startswith("duologue: cannot reach Redis at redis://:***@127.0.0.1:1/0")
        assert len(done.stderr.strip().splitlines()) == 1 and "hunter2" not in done.stderr


def test_a_second_dev_refuses_before_starting_anything(tmp_path):
    state = tmp_path / ".duologue"
    with devenv.lock(state):
        done = duologue("dev", "--port", str(free_port()), cwd=tmp_path)
    assert done.returncode == 1
    assert "already running" in done.stderr and str(os.getpid()) in done.stderr
    assert not (state / "redis").exists() and not (state / "postgres").exists()
    with devenv.lock(state):  # released when its holder let go
        pass


def test_the_dev_redis_port_survives_sockets_in_time_wait():
    from duologue.dev import _port_or_free

    port = free_port()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the side that closes first keeps the port in TIME_WAIT
    time.sleep(0.05)
    client.close()
    server.close()
    assert _port_or_free(port) == port
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        assert _port_or_free(busy.getsockname()[1]) != busy.getsockname()[1]
    finally:
        busy.close()


def test_the_banner_ends_with_the_operator_and_analyst_lines():
    url = "postgresql://postgres:pw@127.0.0.1:5432/duo"
    settings = Settings(redis_url="redis://127.0.0.1:6390/0", database_url=url, secret=SECRET)
    text = banner(settings, "127.0.0.1", 8000)
    assert "  export REDIS_URL='redis://127.0.0.1:6390/0'" in text
    assert f"  export DATABASE_URL='{url}'" in text
    analyst = analyst_conninfo(url)
    assert f"  psql '{analyst}'" in text
    assert "user=duologue_analyst" in analyst and "pw" not in analyst
    assert text.rstrip().endswith("Ctrl-C stops everything.")


def test_a_reversed_thread_id_gets_the_sorted_one_as_a_hint(tmp_path, redis_url,
                                                            fresh_database):
    a, b = sorted((uid("a"), uid("b")))
    done = duologue("replay", "--thread", f"dm:{b}:{a}", cwd=tmp_path, REDIS_URL=redis_url,
                    DATABASE_URL=fresh_database)
    assert done.returncode == 2
    assert f"sorted: 'dm:{a}:{b}'" in done.stderr


def test_rebuild_ends_with_every_phase_complete(tmp_path, fresh_database):
    assert duologue("migrate", cwd=tmp_path, DATABASE_URL=fresh_database).returncode == 0
    done = duologue("rebuild", cwd=tmp_path, DATABASE_URL=fresh_database)
    assert done.returncode == 0, done.stderr
    assert "swapped in" in done.stdout
    assert "/?" not in done.stderr, done.stderr  # no phase left at "0/?"
    assert "swap" in done.stderr


def test_dev_refuses_a_port_in_use_before_starting_anything(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = duologue("dev", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"duologue dev: 127.0.0.1:{port} is in use by another "
                                   "program: stop it, or pass --port")
    assert not (tmp_path / ".duologue" / "redis").exists()
    assert not (tmp_path / ".duologue" / "postgres").exists()


def _interactive_sigint() -> None:
    """SIGINT as a terminal delivers it: a suite started in the background (``cmd &``)
    has it ignored, and the child would inherit that and never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_dev(root: Path) -> tuple[str, str]:
    """``duologue dev`` until its banner, then Ctrl-C: (stdout, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "duologue.cli", "dev", "--port", str(free_port())], cwd=root,
        env={k: v for k, v in os.environ.items()
             if k not in ("REDIS_URL", "DATABASE_URL", "DUOLOGUE_SECRET")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=_interactive_sigint)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not lines or "Ctrl-C stops everything" not in lines[-1]:
            assert proc.poll() is None and time.monotonic() < deadline, (
                "".join(lines) + proc.stderr.read())  # type: ignore[union-attr]
            lines.append(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and '"dev_stopped"' in err, err  # as Ctrl-C ends a program
    return "".join(lines), err


def test_a_quick_restart_keeps_the_redis_port_it_remembered(tmp_path):
    remembered = free_port()  # not 6390: the port comes from .duologue/redis.port
    (tmp_path / ".duologue").mkdir()
    (tmp_path / ".duologue" / "redis.port").write_text(f"{remembered}\n")
    url = f"export REDIS_URL='redis://127.0.0.1:{remembered}/0'"
    first, _ = run_dev(tmp_path)
    assert url in first
    # Redis closed its clients' connections as it stopped: its port has sockets in
    # TIME_WAIT now, and the next start takes the same port all the same
    second, _ = run_dev(tmp_path)
    assert url in second
    assert (tmp_path / ".duologue" / "redis.port").read_text().strip() == str(remembered)
    assert not (tmp_path / ".duologue" / "env").exists()


def test_status_fits_80_columns_without_cutting_an_id():
    from rich.console import Console

    from duologue.ops_commands import status_tables
    from projector.status import PartitionStatus, Status

    names = ["duologue-projector-7d9f8b-x2k4q:17442:7043f3", "vm:17443:a1b2c3"]
    found = Status(
        [PartitionStatus(6, "s", "1796478925744-0", 1, 0, 0.0, 0, 0, names[1], 1, 5734),
         PartitionStatus(28, "s", "1796478925744-13", 123456, 12345, 10.4, 12345, 3, names[0],
                         1000, 1048000),
         PartitionStatus(63, "s", "0", 0, 0, 0.0, 0, 0, None, 0, 0)],
        [{"name": name, "pid": 1, "host": "h", "alive": True, "heartbeat_age_s": 0.4,
          "partitions": 32} for name in names],
        {"stream_threads": 2, "pending": 12345})
    console = Console(width=80, record=True, file=io.StringIO())
    for table in status_tables(found):
        console.print(table)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for whole in ("1796478925744-0", "1796478925744-13", *names):
        assert whole in text, text
    rows = [line.split("│") for line in text.split("Workers")[0].splitlines() if "│" in line]
    assert [r[5].strip() for r in rows if r[0].strip().isdigit()] == ["#2", "#1"]  # owners


def test_a_reader_that_leaves_early_gets_no_traceback():
    read, write = os.pipe()
    os.close(read)  # `duologue token alice | head -c0`
    try:
        done = subprocess.run([sys.executable, "-m", "duologue.cli", "token", "alice"],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=60,
                              env={**os.environ, "DUOLOGUE_SECRET": SECRET})
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == ""


def test_the_banner_says_where_duologue_is_when_the_shell_would_not_find_it(monkeypatch):
    settings = Settings(redis_url="redis://127.0.0.1:6390/0",
                        database_url="postgresql://postgres@127.0.0.1:5432/duo", secret=SECRET)
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "duologue").exists():
        pytest.skip(f"no duologue script beside {sys.executable}")
    monkeypatch.chdir(bin_dir.parent.parent)  # the project root, for .venv
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    text = banner(settings, "127.0.0.1", 8000)
    assert f"`duologue` is {bin_dir.parent.name}/bin/duologue" in text
    assert "/activate` puts it on your PATH" in text
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    assert "puts it on your PATH" not in banner(settings, "127.0.0.1", 8000)
