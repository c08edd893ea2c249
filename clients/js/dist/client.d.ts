import { Emitter } from "./emitter.js";
import { Http } from "./http.js";
import { type Command, type OutboxEntry } from "./outbox.js";
import type { Ack, ErrorFrame, EventFrame, Hello } from "./protocol.js";
import { type Store } from "./store.js";
import { type Message, Thread } from "./thread.js";
export type TokenProvider = () => string | Promise<string>;
export type Status = "offline" | "connecting" | "online";
/** The part of the WebSocket API the client uses (browsers' and Node's global one). */
export interface SocketLike {
    readonly readyState: number;
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onopen: ((ev: unknown) => void) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => void) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
}
export type SocketFactory = new (url: string) => SocketLike;
export interface DuologueOptions {
    /** The gateway, e.g. `http://127.0.0.1:8000` (WebSocket at `/v1/ws`, HTTP under `/v1`). */
    url: string;
    /** Called before every connect and before the token expires; returns a JWT. */
    token: TokenProvider;
    /** Where thread snapshots, cursors and the outbox are kept (default: memory). */
    store?: Store;
    /** Newest messages loaded over HTTP for a thread seen for the first time (default
     * 50); `false`: never use HTTP history (a first sync replays from "0"). */
    history?: number | false;
    WebSocket?: SocketFactory;
    fetch?: typeof fetch;
    /** Reconnect delays: a random delay in [d/2, d], d doubling from `minMs` up to `maxMs`. */
    backoff?: {
        minMs?: number;
        maxMs?: number;
    };
    /** Resend a command not acked after this long on an open socket (default 10 s). */
    ackTimeoutMs?: number;
    /** Commands in flight at once (default 16) and syncs in flight at once (default 100). */
    window?: number;
    syncWindow?: number;
    /** Watch the presence of every thread's peer (default true). */
    watchPresence?: boolean;
    /** Random numbers in [0, 1) for jitter and ids (default Math.random). */
    random?: () => number;
}
export interface PresenceInfo {
    user: string;
    online: boolean;
    lastSeen: number | null;
}
export interface DuologueEvents {
    status: {
        status: Status;
        retryInMs: number | null;
        closeCode: number | null;
    };
    hello: Hello;
    /** Every event once, after it was folded into its thread (live or replayed). */
    event: EventFrame;
    /** A thread's messages, receipts, blocks or outgoing sends changed (coalesced). */
    thread: Thread;
    synced: {
        thread: string;
        lastId: string;
        recovered: boolean;
    };
    /** Every known thread is synced after a connect (`ms`: since the hello). */
    caughtUp: {
        threads: number;
        ms: number;
    };
    /** The thread was reloaded after `recovered:false` (HTTP history, else a full replay). */
    reloaded: {
        thread: string;
        from: "http" | "stream";
    };
    ack: Ack;
    /** A command was refused for good (not `rate_limited`/`unavailable`: those are retried). */
    refused: {
        entry: OutboxEntry;
        code: string;
        message: string;
    };
    /** Every `error` frame, retried ones included. */
    error: ErrorFrame;
    typing: {
        thread: string;
        user: string;
    };
    presence: PresenceInfo;
    refreshed: {
        exp: number;
    };
}
export declare class Duologue extends Emitter<DuologueEvents> {
    readonly http: Http;
    /** The signed-in user (from the token, then the hello). */
    user: string | null;
    status: Status;
    limits: {
        max_body: number;
        max_frame: number;
    };
    readonly presence: Map<string, PresenceInfo>;
    private readonly opts;
    private readonly Socket;
    private readonly threads;
    private readonly outbox;
    private ws;
    private wanted;
    private attempt;
    private reconnectTimer;
    private token;
    private refreshTimer;
    private helloAt;
    private syncQueue;
    private syncing;
    private syncHeld;
    private resyncTimer;
    private reloading;
    private caughtUp;
    private pausedUntil;
    private paceMs;
    private lastSent;
    private pumpTimer;
    private ackTimer;
    private typingSent;
    private watched;
    private extraWatch;
    private changed;
    private changeTimer;
    private dirty;
    private outboxDirty;
    private flushTimer;
    private seq;
    private device;
    constructor(options: DuologueOptions);
    /** Start (and keep) a connection; resolves once the token is known (not the hello). */
    connect(): Promise<void>;
    /** Close the connection and stay offline until `connect` (the outbox is kept). */
    disconnect(): void;
    /** Everything stopped: no timer left (Node exits). */
    close(): void;
    private open;
    private scheduleReconnect;
    private afterClose;
    private clearTimers;
    private setStatus;
    private sendFrame;
    private newToken;
    private currentToken;
    private scheduleRefresh;
    /** Ask the provider for a new token and hand it to the open connection. */
    refresh(): Promise<void>;
    private handle;
    private onHello;
    private onEvent;
    private onAck;
    private onError;
    private pumpSyncs;
    /** A sync (or watch) was refused, `rate_limited` or `unavailable`: its error has no
     * ref, so every sync still unanswered goes back to the queue, and the queue waits
     * long enough for the read budget to take them all (one `retry_after_ms` each). A
     * sync that was in fact accepted answers later, and is ignored; its events are not
     * folded twice (the cursor). */
    private resync;
    private onSynced;
    /** Load a thread's newest messages over HTTP, then sync after `projected_up_to`;
     * without HTTP history, forget the thread and replay it from "0". */
    private reload;
    /** Older messages of a thread over HTTP (false when there are none). */
    loadOlder(thread: string, limit?: number): Promise<boolean>;
    private pump;
    private checkAcks;
    private enqueue;
    private newId;
    /** Commands not acked yet and refused ones kept for `retry`. */
    pendingCommands(): OutboxEntry[];
    /** Send a refused command again, with its client_msg_id. */
    retry(cmid: string): void;
    /** Drop a refused command (its message leaves the thread). Returns its frame. */
    discard(cmid: string): Command | null;
    /** The thread of `peerOrThread` (a user id or a `dm:` thread id); throws `invalid`. */
    resolve(peerOrThread: string): string;
    /** Queue a message; it shows as pending at once, sent when acked, failed if refused. */
    send(peerOrThread: string, body: string, options?: {
        replyTo?: string | null;
    }): Message;
    edit(thread: string, target: string, body: string): OutboxEntry;
    delete(thread: string, target: string): OutboxEntry;
    react(thread: string, target: string, emoji: string): OutboxEntry;
    unreact(thread: string, target: string, emoji: string): OutboxEntry;
    block(thread: string): OutboxEntry;
    unblock(thread: string): OutboxEntry;
    /** Send a read receipt up to the peer's newest message, if it moves mine forward. */
    markRead(thread: string): OutboxEntry | null;
    /** Tell the peer I am typing: at most one frame per thread every 2 s. */
    typing(thread: string): void;
    /** Watch these users' presence too (besides every thread's peer). */
    watch(users: string[]): void;
    /** A thread's model (created, empty, for a new peer; throws `invalid` for a bad id). */
    thread(peerOrThread: string): Thread;
    /** Threads with any message or pending send, newest activity first. */
    threadList(): Thread[];
    /** The model of a thread, made on first use: from its snapshot in the store if
     * there is one; `fresh`: a thread the last hello did not list has no events before
     * now (its live events are its whole history). */
    private ensure;
    private me;
    private checkBody;
    private updateWatch;
    private touch;
    private key;
    private loadStore;
    private scheduleFlush;
    /** Write dirty thread snapshots and the outbox to the store now. */
    flush(): void;
}
/** `sub` and `exp` of a JWT (not verified: the server does that). */
export declare function decodeClaims(token: string): {
    sub: string;
    exp: number;
};
