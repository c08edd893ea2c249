import type { EventFrame, MessageView } from "./protocol.js";
export type MessageState = "pending" | "sent" | "failed";
export interface Reaction {
    emoji: string;
    users: string[];
}
/** A message as a UI shows it. Pending and failed sends have `id: null` and keep
 * their text; a failed one carries the refusal's `error`. */
export interface Message {
    id: string | null;
    clientMsgId: string | null;
    sender: string;
    body: string | null;
    ts: number;
    editedAt: number | null;
    deleted: boolean;
    replyTo: string | null;
    reactions: Reaction[];
    state: MessageState;
    error: {
        code: string;
        message: string;
    } | null;
}
/** What the store keeps per thread (version 1). */
export interface ThreadSnapshot {
    v: 1;
    cursor: string;
    older: string | null;
    messages: Message[];
    readUpTo: Record<string, string>;
    blockedBy: string[];
    lastTs: number;
}
export declare const SNAPSHOT_MESSAGES = 200;
export declare class Thread {
    readonly id: string;
    readonly me: string;
    /** The newest event id applied ("0": none): `sync` resumes after it. */
    cursor: string;
    /** `next_before` for older history over HTTP; null when nothing older is known. */
    older: string | null;
    /** Whether the thread's messages were loaded (history, snapshot, or a full replay). */
    loaded: boolean;
    readonly messages: Map<string, Message>;
    private order;
    /** Sends not acked yet (pending) or refused (failed), in the order they were made. */
    outgoing: Message[];
    readUpTo: Record<string, string>;
    blockedBy: Set<string>;
    lastTs: number;
    constructor(id: string, me: string);
    get peer(): string;
    /** Confirmed messages in stream order, then the outgoing ones. */
    list(): Message[];
    /** The newest message that is not deleted (outgoing ones included). */
    lastMessage(): Message | null;
    /** Messages from the peer after my own receipt, not deleted. */
    unread(): number;
    /** The newest message id from the peer (what a read receipt points at). */
    newestFromPeer(): string | null;
    /** Whether `id` is at or before the peer's receipt (the peer has read it). */
    readByPeer(id: string): boolean;
    /** Fold one event frame; false (and nothing changes) when it is not newer than the
     * cursor, so a replay that overlaps what was applied never doubles anything. */
    apply(frame: EventFrame): boolean;
    /** Replace the confirmed messages with an HTTP history page (newest first, as the
     * API answers); the cursor becomes its `projected_up_to`. Outgoing ones stay. */
    reset(page: MessageView[], projectedUpTo: string, older: string | null): void;
    /** Add an older HTTP page (messages already known are kept as they are). */
    addHistory(page: MessageView[]): void;
    /** Forget everything confirmed (a replay from "0" follows). */
    clear(): void;
    snapshot(): ThreadSnapshot;
    restore(s: ThreadSnapshot): void;
    private put;
}
