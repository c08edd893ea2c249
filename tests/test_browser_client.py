"""The demo page as a chat app on duologue-client, in headless Chromium: a send queued
while offline and delivered once, refusals shown with the text kept, an invalid peer id
refused with no thread made, the unread badge and read receipts, typing, edit and delete,
and a reload that keeps history and queued sends. Screenshots for review are written to
/tmp/duologue-screens/."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import thread_of
from tests.test_browser import User, _converse, browser, open_page  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser
SCREENS = Path("/tmp/duologue-screens")


def _shot(user: User, name: str) -> None:
    SCREENS.mkdir(exist_ok=True)
    user.page.screenshot(path=str(SCREENS / f"{name}.png"))


def _received(user: User, text: str) -> int:
    """MessageSent frames with this body over every socket the page opened."""
    return sum(1 for frames in user.sockets for f in frames if f.get("type") == "event"
               and f["event"]["kind"] == "MessageSent" and f["event"]["body"] == text)


def test_a_send_while_offline_is_queued_then_delivered_once(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    _converse(alice, bob)
    bob.page.click("#toggle")
    bob.wait_status("offline")
    text = f"written offline {uuid.uuid4().hex[:6]}"
    bob.send(text)
    expect(bob.bodies(text)).to_have_count(1)  # shown at once, marked as queued
    expect(bob.bodies(text).locator(".state")).to_have_text("queued")
    expect(bob.page.locator("#offline-note")).to_contain_text("1 waiting")
    expect(bob.page.locator("#body")).to_have_value("")
    _shot(bob, "offline-queued")
    alice.page.wait_for_timeout(300)
    assert alice.count(text) == 0

    bob.page.click("#toggle")
    bob.wait_status("online")
    expect(alice.bodies(text)).to_have_count(1)
    expect(bob.bodies(text).locator(".state")).to_have_text(re.compile("sent|read"))
    expect(bob.page.locator("#offline-note")).to_have_text("")
    marker = f"after {uuid.uuid4().hex[:6]}"
    bob.send(marker)
    expect(alice.bodies(marker)).to_have_count(1)
    assert alice.count(text) == 1 and bob.count(text) == 1
    assert _received(alice, text) == 1  # one event: the queued send was appended once


def test_a_refused_message_keeps_its_text_and_shows_the_reason(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    _converse(alice, bob)
    # refused by the client (too long): nothing is queued and the text stays in the box
    too_long = "x" * 4001
    alice.page.fill("#body", too_long)
    alice.page.click("#send")
    expect(alice.page.locator("#error")).to_contain_text("invalid")
    expect(alice.page.locator("#body")).to_have_value(too_long)
    # refused by the server (bob blocked the thread): kept in the log with the reason
    bob.page.click("#block")
    expect(alice.page.locator("#blocked-note")).to_contain_text("has blocked")
    text = f"please read this {uuid.uuid4().hex[:6]}"
    alice.send(text)
    message = alice.bodies(text)
    expect(message).to_have_class(re.compile(r"\bfailed\b"))
    expect(message.locator(".reason")).to_contain_text("Not sent (blocked)")
    expect(message.locator(".body")).to_have_text(text)
    _shot(alice, "refused")
    alice.page.reload()  # a refused message survives a reload too
    alice.wait_status("online")
    expect(alice.bodies(text).locator(".reason")).to_contain_text("blocked")
    alice.bodies(text).locator("button.discard").click()
    expect(alice.bodies(text)).to_have_count(0)
    assert bob.count(text) == 0


def test_an_invalid_peer_id_is_refused_visibly_and_makes_no_thread(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice = open_page("alice")
    alice.open_thread("not a user!")
    expect(alice.page.locator("#peer-error")).to_contain_text("not a valid user id")
    expect(alice.page.locator("#threads li")).to_have_count(0)
    expect(alice.page.locator("#peer-name")).to_have_text("")
    _shot(alice, "invalid-peer")
    alice.page.reload()
    alice.wait_status("online")
    expect(alice.page.locator("#threads li")).to_have_count(0)
    assert alice.page.evaluate("() => window.duologue().threadList().length") == 0
    assert alice.page.evaluate("() => window.duologue().pendingCommands().length") == 0


def test_unread_badge_appears_and_clears_when_read(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    thread = thread_of(alice.name, bob.name)
    alice.open_thread(bob.name)
    texts = [f"unread {i} {uuid.uuid4().hex[:6]}" for i in range(2)]
    for text in texts:
        alice.send(text)
    item = bob.page.locator(f'#threads li[data-thread="{thread}"]')
    expect(item.locator(".badge")).to_have_text("2")
    expect(item.locator(".preview")).to_have_text(texts[1])
    for text in texts:
        expect(alice.bodies(text).locator(".state")).to_have_text("✓ sent")
    _shot(bob, "unread-badge")

    item.click()  # on screen: bob's page sends a read receipt
    expect(item.locator(".badge")).to_have_count(0)
    for text in texts:
        expect(alice.bodies(text).locator(".state")).to_have_text("✓✓ read")
    _shot(alice, "read-receipts")
    bob.page.reload()  # the receipt is in the thread: no badge after a reload either
    bob.wait_status("online")
    expect(bob.page.locator(f'#threads li[data-thread="{thread}"]')).to_have_count(1)
    expect(bob.page.locator(f'#threads li[data-thread="{thread}"] .badge')).to_have_count(0)


def test_typing_edit_and_delete_reach_the_other_page(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    first, _ = _converse(alice, bob)
    alice.page.wait_for_timeout(2100)  # typing frames go out at most once per 2 s
    alice.page.type("#body", "hel")
    expect(bob.page.locator("#typing")).to_have_text(f"{alice.name} is typing…")
    alice.page.fill("#body", "")

    alice.bodies(first).hover()
    alice.bodies(first).locator("button.edit").click()
    expect(alice.page.locator("#body")).to_have_value(first)
    edited = f"{first} (fixed)"
    alice.send(edited)
    for user in (alice, bob):
        expect(user.bodies(edited).locator(".edited")).to_have_text("edited")
        expect(user.bodies(first)).to_have_count(0)
    alice.bodies(edited).hover()
    alice.bodies(edited).locator("button.delete").click()
    for user in (alice, bob):
        expect(user.page.locator("#log .msg.deleted .body")).to_have_text("(deleted)")


def test_reload_keeps_history_and_a_queued_send(open_page: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    alice, bob = open_page("alice"), open_page("bob")
    first, reply = _converse(alice, bob)
    bob.page.click("#toggle")
    bob.wait_status("offline")
    queued = f"queued before a reload {uuid.uuid4().hex[:6]}"
    bob.send(queued)
    expect(bob.bodies(queued).locator(".state")).to_have_text("queued")
    bob.page.reload()  # the page comes back online: history restored, the send made once
    bob.wait_status("online")
    for text in (first, reply, queued):
        expect(bob.bodies(text)).to_have_count(1)
    expect(alice.bodies(queued)).to_have_count(1)
    expect(bob.bodies(queued).locator(".state")).to_have_text(re.compile("sent|read"))
    _shot(bob, "after-reload")
    marker = f"marker {uuid.uuid4().hex[:6]}"
    alice.send(marker)
    expect(bob.bodies(marker)).to_have_count(1)
    assert [bob.count(t) for t in (first, reply, queued)] == [1, 1, 1]
    assert _received(alice, queued) == 1
