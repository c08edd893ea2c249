// The client: one WebSocket kept open (reconnect with jittered backoff), every known
// thread synced after each connect, the outbox resent until acked or refused, the
// token refreshed before it expires, presence watched, typing throttled.
import { Emitter } from "./emitter.js";
import { DuologueError, Http } from "./http.js";
import { compareIds, isUserId, threadOf } from "./ids.js";
import { Outbox } from "./outbox.js";
import { MemoryStore } from "./store.js";
import { Thread } from "./thread.js";
const OPEN = 1;
const TYPING_EVERY_MS = 2000;
const FLUSH_MS = 250; // the store is written this long after a change...
const CATCHING_UP_FLUSH_MS = 2000; // ...or this long while a catch-up replays (its end flushes)
const CHANGE_MS = 16; // `thread` events are coalesced over one frame
const CONNECT_TIMEOUT_MS = 10_000; // from the socket's creation to the hello
export class Duologue extends Emitter {
    http;
    /** The signed-in user (from the token, then the hello). */
    user = null;
    status = "offline";
    limits = { max_body: 4000, max_frame: 65536 };
    presence = new Map();
    opts;
    Socket;
    threads = new Map();
    outbox = new Outbox();
    ws = null;
    wanted = false;
    attempt = 0;
    reconnectTimer = null;
    token = null;
    refreshTimer = null;
    helloAt = 0;
    syncQueue = [];
    syncing = new Map(); // thread -> `after` of the sync in flight
    syncHeld = false; // a refused sync: the queue waits for the read budget
    resyncTimer = null;
    reloading = new Set(); // threads whose sync follows a reload
    caughtUp = true;
    pausedUntil = 0; // rate_limited: no command before this
    paceMs = 0; // after rate_limited: at most one command per paceMs, decaying
    lastSent = 0;
    pumpTimer = null;
    ackTimer = null;
    typingSent = new Map();
    watched = [];
    extraWatch = [];
    changed = new Set();
    changeTimer = null;
    dirty = new Set();
    outboxDirty = false;
    flushTimer = null;
    seq = 0;
    device = "";
    constructor(options) {
        super();
        const Socket = options.WebSocket ?? globalThis.WebSocket;
        if (!Socket)
            throw new Error("no WebSocket: Node 20 needs --experimental-websocket (Node 22 has it)");
        this.Socket = Socket;
        this.opts = {
            url: options.url.replace(/\/$/, ""), token: options.token, store: options.store ?? new MemoryStore(),
            history: options.history ?? 50, ackTimeoutMs: options.ackTimeoutMs ?? 10_000,
            window: options.window ?? 16, syncWindow: options.syncWindow ?? 100,
            watchPresence: options.watchPresence ?? true, random: options.random ?? Math.random,
            minMs: options.backoff?.minMs ?? 250, maxMs: options.backoff?.maxMs ?? 10_000,
        };
        const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis);
        this.http = new Http(this.opts.url, () => this.currentToken(), fetchImpl);
    }
    // -- connection --------------------------------------------------------------------
    /** Start (and keep) a connection; resolves once the token is known (not the hello). */
    async connect() {
        this.wanted = true;
        if (!this.token)
            await this.newToken();
        if (!this.ackTimer)
            this.ackTimer = setInterval(() => this.checkAcks(), 1000);
        this.open();
    }
    /** Close the connection and stay offline until `connect` (the outbox is kept). */
    disconnect() {
        this.wanted = false;
        this.clearTimers();
        const ws = this.ws;
        this.ws = null;
        ws?.close(1000, "client disconnect");
        this.setStatus("offline", null, null);
        this.flush();
    }
    /** Everything stopped: no timer left (Node exits). */
    close() {
        this.disconnect();
        if (this.ackTimer)
            clearInterval(this.ackTimer);
        this.ackTimer = null;
    }
    open() {
        if (!this.wanted || this.ws)
            return;
        this.reconnectTimer = null;
        this.setStatus("connecting", null, null);
        const go = async () => {
            let token;
            try {
                token = await this.currentToken();
            }
            catch {
                this.ws = null;
                this.scheduleReconnect(null);
                return;
            }
            if (!this.wanted || this.ws !== placeholder)
                return;
            const ws = new this.Socket(`${this.opts.url.replace(/^http/, "ws")}/v1/ws?token=${encodeURIComponent(token)}`);
            this.ws = ws;
            ws.onmessage = (e) => {
                if (this.ws === ws)
                    this.handle(JSON.parse(String(e.data)));
            };
            const closed = (code) => {
                clearTimeout(timeout);
                if (this.ws !== ws)
                    return;
                this.ws = null;
                ws.onmessage = ws.onclose = ws.onerror = null;
                if (ws.readyState < 2)
                    ws.close();
                this.scheduleReconnect(code);
            };
            ws.onclose = (e) => closed(e.code);
            // Node 20's WebSocket reports a refused connection with `error` and no `close`
            ws.onerror = () => {
                if (ws.readyState !== OPEN)
                    closed(1006);
            };
            const timeout = setTimeout(() => {
                if (this.status !== "online")
                    closed(1006); // no hello: try again
            }, CONNECT_TIMEOUT_MS);
        };
        const placeholder = { readyState: 0, send() { }, close() { }, onopen: null, onmessage: null, onclose: null, onerror: null };
        this.ws = placeholder;
        void go();
    }
    scheduleReconnect(code) {
        this.afterClose();
        if (!this.wanted) {
            this.setStatus("offline", null, code);
            return;
        }
        const ceiling = Math.min(this.opts.maxMs, this.opts.minMs * 2 ** this.attempt);
        const delay = Math.round(ceiling / 2 + (this.opts.random() * ceiling) / 2);
        this.attempt = Math.min(this.attempt + 1, 30);
        this.setStatus("offline", delay, code);
        if (code === 1008)
            this.token = null; // expired or refused: ask the provider again
        this.reconnectTimer = setTimeout(() => this.open(), delay);
    }
    afterClose() {
        if (this.refreshTimer)
            clearTimeout(this.refreshTimer);
        this.refreshTimer = null;
        this.syncQueue = [];
        this.syncing.clear();
        this.reloading.clear();
        if (this.resyncTimer)
            clearTimeout(this.resyncTimer);
        this.resyncTimer = null;
        this.syncHeld = false;
        this.outbox.rewind();
        this.watched = [];
        this.flush();
    }
    clearTimers() {
        for (const t of [this.reconnectTimer, this.refreshTimer, this.pumpTimer])
            if (t)
                clearTimeout(t);
        this.reconnectTimer = this.refreshTimer = this.pumpTimer = null;
    }
    setStatus(status, retryInMs, closeCode) {
        this.status = status;
        this.emit("status", { status, retryInMs, closeCode });
    }
    sendFrame(frame) {
        const ws = this.ws;
        if (!ws || ws.readyState !== OPEN || this.status !== "online")
            return false;
        ws.send(JSON.stringify(frame));
        return true;
    }
    // -- tokens ------------------------------------------------------------------------
    async newToken() {
        const token = await this.opts.token();
        const claims = decodeClaims(token);
        this.token = { token, sub: claims.sub, exp: claims.exp, obtainedAt: Date.now() };
        if (!this.user)
            this.user = claims.sub;
        this.loadStore();
        return this.token;
    }
    async currentToken() {
        const t = this.token;
        if (t && t.exp * 1000 > Date.now() + 1000)
            return t.token;
        return (await this.newToken()).token;
    }
    scheduleRefresh() {
        if (this.refreshTimer)
            clearTimeout(this.refreshTimer);
        const t = this.token;
        if (!t)
            return;
        const life = t.exp * 1000 - t.obtainedAt;
        const margin = Math.min(60_000, Math.max(1000, life / 4));
        const at = Math.max(0, t.exp * 1000 - margin - Date.now());
        this.refreshTimer = setTimeout(() => void this.refresh(), at);
    }
    /** Ask the provider for a new token and hand it to the open connection. */
    async refresh() {
        const before = this.token?.exp ?? 0;
        let next;
        try {
            next = await this.newToken();
        }
        catch {
            this.refreshTimer = setTimeout(() => void this.refresh(), 1000);
            return;
        }
        if (next.exp <= before) {
            // the provider gave the same token back: ask again shortly, until it expires
            if (before * 1000 > Date.now())
                this.refreshTimer = setTimeout(() => void this.refresh(), 1000);
            return;
        }
        this.sendFrame({ type: "refresh", token: next.token });
    }
    // -- frames ------------------------------------------------------------------------
    handle(f) {
        switch (f.type) {
            case "hello":
                return this.onHello(f);
            case "event":
                return this.onEvent(f);
            case "ack":
                return this.onAck(f);
            case "synced":
                return this.onSynced(f);
            case "error":
                return this.onError(f);
            case "typing":
                return this.emit("typing", { thread: f.thread, user: f.user });
            case "presence": {
                const info = { user: f.user, online: f.online, lastSeen: f.last_seen };
                this.presence.set(f.user, info);
                return this.emit("presence", info);
            }
            case "refreshed":
                if (this.token)
                    this.token.exp = f.exp;
                this.scheduleRefresh();
                return this.emit("refreshed", { exp: f.exp });
        }
    }
    onHello(hello) {
        this.user = hello.user;
        this.limits = hello.limits;
        this.attempt = 0;
        this.helloAt = Date.now();
        this.caughtUp = false;
        this.setStatus("online", null, null);
        this.emit("hello", hello);
        for (const summary of hello.threads)
            this.ensure(summary.thread, false);
        this.syncQueue = [...this.threads.keys()];
        this.pumpSyncs(); // presence is watched once caught up: the missed events come first
        this.scheduleRefresh();
        this.pump();
    }
    onEvent(f) {
        const t = this.ensure(f.thread);
        if (!t.apply(f))
            return;
        this.touch(t);
        if (f.event.kind === "MessageSent" && f.event.sender === this.user && this.outbox.remove(f.event.client_msg_id)) {
            this.outboxDirty = true; // its event came before its ack
            this.pump();
        }
        this.emit("event", f);
    }
    onAck(a) {
        const entry = this.outbox.remove(a.ref);
        this.paceMs = this.paceMs > 5 ? this.paceMs * 0.97 : 0; // creep back up to full speed
        this.emit("ack", a);
        if (!entry)
            return this.pump(); // its event came first (or another device's ack)
        this.outboxDirty = true;
        const t = this.threads.get(a.thread);
        if (t && entry.frame.type === "send") {
            const m = t.outgoing.find((x) => x.clientMsgId === a.ref);
            if (m && (t.messages.has(a.id) || compareIds(a.id, t.cursor) <= 0)) {
                t.outgoing = t.outgoing.filter((x) => x !== m); // its event was already folded
            }
            else if (m) {
                Object.assign(m, { id: a.id, ts: a.ts, state: "sent" });
            }
            this.touch(t);
        }
        this.pump();
    }
    onError(e) {
        this.emit("error", e);
        const entry = e.ref ? this.outbox.get(e.ref) : undefined;
        const retryMs = e.retry_after_ms ?? 0;
        if (!entry || entry.state !== "pending") {
            if (!e.ref && (e.code === "rate_limited" || e.code === "unavailable"))
                this.resync(Math.max(retryMs, 100));
            return;
        }
        entry.sentAt = 0;
        if (e.code === "rate_limited") {
            const wait = retryMs * (1 + 0.25 * this.opts.random());
            this.pausedUntil = Math.max(this.pausedUntil, Date.now() + wait);
            this.paceMs = Math.max(this.paceMs, retryMs);
        }
        else if (e.code === "unavailable") {
            entry.notBefore = Date.now() + Math.min(10_000, 250 * 2 ** entry.attempts);
        }
        else {
            entry.state = "failed";
            entry.error = { code: e.code, message: e.message };
            this.outboxDirty = true;
            const t = this.threads.get(entry.thread);
            const m = t?.outgoing.find((x) => x.clientMsgId === entry.cmid);
            if (t && m) {
                Object.assign(m, { state: "failed", error: entry.error });
                this.touch(t);
            }
            this.emit("refused", { entry, code: e.code, message: e.message });
        }
        this.pump();
    }
    // -- sync --------------------------------------------------------------------------
    pumpSyncs() {
        while (!this.syncHeld && this.syncing.size < this.opts.syncWindow && this.syncQueue.length) {
            const id = this.syncQueue.shift();
            const t = this.threads.get(id);
            if (!t.loaded && this.opts.history !== false) {
                this.syncing.set(id, "loading");
                void this.reload(t, false);
                continue;
            }
            if (!t.loaded)
                t.clear(); // no HTTP history: replay it all (live frames come again)
            t.loaded = true;
            this.syncing.set(id, t.cursor);
            this.sendFrame({ type: "sync", thread: id, after: t.cursor });
        }
        if (!this.caughtUp && !this.syncHeld && !this.syncing.size && !this.syncQueue.length
            && this.status === "online") {
            this.caughtUp = true;
            this.emit("caughtUp", { threads: this.threads.size, ms: Date.now() - this.helloAt });
            this.updateWatch();
            this.flush();
        }
    }
    /** A sync (or watch) was refused, `rate_limited` or `unavailable`: its error has no
     * ref, so every sync still unanswered goes back to the queue, and the queue waits
     * long enough for the read budget to take them all (one `retry_after_ms` each). A
     * sync that was in fact accepted answers later, and is ignored; its events are not
     * folded twice (the cursor). */
    resync(retryMs) {
        if (this.resyncTimer)
            return; // the refusals of one burst: one wait
        const socket = this.ws;
        const pending = [...this.syncing.entries()].filter(([, after]) => after !== "loading").map(([id]) => id);
        const wait = Math.min(30_000, retryMs * Math.max(1, pending.length)) * (1 + 0.25 * this.opts.random());
        this.syncHeld = true;
        this.resyncTimer = setTimeout(() => {
            this.resyncTimer = null;
            this.syncHeld = false;
            if (this.ws !== socket)
                return;
            const again = pending.filter((id) => this.syncing.get(id) !== undefined && this.syncing.get(id) !== "loading");
            for (const id of again)
                this.syncing.delete(id);
            this.syncQueue.unshift(...again);
            this.watched = []; // a refused watch is sent again once caught up
            this.pumpSyncs();
            this.updateWatch();
        }, wait);
    }
    onSynced(s) {
        const after = this.syncing.get(s.thread);
        const t = this.threads.get(s.thread);
        if (after === undefined || !t)
            return;
        this.syncing.delete(s.thread);
        this.emit("synced", { thread: s.thread, lastId: s.last_id, recovered: s.recovered });
        if (!s.recovered && after !== "0" && !this.reloading.has(s.thread)) {
            // not provably gapless (the server lost events we had seen): reload the thread
            this.syncing.set(s.thread, "loading");
            void this.reload(t, true);
            return;
        }
        this.reloading.delete(s.thread);
        this.pumpSyncs();
    }
    /** Load a thread's newest messages over HTTP, then sync after `projected_up_to`;
     * without HTTP history, forget the thread and replay it from "0". */
    async reload(t, recovering) {
        const socket = this.ws;
        let from = "http";
        try {
            if (this.opts.history === false)
                throw new DuologueError("off", "no HTTP history");
            const page = await this.http.messages(t.id, this.opts.history);
            if (this.ws !== socket)
                return;
            t.reset(page.messages, page.projected_up_to, page.next_before);
        }
        catch {
            if (this.ws !== socket)
                return;
            from = "stream";
            t.clear();
        }
        t.loaded = true;
        this.reloading.add(t.id);
        this.dirty.add(t);
        this.touch(t);
        if (recovering)
            this.emit("reloaded", { thread: t.id, from });
        this.syncing.set(t.id, t.cursor);
        this.sendFrame({ type: "sync", thread: t.id, after: t.cursor });
    }
    /** Older messages of a thread over HTTP (false when there are none). */
    async loadOlder(thread, limit = 50) {
        const t = this.threads.get(thread);
        if (!t || !t.older)
            return false;
        const page = await this.http.messages(thread, limit, t.older);
        t.addHistory(page.messages);
        t.older = page.next_before;
        this.touch(t);
        return page.messages.length > 0;
    }
    // -- the outbox ----------------------------------------------------------------------
    pump() {
        if (this.pumpTimer)
            clearTimeout(this.pumpTimer);
        this.pumpTimer = null;
        if (this.status !== "online")
            return;
        const now = Date.now();
        let wake = Infinity;
        for (const entry of this.outbox.pending()) {
            if (entry.sentAt)
                continue;
            if (this.outbox.inFlight() >= this.opts.window)
                break;
            const due = Math.max(this.pausedUntil, entry.notBefore, this.paceMs ? this.lastSent + this.paceMs : 0);
            if (due > now) {
                wake = Math.min(wake, due);
                if (this.pausedUntil > now || this.paceMs)
                    break; // keep the order while held back
                continue;
            }
            if (!this.sendFrame(entry.frame))
                return;
            entry.sentAt = now;
            entry.attempts++;
            this.lastSent = now;
            if (this.paceMs) {
                wake = now + this.paceMs;
                break;
            }
        }
        if (wake !== Infinity)
            this.pumpTimer = setTimeout(() => this.pump(), Math.max(1, wake - now));
    }
    checkAcks() {
        const stale = Date.now() - this.opts.ackTimeoutMs;
        let resend = false;
        for (const e of this.outbox.pending()) {
            if (e.sentAt && e.sentAt < stale) {
                e.sentAt = 0;
                resend = true;
            }
        }
        if (resend)
            this.pump();
    }
    enqueue(frame) {
        const entry = this.outbox.add({ ...frame, client_msg_id: this.newId() }, Date.now());
        this.outboxDirty = true;
        this.scheduleFlush();
        this.pump();
        return entry;
    }
    newId() {
        this.seq = (this.seq + 1) % 1_000_000;
        return `${this.device}-${Date.now().toString(36)}-${this.seq.toString(36)}`;
    }
    /** Commands not acked yet and refused ones kept for `retry`. */
    pendingCommands() {
        return this.outbox.all();
    }
    /** Send a refused command again, with its client_msg_id. */
    retry(cmid) {
        const entry = this.outbox.get(cmid);
        if (!entry || entry.state !== "failed")
            return;
        Object.assign(entry, { state: "pending", error: null, sentAt: 0, notBefore: 0 });
        const t = this.threads.get(entry.thread);
        const m = t?.outgoing.find((x) => x.clientMsgId === cmid);
        if (t && m) {
            Object.assign(m, { state: "pending", error: null });
            this.touch(t);
        }
        this.outboxDirty = true;
        this.pump();
    }
    /** Drop a refused command (its message leaves the thread). Returns its frame. */
    discard(cmid) {
        const entry = this.outbox.get(cmid);
        if (!entry || entry.state !== "failed")
            return null;
        this.outbox.remove(cmid);
        this.outboxDirty = true;
        const t = this.threads.get(entry.thread);
        if (t) {
            t.outgoing = t.outgoing.filter((m) => m.clientMsgId !== cmid);
            this.touch(t);
        }
        return entry.frame;
    }
    // -- commands ------------------------------------------------------------------------
    /** The thread of `peerOrThread` (a user id or a `dm:` thread id); throws `invalid`. */
    resolve(peerOrThread) {
        const me = this.me();
        if (peerOrThread.startsWith("dm:")) {
            const [, a, b, rest] = peerOrThread.split(":");
            if (rest !== undefined || !isUserId(a ?? "") || !isUserId(b ?? "") || threadOf(a, b) !== peerOrThread
                || (a !== me && b !== me)) {
                throw new DuologueError("invalid", `not a thread of yours: ${peerOrThread}`);
            }
            return peerOrThread;
        }
        if (!isUserId(peerOrThread)) {
            throw new DuologueError("invalid", "a user id is 1-64 characters of letters, digits, '_', '.', '-'");
        }
        return threadOf(me, peerOrThread);
    }
    /** Queue a message; it shows as pending at once, sent when acked, failed if refused. */
    send(peerOrThread, body, options = {}) {
        const thread = this.resolve(peerOrThread);
        this.checkBody(body);
        const entry = this.enqueue({ type: "send", thread, body, ...(options.replyTo ? { reply_to: options.replyTo } : {}) });
        const t = this.ensure(thread);
        const m = outgoingMessage(entry, this.me());
        t.outgoing.push(m);
        this.touch(t);
        return m;
    }
    edit(thread, target, body) {
        this.checkBody(body);
        return this.enqueue({ type: "edit", thread: this.resolve(thread), target, body });
    }
    delete(thread, target) {
        return this.enqueue({ type: "delete", thread: this.resolve(thread), target });
    }
    react(thread, target, emoji) {
        return this.enqueue({ type: "react", thread: this.resolve(thread), target, emoji });
    }
    unreact(thread, target, emoji) {
        return this.enqueue({ type: "unreact", thread: this.resolve(thread), target, emoji });
    }
    block(thread) {
        return this.enqueue({ type: "block", thread: this.resolve(thread) });
    }
    unblock(thread) {
        return this.enqueue({ type: "unblock", thread: this.resolve(thread) });
    }
    /** Send a read receipt up to the peer's newest message, if it moves mine forward. */
    markRead(thread) {
        const t = this.threads.get(thread);
        const upTo = t?.newestFromPeer();
        const mine = t?.readUpTo[this.me()];
        if (!t || !upTo || (mine && compareIds(upTo, mine) <= 0))
            return null;
        t.readUpTo[this.me()] = upTo; // shown at once; the ReadUpTo event confirms it
        this.touch(t);
        return this.enqueue({ type: "read", thread, up_to: upTo });
    }
    /** Tell the peer I am typing: at most one frame per thread every 2 s. */
    typing(thread) {
        const now = Date.now();
        if (now - (this.typingSent.get(thread) ?? 0) < TYPING_EVERY_MS)
            return;
        if (this.sendFrame({ type: "typing", thread }))
            this.typingSent.set(thread, now);
    }
    /** Watch these users' presence too (besides every thread's peer). */
    watch(users) {
        this.extraWatch = users.filter(isUserId);
        this.updateWatch();
    }
    // -- threads -------------------------------------------------------------------------
    /** A thread's model (created, empty, for a new peer; throws `invalid` for a bad id). */
    thread(peerOrThread) {
        return this.ensure(this.resolve(peerOrThread));
    }
    /** Threads with any message or pending send, newest activity first. */
    threadList() {
        const activity = (t) => Math.max(t.lastTs, ...t.outgoing.map((m) => m.ts));
        return [...this.threads.values()]
            .filter((t) => t.cursor !== "0" || t.outgoing.length > 0 || t.messages.size > 0)
            .sort((a, b) => activity(b) - activity(a));
    }
    /** The model of a thread, made on first use: from its snapshot in the store if
     * there is one; `fresh`: a thread the last hello did not list has no events before
     * now (its live events are its whole history). */
    ensure(id, fresh = this.status === "online") {
        let t = this.threads.get(id);
        if (!t) {
            t = new Thread(id, this.me());
            const saved = this.opts.store.get(this.key(`t/${id}`));
            if (saved)
                t.restore(JSON.parse(saved));
            else if (fresh)
                t.loaded = true;
            this.threads.set(id, t);
            if (saved && this.status === "online" && this.caughtUp) {
                // known from the store but not from the hello: catch it up too
                this.syncing.set(id, t.cursor);
                this.sendFrame({ type: "sync", thread: id, after: t.cursor });
            }
            this.updateWatch();
        }
        return t;
    }
    me() {
        if (!this.user)
            throw new DuologueError("not_connected", "connect() first: the user comes from the token");
        return this.user;
    }
    checkBody(body) {
        const points = [...body].length;
        if (!points || points > this.limits.max_body || !body.trim() || body.includes("\u0000")) {
            throw new DuologueError("invalid", `a message is 1-${this.limits.max_body} characters, not only spaces`);
        }
    }
    updateWatch() {
        if (!this.opts.watchPresence || this.status !== "online" || !this.caughtUp || !this.user)
            return;
        const peers = this.threadList().map((t) => t.peer).filter((u) => u !== this.user);
        const users = [...new Set([...this.extraWatch, ...peers])].slice(0, 200).sort();
        if (users.join(",") === this.watched.join(","))
            return;
        this.watched = users;
        this.sendFrame({ type: "watch", users });
    }
    touch(t) {
        this.dirty.add(t);
        this.changed.add(t);
        this.scheduleFlush();
        if (!this.changeTimer) {
            this.changeTimer = setTimeout(() => {
                this.changeTimer = null;
                const changed = [...this.changed];
                this.changed.clear();
                for (const c of changed)
                    this.emit("thread", c);
                this.updateWatch();
            }, CHANGE_MS);
        }
    }
    // -- the store -----------------------------------------------------------------------
    key(name) {
        return `${this.user}/${name}`;
    }
    loadStore() {
        if (this.device)
            return;
        const store = this.opts.store;
        this.device = store.get("device") ?? randomId(this.opts.random);
        store.set("device", this.device);
        const saved = store.get(this.key("outbox"));
        if (saved)
            this.outbox.load(JSON.parse(saved));
        for (const key of store.keys(this.key("t/")))
            this.ensure(key.slice(this.key("t/").length));
        for (const entry of this.outbox.all()) {
            if (entry.frame.type !== "send")
                continue;
            const t = this.ensure(entry.thread);
            const m = outgoingMessage(entry, this.me());
            if (entry.state === "failed")
                Object.assign(m, { state: "failed", error: entry.error });
            t.outgoing.push(m);
        }
    }
    scheduleFlush() {
        if (this.flushTimer)
            return;
        this.flushTimer = setTimeout(() => this.flush(), this.caughtUp ? FLUSH_MS : CATCHING_UP_FLUSH_MS);
    }
    /** Write dirty thread snapshots and the outbox to the store now. */
    flush() {
        if (this.flushTimer)
            clearTimeout(this.flushTimer);
        this.flushTimer = null;
        if (!this.user)
            return;
        for (const t of this.dirty) {
            if (t.loaded && t.cursor !== "0")
                this.opts.store.set(this.key(`t/${t.id}`), JSON.stringify(t.snapshot()));
        }
        this.dirty.clear();
        if (this.outboxDirty)
            this.opts.store.set(this.key("outbox"), JSON.stringify(this.outbox));
        this.outboxDirty = false;
    }
}
function outgoingMessage(entry, me) {
    const f = entry.frame;
    return {
        id: null, clientMsgId: entry.cmid, sender: me, body: f.body, ts: entry.createdAt, editedAt: null,
        deleted: false, replyTo: f.reply_to ?? null, reactions: [], state: "pending", error: null,
    };
}
function randomId(random) {
    let out = "";
    for (let i = 0; i < 10; i++)
        out += "abcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(random() * 36)];
    return out;
}
/** `sub` and `exp` of a JWT (not verified: the server does that). */
export function decodeClaims(token) {
    const part = token.split(".")[1] ?? "";
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
    const claims = JSON.parse(json);
    if (typeof claims.sub !== "string" || typeof claims.exp !== "number") {
        throw new DuologueError("invalid", "the token has no sub or exp claim");
    }
    return { sub: claims.sub, exp: claims.exp };
}
