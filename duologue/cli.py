"""The ``duologue`` command line."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence

import structlog

from adapters import logs
from adapters.settings import DEV_DIR, DEV_SECRET, Settings, SettingsError

log = structlog.get_logger("duologue.cli")


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.runner import serve

    serve(Settings.from_env().require("redis_url", "secret"), args.host, args.port)
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

    if not os.environ.get("DUOLOGUE_SECRET") and not DEV_SECRET.exists():
        DEV_DIR.mkdir(exist_ok=True)
        DEV_SECRET.write_text(secrets.token_urlsafe(32))
        DEV_SECRET.chmod(0o600)
    return run_dev(args.host, args.port)


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
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"duologue: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
