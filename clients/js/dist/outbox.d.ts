import type { Block, Delete, Edit, React, Read, Send, Unblock, Unreact } from "./protocol.js";
export type Command = Send | Edit | Delete | Read | React | Unreact | Block | Unblock;
export interface OutboxEntry {
    cmid: string;
    thread: string;
    frame: Command;
    /** pending: to be sent or resent until acked; failed: refused, kept for `retry`. */
    state: "pending" | "failed";
    error: {
        code: string;
        message: string;
    } | null;
    /** Epoch ms of the last time it went out on a socket (0: not on this socket). */
    sentAt: number;
    attempts: number;
    /** Not before this epoch ms (an `unavailable` answer backs the entry off). */
    notBefore: number;
    createdAt: number;
}
export declare class Outbox {
    private readonly entries;
    add(frame: Command, now: number): OutboxEntry;
    get(cmid: string): OutboxEntry | undefined;
    remove(cmid: string): OutboxEntry | undefined;
    all(): OutboxEntry[];
    /** Pending entries in the order they were made. */
    pending(): OutboxEntry[];
    /** In flight: sent on the current socket and not answered yet. */
    inFlight(): number;
    /** A new socket: nothing is in flight on it. */
    rewind(): void;
    toJSON(): OutboxEntry[];
    load(entries: OutboxEntry[]): void;
}
/** A command before the client gives it its client_msg_id. */
export type Unsent = {
    [K in Command["type"]]: Omit<Extract<Command, {
        type: K;
    }>, "client_msg_id">;
}[Command["type"]];
