"""The demo page's conversation features in headless Chromium: reply, react, block (and
the refusal shown, the text not lost), through the same fixtures as tests/test_browser.py."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.support import thread_of
from tests.test_browser import _converse, browser, open_page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_reply_react_and_block_between_two_pages(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    first, reply = _converse(alice, bob)

    # bob replies to alice's first message: both pages quote it above the reply
    bob.bodies(first).hover()
    bob.bodies(first).locator("button.reply").click()
    expect(bob.page.locator("#replying")).to_contain_text(first)
    answer = f"about that {uuid.uuid4().hex[:6]}"
    bob.send(answer)
    for user in (alice, bob):
        expect(user.bodies(answer).locator(".quote")).to_have_text(f"↪ {alice.name}: {first}")
    expect(bob.page.locator("#replying")).to_have_text("")

    # alice likes bob's reply: a chip on both pages, hers highlighted; a click removes it
    alice.bodies(reply).hover()
    alice.bodies(reply).locator("button.react").click()
    for user in (alice, bob):
        expect(user.bodies(reply).locator(".chip")).to_have_text("👍 1")
    expect(alice.bodies(reply).locator(".chip")).to_have_class("chip mine")
    expect(bob.bodies(reply).locator(".chip")).to_have_class("chip")
    alice.bodies(reply).locator(".chip").click()
    for user in (alice, bob):
        expect(user.bodies(reply).locator(".chip")).to_have_count(0)

    # bob blocks: alice is told, and her next message is refused with the reason shown
    expect(bob.page.locator("#block")).to_have_text("Block")
    bob.page.click("#block")
    expect(bob.page.locator("#block")).to_have_text("Unblock")
    expect(alice.page.locator("#blocked-note")).to_contain_text("has blocked")
    refused = f"let me in {uuid.uuid4().hex[:6]}"
    alice.send(refused)
    expect(alice.page.locator("#error")).to_contain_text("blocked")
    # the refused message stays on alice's page, its text kept and the reason beside it
    expect(alice.bodies(refused)).to_have_class(re.compile(r"\bfailed\b"))
    expect(alice.bodies(refused).locator(".reason")).to_contain_text("blocked")
    expect(bob.bodies(refused)).to_have_count(0)
    bob.page.click("#block")
    expect(alice.page.locator("#blocked-note")).to_have_text("")
    alice.bodies(refused).locator("button.retry").click()  # unblocked: sent again, once
    expect(bob.bodies(refused)).to_have_count(1)
    expect(alice.bodies(refused)).to_have_count(1)
    expect(alice.bodies(refused).locator(".state")).to_have_text(re.compile("sent|read"))
    welcome = f"welcome back {uuid.uuid4().hex[:6]}"
    alice.send(welcome)
    expect(bob.bodies(welcome)).to_have_count(1)
    expect(alice.page.locator("#error")).to_have_text("")


def test_online_dot_and_last_seen(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    _converse(alice, bob)
    dot = alice.page.locator(f'#threads li[data-thread="{thread_of(alice.name, bob.name)}"] .dot')
    expect(dot).to_have_class("dot online")
    expect(alice.page.locator("#peer-status")).to_have_text("online")
    bob.page.click("#toggle")  # bob goes offline: his last socket closes cleanly
    bob.wait_status("offline")
    expect(dot).to_have_class("dot")
    expect(alice.page.locator("#peer-status")).to_contain_text("last seen")
    bob.page.click("#toggle")
    bob.wait_status("online")
    expect(dot).to_have_class("dot online")


def test_search_box_finds_projected_messages(browser: Any, start_gateway: Any,  # noqa: F811
                                             database_url: str, redis_url: str, prefix: str,
                                             log_dir: Any) -> None:
    """The search box asks GET /v1/search and lists the hits; a hit opens its thread."""
    import time

    import httpx
    from playwright.sync_api import expect

    from tests.support import ProjectorProcess, token, uid

    gateway = start_gateway(DATABASE_URL=database_url)
    projector = ProjectorProcess({"REDIS_URL": redis_url, "DATABASE_URL": database_url,
                                  "DUOLOGUE_PREFIX": prefix}).start(log_dir)
    try:
        alice, bob = uid("alice"), uid("bob")
        word = f"zebra{uuid.uuid4().hex[:6]}"
        url = f"{gateway.http_url}/v1/threads/{thread_of(alice, bob)}/messages"
        auth = {"Authorization": f"Bearer {token(alice)}"}
        for i, text in enumerate((f"the {word} crossed", "nothing to see", f"{word} again")):
            answer = httpx.post(url, json={"body": text, "client_msg_id": f"s{i}"}, headers=auth)
            assert answer.status_code == 201, answer.text
        search = f"{gateway.http_url}/v1/search"
        deadline = time.monotonic() + 20
        while len(httpx.get(search, params={"q": word}, headers=auth).json()["results"]) < 2:
            assert time.monotonic() < deadline, projector.log()
            time.sleep(0.05)

        context = browser.new_context()
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{gateway.http_url}/#token={token(bob)}")
        expect(page.locator("#status")).to_have_text("online")
        page.fill("#search", word.upper())  # case-insensitive
        page.press("#search", "Enter")
        hits = page.locator("#results li.hit")
        expect(hits).to_have_count(2)
        expect(hits.first).to_have_text(f"{alice}: {word} again")  # newest first
        hits.first.click()  # opens the thread
        thread = thread_of(alice, bob)
        expect(page.locator(f'#threads li.active[data-thread="{thread}"]')).to_have_count(1)
        page.fill("#search", "absentword")
        page.press("#search", "Enter")
        expect(page.locator("#results li")).to_have_text("no message matches")
        context.close()
    finally:
        projector.terminate()
