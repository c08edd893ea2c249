"""Operations endpoints without a token: /healthz, /readyz, /metrics (protocol.md section 3)."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from adapters.settings import Settings
from duologue.embedded import free_port
from gateway.app import create_app
from tests.http_support import auth, http
from tests.support import Client, thread_of, uid


async def readiness(gateway) -> httpx.Response:
    async with http(gateway) as client:
        return await client.get("/readyz")


async def test_ready_when_redis_and_postgres_answer(start_gateway, database_url):
    gateway = start_gateway(DATABASE_URL=database_url)
    answer = await readiness(gateway)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"redis": "ok", "postgres": "ok"}
    async with http(gateway) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_not_ready_names_postgres_when_it_is_down_or_not_configured(start_gateway):
    down = start_gateway(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    started = time.monotonic()
    answer = await readiness(down)
    assert time.monotonic() - started < 3  # each probe has a 1 s budget
    assert answer.status_code == 503
    assert answer.json() == {"redis": "ok", "postgres": "unavailable"}
    unset = start_gateway()
    answer = await readiness(unset)
    assert answer.status_code == 503
    assert answer.json() == {"redis": "ok", "postgres": "not configured"}


async def test_not_ready_names_redis_while_it_is_down(start_gateway, private_redis, database_url):
    gateway = start_gateway(REDIS_URL=private_redis.url, DATABASE_URL=database_url)
    assert (await readiness(gateway)).status_code == 200
    private_redis.stop()
    answer = await readiness(gateway)
    assert answer.status_code == 503
    assert answer.json() == {"redis": "unavailable", "postgres": "ok"}
    private_redis.start()
    deadline = time.monotonic() + 10
    while (answer := await readiness(gateway)).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        await asyncio.sleep(0.1)


async def test_not_ready_when_redis_was_never_reachable(start_gateway):
    gateway = start_gateway(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    answer = await readiness(gateway)
    assert answer.status_code == 503
    assert answer.json() == {"redis": "unavailable", "postgres": "not configured"}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped, name, **labels) -> float | None:
    return scraped.get((name, frozenset(labels.items())))


async def scrape(client: httpx.AsyncClient) -> dict:
    answer = await client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return samples(answer.text)


async def test_metrics_count_requests_connections_commands_and_appends(
        start_gateway, database_url):
    gateway = start_gateway(DATABASE_URL=database_url)
    alice, bob = uid("a"), uid("b")
    path = f"/v1/threads/{thread_of(alice, bob)}/messages"
    async with http(gateway) as client:
        assert (await client.get("/v1/threads", headers=auth(alice))).status_code == 200
        assert (await client.get("/v1/threads")).status_code == 401
        for _ in range(2):  # the second is a duplicate: it still runs the append script
            answer = await client.post(path, headers=auth(alice),
                                       json={"body": "x", "client_msg_id": "m-1"})
            assert answer.status_code == 201
        assert (await client.get(f"/v1/no/such/{uid()}")).status_code == 404
        ws = await Client.connect(gateway.ws_url, alice)
        assert (await ws.say(bob, "over ws"))["type"] == "ack"
        await ws.ws.send("not json")
        assert (await ws.next("error"))["code"] == "bad_frame"
        scraped = await scrape(client)
        assert value(scraped, "duologue_ws_connections") == 1
        await ws.close()
        deadline = time.monotonic() + 5
        while value(await scrape(client), "duologue_ws_connections") != 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

    requests = "duologue_http_requests_total"
    assert value(scraped, requests, route="/v1/threads", method="GET", status="200") == 1
    assert value(scraped, requests, route="/v1/threads", method="GET", status="401") == 1
    assert value(scraped, requests, route="/v1/threads/{thread}/messages", method="POST",
                 status="201") == 2
    assert value(scraped, requests, route="unmatched", method="GET", status="404") == 1
    assert value(scraped, "duologue_http_request_duration_seconds_count",
                 route="/v1/threads", method="GET") == 2
    assert value(scraped, "duologue_commands_total", type="send", result="ok") == 3
    assert value(scraped, "duologue_commands_total", type="unparsed", result="bad_frame") == 1
    assert value(scraped, "duologue_append_duration_seconds_count") == 3
    assert value(scraped, "duologue_append_duration_seconds_sum") > 0


async def test_metrics_speak_openmetrics_when_asked(start_gateway):
    gateway = start_gateway()
    async with http(gateway) as client:
        answer = await client.get(
            "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")


def test_two_apps_in_one_process_have_registries_of_their_own():
    settings = Settings(redis_url="redis://127.0.0.1:1/0", secret="s" * 40)
    first, second = create_app(settings), create_app(settings)
    assert first.state.metrics.registry is not second.state.metrics.registry
    first.state.metrics.command("send", "ok")
    assert b'type="send"' in first.state.metrics.render(None)[0]
    assert b'type="send"' not in second.state.metrics.render(None)[0]
