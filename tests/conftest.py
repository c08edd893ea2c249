"""Fixtures: real Redis (127.0.0.1:6379, else an embedded one), one key prefix per run.

``DUOLOGUE_TEST_REDIS=cluster``: the whole suite runs against a local Redis Cluster of
3 masters (``duologue/local_cluster.py``, Redis 7+ on PATH) instead; tests that need one
Redis server of their own to stop or disturb (``private_redis``, marker ``single_redis``)
are skipped then.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.postgres import migrate
from adapters.record import Keys
from adapters.redis_connect import AsyncRedis, SyncRedis, async_redis, scan_keys, sync_redis
from duologue.embedded import EmbeddedRedis, answers, start_postgres
from duologue.local_cluster import LocalCluster, LocalClusterError, require_redis_7
from tests.contract_support import check_http_answers, take_mismatches
from tests.faults_support import PrivatePostgres, private_postgres_server
from tests.projection_support import PARTITIONS, Fleet, projector_env
from tests.support import Client, GatewayProcess

RUN_PREFIX = f"dltest{uuid.uuid4().hex[:8]}"
check_http_answers()  # every httpx answer of a documented path, against /openapi.json

TEST_REDIS = os.environ.get("DUOLOGUE_TEST_REDIS", "")
CLUSTER_RUN = TEST_REDIS == "cluster"
SINGLE_REDIS_ONLY = ("needs one Redis server it can stop, restart or disturb "
                     "(single_redis): not on a cluster run (DUOLOGUE_TEST_REDIS=cluster)")


def pytest_configure(config: pytest.Config) -> None:
    if TEST_REDIS not in ("", "cluster"):
        raise pytest.UsageError(
            f"DUOLOGUE_TEST_REDIS={TEST_REDIS!r}: leave it unset, or set it to 'cluster'")
    if CLUSTER_RUN:
        try:
            require_redis_7()
        except LocalClusterError as error:
            raise pytest.UsageError(f"DUOLOGUE_TEST_REDIS=cluster: {error}") from None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The one place that keeps single-server tests off a cluster run: those marked
    ``single_redis`` and those using the ``private_redis`` fixture (even indirectly)."""
    if not CLUSTER_RUN:
        return
    skip = pytest.mark.skip(reason=SINGLE_REDIS_ONLY)
    for item in items:
        if item.get_closest_marker("single_redis") is not None or \
                "private_redis" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def contract_mismatches() -> Iterator[None]:
    """Fail a test that received a frame or an HTTP answer its contract does not describe
    (tests/contract_support.py)."""
    take_mismatches()
    yield
    found = take_mismatches()
    assert not found, "answers that /asyncapi.json or /openapi.json do not describe:\n" + \
        "\n".join(found[:20])



@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A local Redis Cluster of 3 masters with DUOLOGUE_TEST_REDIS=cluster; else Redis at
    127.0.0.1:6379 when it answers, else an embedded one. This run's keys go at the end."""
    embedded: EmbeddedRedis | None = None
    cluster: LocalCluster | None = None
    if CLUSTER_RUN:
        cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"), masters_count=3)
        url = cluster.start().url
    elif answers(6379):
        url = "redis://127.0.0.1:6379/0"
    else:
        embedded = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
        url = embedded.url
    yield url
    client = sync_redis(url)
    try:
        for key in scan_keys(client, f"{RUN_PREFIX}*"):  # every primary of a cluster
            client.delete(key)
    finally:
        client.close()
    if embedded is not None:
        embedded.stop()
    if cluster is not None:
        cluster.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database of this run's own, migrated; dropped at the end.

    PostgreSQL at 127.0.0.1:5432 (user postgres, trust) when it answers, else pgserver.
    """
    server: object | None = None
    if answers(5432):
        admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    else:
        server, admin = start_postgres(tmp_path_factory.mktemp("postgres"))
    global _ADMIN_URL
    _ADMIN_URL = admin
    url = _create_database(admin, RUN_PREFIX)
    yield url
    _drop_database(admin, RUN_PREFIX)
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]


_ADMIN_URL = ""


def _create_database(admin: str, name: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    migrate(url)
    return url


def _drop_database(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A migrated database of this test's own (for verify, rebuild, status), then dropped."""
    name = f"{RUN_PREFIX}_{uuid.uuid4().hex[:8]}"
    url = _create_database(_ADMIN_URL, name)
    yield url
    _drop_database(_ADMIN_URL, name)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def prefix() -> str:
    """A key prefix of its own for one test (all under this run's prefix)."""
    return f"{RUN_PREFIX}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def start_gateway(
    redis_url: str, log_dir: Path, prefix: str
) -> Iterator[Callable[..., GatewayProcess]]:
    """Start gateway processes sharing this test's prefix; stopped at teardown."""
    started: list[GatewayProcess] = []

    def start(**env: str) -> GatewayProcess:
        base = {"REDIS_URL": redis_url, "DUOLOGUE_PREFIX": prefix, **LIMITS_OFF}
        gateway = GatewayProcess({**base, **env}).start(log_dir)
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.terminate()


# protocol.md section 8's per-user limits, off in the gateways tests start unless a test
# turns one on (tests/test_limits.py tests each): a test's bursts are not an attack
LIMITS_OFF = {"DUOLOGUE_RATE": "0", "DUOLOGUE_RATE_BYTES": "0", "DUOLOGUE_READ_RATE": "0",
              "DUOLOGUE_TYPING_EVERY": "0", "DUOLOGUE_MAX_SOCKETS": "0"}


@pytest.fixture(scope="session")
def shared_gateway(redis_url: str, log_dir: Path) -> Iterator[GatewayProcess]:
    """One gateway for tests that need no special settings (random user ids keep apart)."""
    env = {"REDIS_URL": redis_url, "DUOLOGUE_PREFIX": f"{RUN_PREFIX}-shared", **LIMITS_OFF}
    gateway = GatewayProcess(env).start(log_dir)
    yield gateway
    gateway.terminate()


@pytest.fixture
def keys() -> Keys:
    return Keys(f"{RUN_PREFIX}-shared", 64)


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[AsyncRedis]:
    """An asyncio client: a cluster client on a cluster run."""
    client = async_redis(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server of this test's own, to stop, restart or disturb (a test using it is
    skipped on a cluster run: ``pytest_collection_modifyitems``)."""
    server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    yield server
    server.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A Postgres server of this test's own (migrated), to stop and start again."""
    with private_postgres_server() as server:
        yield server


@pytest.fixture
def db(fresh_database: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to this test's own database."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        yield conn


@pytest.fixture
def rclient(redis_url: str) -> Iterator[SyncRedis]:
    """A synchronous Redis client: a cluster client on a cluster run."""
    client = sync_redis(redis_url)
    yield client
    client.close()


@pytest.fixture
def pkeys(prefix: str) -> Keys:
    """Key names for this test's prefix with the projector tests' partition count."""
    return Keys(prefix, PARTITIONS)


@pytest.fixture
def fleet(redis_url: str, fresh_database: str, prefix: str, log_dir: Path) -> Iterator[Fleet]:
    """Projector processes against this test's prefix and database, killed at teardown."""
    fleet = Fleet(projector_env(redis_url, fresh_database, prefix), log_dir)
    yield fleet
    fleet.stop_all()


@pytest.fixture
def gateway(start_gateway: Callable[..., GatewayProcess]) -> GatewayProcess:
    """A gateway with the projector tests' partition count."""
    return start_gateway(DUOLOGUE_PARTITIONS=str(PARTITIONS))


@pytest.fixture(scope="session")
def admin_url(database_url: str) -> str:
    """The server's maintenance database (CREATE DATABASE rights), embedded or not."""
    return _ADMIN_URL


# -- the operators' commands (tests/ops_support.py) ----------------------------------
@pytest.fixture
def ops_env(redis_url: str, fresh_database: str, prefix: str) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "DATABASE_URL": fresh_database, "DUOLOGUE_PREFIX": prefix,
            "DUOLOGUE_PARTITIONS": str(PARTITIONS)}


@pytest.fixture
def ops_keys(prefix: str) -> Keys:
    return Keys(prefix, PARTITIONS)


Connect = Callable[..., Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(url, user, **kw)``: a WebSocket client closed at teardown."""
    opened: list[Client] = []

    async def _connect(url: str, user: str, **kw: object) -> Client:
        client = await Client.connect(url, user, **kw)  # type: ignore[arg-type]
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        await client.close()
