"""protocol.md section 1, event ids: an id written with leading zeros names the same event,
in targets, receipts and guards.
"""

from __future__ import annotations

import json

from domain.state import fold
from schemas.events import decode_event
from tests.support import Client, stream_events, thread_of, uid


def padded_id(event_id: str) -> str:
    """The same event id with a leading zero: Redis (and ``event_key``) read it as equal."""
    return "0" + event_id


# -- event ids with leading zeros ----------------------------------------------------------
#
# ``domain.ids.event_key`` and Redis (XRANGE) accept ``0<id>`` as the very id ``<id>``, but
# the gateway then uses the text as sent: in the guard fields (``x:<target>``,
# ``r:<reader>``), in the Lua ``newer`` (which compares digit counts), and in the stored
# event. A fix may canonicalise such ids or refuse them as ``invalid``; both pass these.


async def test_zero_padded_target_reaches_a_deleted_message(shared_gateway, aredis, keys):
    """A target with a leading zero is the same message: deleted, it takes no edit or delete."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    sent_ = await a.say(bob, "to be deleted")
    deleted = await a.request({"type": "delete", "thread": thread, "target": sent_["id"]})
    assert deleted["type"] == "ack"
    edited = await a.request({"type": "edit", "thread": thread,
                              "target": padded_id(sent_["id"]), "body": "back"})
    again = await a.request({"type": "delete", "thread": thread,
                             "target": padded_id(sent_["id"])})
    kinds = [e["kind"] for _, e in await stream_events(aredis, keys, thread)]
    await a.close()
    assert (edited["type"], again["type"]) == ("error", "error"), (edited, again)
    assert {edited["code"], again["code"]} <= {"not_found", "invalid"}, (edited, again)
    assert kinds == ["MessageSent", "MessageDeleted"], kinds


async def test_zero_padded_edit_names_the_message_it_edits(shared_gateway, aredis, keys):
    """An edit whose target has a leading zero edits that very message, in every fold."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    sent_ = await a.say(bob, "before")
    edited = await a.request({"type": "edit", "thread": thread,
                              "target": padded_id(sent_["id"]), "body": "after"})
    events = await stream_events(aredis, keys, thread)
    await a.close()
    if edited["type"] == "error":
        assert edited["code"] == "invalid", edited
        return
    state = fold(thread, [(i, decode_event(json.dumps(e))) for i, e in events])
    assert events[-1][1]["target"] == sent_["id"], events[-1]
    assert state.messages[sent_["id"]].body == "after"


async def test_zero_padded_read_receipt_does_not_break_later_receipts(shared_gateway):
    """A read receipt with a leading zero is the same receipt: later receipts still move it on."""
    alice, bob = uid("a"), uid("b")
    thread = thread_of(alice, bob)
    a = await Client.connect(shared_gateway.ws_url, alice)
    b = await Client.connect(shared_gateway.ws_url, bob)
    m1 = await a.say(bob, "one")
    m2 = await a.say(bob, "two")
    first = await b.request({"type": "read", "thread": thread, "up_to": padded_id(m1["id"])})
    live = await a.next("event", id=first["id"]) if first["type"] == "ack" else None
    later = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    retried = await b.request({"type": "read", "thread": thread, "up_to": m2["id"]})
    await a.close()
    await b.close()
    assert later["type"] == "ack" and later["duplicate"] is False, later
    assert retried["type"] == "ack" and retried["id"] == later["id"], retried
    if live is None:
        assert first["code"] == "invalid", first
    else:
        assert live["event"]["up_to"] == m1["id"], live  # an id of the thread, as emitted


