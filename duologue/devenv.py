"""Where ``duologue dev`` keeps its state, and how every ``duologue`` command finds it.

The state lives in ``.duologue/`` of the project root: the nearest directory at or above
the current one that holds ``.duologue/`` or ``pyproject.toml`` (else the current one).
While ``duologue dev`` runs, ``.duologue/env`` names its Redis and Postgres; every other
command reads it (and the dev secret) for the variables that are not set, so
``duologue status`` or ``duologue token alice`` work from any directory of the project.
``.duologue/dev.lock`` keeps a second ``duologue dev`` from starting on the same data, and
tells the other commands whether ``env`` is current: one left by a ``duologue dev`` that
was killed is not read. ``.duologue/redis.port`` keeps the embedded Redis on one port.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import IO

STATE = ".duologue"
ENV_FILE, SECRET_FILE, LOCK_FILE, PORT_FILE = "env", "secret", "dev.lock", "redis.port"


def project_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / STATE).is_dir() or (directory / "pyproject.toml").is_file():
            return directory
    return here


def state_dir(start: Path | None = None) -> Path:
    return project_root(start) / STATE


def load_into(environ: MutableMapping[str, str], start: Path | None = None,
              secret_file: bool = True) -> None:
    """Fill unset variables from ``.duologue/env`` (while its ``duologue dev`` runs) and,
    with ``secret_file``, the dev secret."""
    state = state_dir(start)
    found = read_env(state / ENV_FILE) if running(state) else {}
    for name, value in found.items():
        if not environ.get(name):
            environ[name] = value
    secret = state / SECRET_FILE
    if secret_file and not environ.get("DUOLOGUE_SECRET") and secret.is_file():
        environ["DUOLOGUE_SECRET"] = secret.read_text().strip()


def read_env(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() and not name.startswith("#"):
            found[name.strip()] = value.strip()
    return found


def write_env(state: Path, values: dict[str, str]) -> None:
    text = "# written by `duologue dev` while it runs; read by every duologue command\n"
    (state / ENV_FILE).write_text(text + "".join(f"{k}={v}\n" for k, v in values.items()))


def remove_env(state: Path) -> None:
    (state / ENV_FILE).unlink(missing_ok=True)


def remembered_port(state: Path, default: int) -> int:
    """The port the last ``duologue dev`` of this project gave its Redis."""
    try:
        port = int((state / PORT_FILE).read_text())
    except (OSError, ValueError):
        return default
    return port if 0 < port < 65536 else default


def remember_port(state: Path, port: int) -> None:
    (state / PORT_FILE).write_text(f"{port}\n")


class AlreadyRunningError(Exception):
    """Another ``duologue dev`` holds this project's state."""


def lock(state: Path) -> IO[str]:
    """Hold ``.duologue/dev.lock`` for this process's life (released when it exits)."""
    state.mkdir(parents=True, exist_ok=True)
    handle = (state / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise AlreadyRunningError(
            f"`duologue dev` is already running for {state.parent} (pid {pid}); "
            "stop it first, or use its URLs (see .duologue/env)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def running(state: Path) -> bool:
    """Whether a ``duologue dev`` holds this project's lock (without taking it)."""
    try:
        handle = (state / LOCK_FILE).open()
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False  # closing the file let the shared lock go


def missing_hint(name: str, start: Path | None = None) -> str:
    """What to do about a variable that is not set, said after the error."""
    state = state_dir(start)
    if name == "DUOLOGUE_SECRET":
        return (f", and there is no {state / SECRET_FILE}: `duologue dev` makes one, "
                "or export DUOLOGUE_SECRET")
    if name in ("REDIS_URL", "DATABASE_URL") and not running(state):
        return (f", and no `duologue dev` is running for {state.parent}: start one "
                f"(scripts/dev), or export {name}")
    return ""
