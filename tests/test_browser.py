"""The demo page in headless Chromium: live chat, offline/online catch-up, reload.

Two browser contexts (separate storage), one per user, against the shared gateway.
Plain sync tests with Playwright's sync API: pytest-asyncio gives them no event loop.
Needs a system Chromium (Debian: ``apt-get install chromium``); skipped without one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import GatewayProcess, thread_of, token, uid

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000
SCREENSHOT = "/tmp/duologue-demo.png"


def _chromium() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    if executable is None:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class User:
    """One user's page, with every event frame its WebSockets received."""

    name: str
    page: Any
    sockets: list[list[dict[str, Any]]] = field(default_factory=list)

    def event_ids(self, socket: int = -1) -> list[str]:
        """Ids of the `event` frames received on one socket (default: the newest), read
        receipts left out: the page sends one whenever a thread is on screen."""
        return [f["id"] for f in self.sockets[socket]
                if f.get("type") == "event" and f["event"]["kind"] != "ReadUpTo"]

    def bodies(self, text: str) -> Any:
        """The rendered messages whose body is exactly ``text``."""
        return self.page.locator("#log .msg").filter(
            has=self.page.locator(".body", has_text=_exactly(text)))

    def count(self, text: str) -> int:
        return int(self.page.evaluate(
            "(t) => [...document.querySelectorAll('#log .msg .body')]"
            ".filter((e) => e.textContent === t).length", text))

    def log(self) -> list[tuple[str, str]]:
        return [tuple(pair) for pair in self.page.evaluate(
            "() => [...document.querySelectorAll('#log .msg')]"
            ".map((m) => [m.querySelector('.who').textContent,"
            " m.querySelector('.body').textContent])")]

    def open_thread(self, peer: str) -> None:
        self.page.fill("#peer", peer)
        self.page.dispatch_event("#peer", "change")

    def send(self, text: str) -> None:
        self.page.fill("#body", text)
        self.page.click("#send")

    def wait_status(self, status: str) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#status")).to_have_text(status)


def _exactly(text: str) -> Any:
    import re

    return re.compile("^" + re.escape(text) + "$")


@pytest.fixture
def open_page(browser: Any, shared_gateway: GatewayProcess) -> Iterator[Any]:
    contexts: list[Any] = []

    def open_page(name: str) -> User:
        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        user = User(uid(name), page)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def on_socket(ws: Any) -> None:
            frames: list[dict[str, Any]] = []
            user.sockets.append(frames)
            ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))

        page.on("websocket", on_socket)
        page.goto(f"{shared_gateway.http_url}/#token={token(user.name)}")
        user.wait_status("online")
        assert errors == [], errors
        return user

    yield open_page
    for context in contexts:
        context.close()


def _converse(alice: User, bob: User) -> tuple[str, str]:
    """Alice opens the thread and writes; bob sees it live, selects it and replies."""
    from playwright.sync_api import expect

    thread = thread_of(alice.name, bob.name)
    first, reply = f"hello bob {uuid.uuid4().hex[:6]}", f"hi alice {uuid.uuid4().hex[:6]}"
    alice.open_thread(bob.name)
    expect(alice.page.locator(f'#threads li.active[data-thread="{thread}"] .name')).to_have_text(
        bob.name)
    alice.send(first)
    expect(alice.bodies(first)).to_have_count(1)

    item = bob.page.locator(f'#threads li[data-thread="{thread}"]')
    expect(item.locator(".name")).to_have_text(alice.name)  # the thread appears live on bob's page
    item.click()
    expect(item).to_have_class("active")
    expect(bob.bodies(first)).to_have_count(1)
    expect(bob.bodies(first).locator(".who")).to_have_text(alice.name)

    bob.send(reply)
    expect(alice.bodies(reply)).to_have_count(1)
    expect(alice.bodies(reply).locator(".who")).to_have_text(bob.name)
    expect(bob.bodies(reply)).to_have_count(1)
    assert alice.log() == [(alice.name, first), (bob.name, reply)]
    assert bob.log() == [(alice.name, first), (bob.name, reply)]
    return first, reply


def _wait_for_events(user: User, count: int, timeout_ms: int = TIMEOUT_MS) -> None:
    """Let the page run until its socket has received ``count`` event frames, plus 200 ms."""
    waited = 0
    while len(user.event_ids()) < count and waited < timeout_ms:
        user.page.wait_for_timeout(20)  # Playwright delivers frame events while it waits
        waited += 20
    user.page.wait_for_timeout(200)


def _barrier(alice: User, bob: User) -> None:
    """Alice sends one more message; once bob shows it, every earlier event reached him
    (per thread the gateway delivers in order), so counts taken now are final."""
    from playwright.sync_api import expect

    marker = f"marker {uuid.uuid4().hex[:6]}"
    alice.send(marker)
    expect(bob.bodies(marker)).to_have_count(1)


def test_live_chat_between_two_pages(open_page: Any) -> None:
    alice, bob = open_page("alice"), open_page("bob")
    first, reply = _converse(alice, bob)
    _barrier(alice, bob)
    assert bob.count(first) == 1 and bob.count(reply) == 1
    # each event reached each page once. The barrier holds for bob only: alice's own
    # last event may still be on its way to her socket, so wait for it (then a little
    # longer, so that a late duplicate would be seen too)
    for user in (alice, bob):
        _wait_for_events(user, 3)
        ids = user.event_ids()
        assert len(ids) == len(set(ids)) == 3, (user.name, ids)
    bob.page.screenshot(path=SCREENSHOT)


def test_offline_then_online_catches_up_once(open_page: Any) -> None:
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    _converse(alice, bob)
    sockets_before = len(bob.sockets)

    bob.page.click("#toggle")
    bob.wait_status("offline")
    expect(bob.page.locator("#toggle")).to_have_text("Go online")
    missed = [f"while you were out {i} {uuid.uuid4().hex[:6]}" for i in (1, 2)]
    for text in missed:
        alice.send(text)
        expect(alice.bodies(text)).to_have_count(1)
    bob.page.wait_for_timeout(300)  # time for a (wrong) live delivery to show up
    assert [bob.count(text) for text in missed] == [0, 0]

    bob.page.click("#toggle")
    bob.wait_status("online")
    expect(bob.page.locator("#toggle")).to_have_text("Go offline")
    for text in missed:
        expect(bob.bodies(text)).to_have_count(1)
    _barrier(alice, bob)
    assert [bob.count(text) for text in missed] == [1, 1]
    assert [body for _, body in bob.log()][2:4] == missed
    # the new socket got the two missed messages and the marker, once each, and
    # nothing from before going offline
    assert len(bob.sockets) == sockets_before + 1
    ids = bob.event_ids()
    assert len(ids) == len(set(ids)) == 3, ids


def test_reload_rebuilds_history(open_page: Any) -> None:
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    first, reply = _converse(alice, bob)
    before = bob.log()

    bob.page.reload()
    bob.wait_status("online")
    thread = thread_of(alice.name, bob.name)
    # the only thread is selected on its own after the reload, restored from the page's
    # localStorage (duologue-client's store) and synced after the id it had applied
    expect(bob.page.locator(f'#threads li.active[data-thread="{thread}"]')).to_have_count(1)
    expect(bob.bodies(first)).to_have_count(1)
    expect(bob.bodies(reply)).to_have_count(1)
    _barrier(alice, bob)
    assert bob.count(first) == 1 and bob.count(reply) == 1
    assert bob.log()[:2] == before
    # the new socket replayed at most what the stored snapshot lacked, each event once
    ids = bob.event_ids()
    assert 1 <= len(ids) == len(set(ids)) <= 3, ids

    # and a second reload while a message is on its way changes nothing
    late = f"after reload {uuid.uuid4().hex[:6]}"
    bob.page.reload()
    alice.send(late)
    bob.wait_status("online")
    expect(bob.bodies(late)).to_have_count(1)
    _barrier(alice, bob)
    assert [bob.count(text) for text in (first, reply, late)] == [1, 1, 1]


def test_history_comes_from_postgres(browser: Any, start_gateway: Any, database_url: str,
                                     redis_url: str, prefix: str, log_dir: Any) -> None:
    """With the projector running, a fresh page shows the thread from the HTTP history
    and replays nothing from the stream that Postgres already had."""
    import time

    import httpx
    from playwright.sync_api import expect

    from tests.support import ProjectorProcess

    gateway = start_gateway(DATABASE_URL=database_url)
    projector = ProjectorProcess({"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                                  "DUOLOGUE_PREFIX": prefix}).start(log_dir)
    try:
        alice, bob = uid("alice"), uid("bob")
        thread = thread_of(alice, bob)
        url = f"{gateway.http_url}/v1/threads/{thread}/messages"
        auth = {"Authorization": f"Bearer {token(alice)}"}
        texts = [f"stored {i} {uuid.uuid4().hex[:6]}" for i in range(3)]
        for i, text in enumerate(texts):
            answer = httpx.post(url, json={"body": text, "client_msg_id": f"h{i}"}, headers=auth)
            assert answer.status_code == 201, answer.text
        deadline = time.monotonic() + 20
        while len(httpx.get(url, headers=auth).json()["messages"]) < 3:
            assert time.monotonic() < deadline, projector.log()
            time.sleep(0.05)

        context = browser.new_context()
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        user = User(bob, page)
        page.on("websocket", lambda ws: (user.sockets.append(frames := []), ws.on(
            "framereceived", lambda payload: frames.append(json.loads(payload)))))
        with page.expect_response(lambda r: "/messages" in r.url) as history:
            page.goto(f"{gateway.http_url}/#token={token(bob)}")
        assert history.value.status == 200
        user.wait_status("online")
        expect(page.locator(f'#threads li.active[data-thread="{thread}"]')).to_have_count(1)
        for text in texts:
            expect(user.bodies(text)).to_have_count(1)
        assert [body for _, body in user.log()] == texts
        assert user.event_ids() == []  # nothing replayed: Postgres had it all

        late = f"live {uuid.uuid4().hex[:6]}"
        answer = httpx.post(url, json={"body": late, "client_msg_id": "h-live"}, headers=auth)
        assert answer.status_code == 201
        expect(user.bodies(late)).to_have_count(1)
        assert [body for _, body in user.log()] == [*texts, late]
        context.close()
    finally:
        projector.terminate()
