// One thread as the client knows it: the fold of its events (and of HTTP history
// pages) into messages, receipts and blocks, plus the sends still in the outbox.
import { compareIds, peerOf } from "./ids.js";
export const SNAPSHOT_MESSAGES = 200; // newest messages kept per thread in the store
export class Thread {
    id;
    me;
    /** The newest event id applied ("0": none): `sync` resumes after it. */
    cursor = "0";
    /** `next_before` for older history over HTTP; null when nothing older is known. */
    older = null;
    /** Whether the thread's messages were loaded (history, snapshot, or a full replay). */
    loaded = false;
    messages = new Map();
    order = [];
    /** Sends not acked yet (pending) or refused (failed), in the order they were made. */
    outgoing = [];
    readUpTo = {};
    blockedBy = new Set();
    lastTs = 0;
    constructor(id, me) {
        this.id = id;
        this.me = me;
    }
    get peer() {
        return peerOf(this.id, this.me);
    }
    /** Confirmed messages in stream order, then the outgoing ones. */
    list() {
        return [...this.order.map((id) => this.messages.get(id)), ...this.outgoing];
    }
    /** The newest message that is not deleted (outgoing ones included). */
    lastMessage() {
        const all = this.list();
        for (let i = all.length - 1; i >= 0; i--)
            if (!all[i].deleted)
                return all[i];
        return null;
    }
    /** Messages from the peer after my own receipt, not deleted. */
    unread() {
        const mine = this.readUpTo[this.me] ?? "0";
        let n = 0;
        for (let i = this.order.length - 1; i >= 0; i--) {
            const id = this.order[i];
            if (compareIds(id, mine) <= 0)
                break;
            const m = this.messages.get(id);
            if (m.sender !== this.me && !m.deleted)
                n++;
        }
        return n;
    }
    /** The newest message id from the peer (what a read receipt points at). */
    newestFromPeer() {
        for (let i = this.order.length - 1; i >= 0; i--) {
            const m = this.messages.get(this.order[i]);
            if (m.sender !== this.me)
                return m.id;
        }
        return null;
    }
    /** Whether `id` is at or before the peer's receipt (the peer has read it). */
    readByPeer(id) {
        const theirs = this.readUpTo[this.peer];
        return theirs !== undefined && compareIds(id, theirs) <= 0;
    }
    /** Fold one event frame; false (and nothing changes) when it is not newer than the
     * cursor, so a replay that overlaps what was applied never doubles anything. */
    apply(frame) {
        if (compareIds(frame.id, this.cursor) <= 0)
            return false;
        this.cursor = frame.id;
        this.lastTs = Math.max(this.lastTs, frame.ts);
        const e = frame.event;
        const target = "target" in e ? this.messages.get(e.target) : undefined;
        switch (e.kind) {
            case "MessageSent":
                this.outgoing = this.outgoing.filter((m) => !(m.sender === e.sender && m.clientMsgId === e.client_msg_id));
                this.put({
                    id: frame.id, clientMsgId: e.client_msg_id, sender: e.sender, body: e.body, ts: frame.ts,
                    editedAt: null, deleted: false, replyTo: e.reply_to ?? null, reactions: [], state: "sent", error: null,
                });
                break;
            case "MessageEdited":
                if (target)
                    Object.assign(target, { body: e.body, editedAt: frame.ts });
                break;
            case "MessageDeleted":
                if (target)
                    Object.assign(target, { body: null, deleted: true, reactions: [] });
                break;
            case "ReadUpTo":
                if (!this.readUpTo[e.reader] || compareIds(e.up_to, this.readUpTo[e.reader]) > 0) {
                    this.readUpTo[e.reader] = e.up_to;
                }
                break;
            case "ReactionAdded":
                if (target)
                    addReaction(target, e.emoji, e.sender);
                break;
            case "ReactionRemoved":
                if (target)
                    removeReaction(target, e.emoji, e.sender);
                break;
            case "ThreadBlocked":
                this.blockedBy.add(e.by);
                break;
            case "ThreadUnblocked":
                this.blockedBy.delete(e.by);
                break;
        }
        return true;
    }
    /** Replace the confirmed messages with an HTTP history page (newest first, as the
     * API answers); the cursor becomes its `projected_up_to`. Outgoing ones stay. */
    reset(page, projectedUpTo, older) {
        this.messages.clear();
        this.order = [];
        this.addHistory(page);
        this.cursor = projectedUpTo;
        this.older = older;
        this.loaded = true;
        const newest = page[0];
        if (newest)
            this.lastTs = Math.max(this.lastTs, newest.sent_at);
    }
    /** Add an older HTTP page (messages already known are kept as they are). */
    addHistory(page) {
        for (const m of page) {
            if (this.messages.has(m.id))
                continue;
            this.put({
                id: m.id, clientMsgId: null, sender: m.sender, body: m.body, ts: m.sent_at, editedAt: m.edited_at,
                deleted: m.deleted, replyTo: m.reply_to ?? null, reactions: (m.reactions ?? []).map((r) => ({ ...r })),
                state: "sent", error: null,
            });
        }
    }
    /** Forget everything confirmed (a replay from "0" follows). */
    clear() {
        this.messages.clear();
        this.order = [];
        this.cursor = "0";
        this.older = null;
        this.readUpTo = {};
        this.blockedBy.clear();
    }
    snapshot() {
        const kept = this.order.slice(-SNAPSHOT_MESSAGES);
        const cut = this.order.length > kept.length ? kept[0] : this.older;
        return {
            v: 1, cursor: this.cursor, older: cut ?? null, messages: kept.map((id) => this.messages.get(id)),
            readUpTo: this.readUpTo, blockedBy: [...this.blockedBy], lastTs: this.lastTs,
        };
    }
    restore(s) {
        this.clear();
        for (const m of s.messages)
            this.put(m);
        Object.assign(this, { cursor: s.cursor, older: s.older, readUpTo: { ...s.readUpTo }, lastTs: s.lastTs });
        this.blockedBy = new Set(s.blockedBy);
        this.loaded = true;
    }
    put(m) {
        const id = m.id;
        if (!this.messages.has(id)) {
            // nearly always the newest: search from the end
            let i = this.order.length;
            while (i > 0 && compareIds(this.order[i - 1], id) > 0)
                i--;
            this.order.splice(i, 0, id);
        }
        this.messages.set(id, m);
    }
}
function addReaction(m, emoji, user) {
    const r = m.reactions.find((x) => x.emoji === emoji);
    if (!r)
        m.reactions.push({ emoji, users: [user] });
    else if (!r.users.includes(user))
        r.users.push(user);
}
function removeReaction(m, emoji, user) {
    const r = m.reactions.find((x) => x.emoji === emoji);
    if (!r)
        return;
    r.users = r.users.filter((u) => u !== user);
    if (!r.users.length)
        m.reactions = m.reactions.filter((x) => x !== r);
}
