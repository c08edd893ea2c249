// Commands not acked yet: each keeps its client_msg_id, so resending it after a
// dropped socket, a timeout or a rate limit appends nothing twice (protocol.md
// section 2: commands are idempotent per client_msg_id for at least 24 hours).

import type { Block, Delete, Edit, React, Read, Send, Unblock, Unreact } from "./protocol.js";

export type Command = Send | Edit | Delete | Read | React | Unreact | Block | Unblock;

export interface OutboxEntry {
  cmid: string;
  thread: string;
  frame: Command;
  /** pending: to be sent or resent until acked; failed: refused, kept for `retry`. */
  state: "pending" | "failed";
  error: { code: string; message: string } | null;
  /** Epoch ms of the last time it went out on a socket (0: not on this socket). */
  sentAt: number;
  attempts: number;
  /** Not before this epoch ms (an `unavailable` answer backs the entry off). */
  notBefore: number;
  createdAt: number;
}

export class Outbox {
  private readonly entries = new Map<string, OutboxEntry>();

  add(frame: Command, now: number): OutboxEntry {
    const entry: OutboxEntry = {
      cmid: frame.client_msg_id, thread: frame.thread ?? "", frame, state: "pending", error: null,
      sentAt: 0, attempts: 0, notBefore: 0, createdAt: now,
    };
    this.entries.set(entry.cmid, entry);
    return entry;
  }

  get(cmid: string): OutboxEntry | undefined {
    return this.entries.get(cmid);
  }

  remove(cmid: string): OutboxEntry | undefined {
    const entry = this.entries.get(cmid);
    this.entries.delete(cmid);
    return entry;
  }

  all(): OutboxEntry[] {
    return [...this.entries.values()];
  }

  /** Pending entries in the order they were made. */
  pending(): OutboxEntry[] {
    return this.all().filter((e) => e.state === "pending");
  }

  /** In flight: sent on the current socket and not answered yet. */
  inFlight(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === "pending" && e.sentAt) n++;
    return n;
  }

  /** A new socket: nothing is in flight on it. */
  rewind(): void {
    for (const e of this.entries.values()) e.sentAt = 0;
  }

  toJSON(): OutboxEntry[] {
    return this.all();
  }

  load(entries: OutboxEntry[]): void {
    for (const e of entries) this.entries.set(e.cmid, { ...e, sentAt: 0 });
  }
}

/** A command before the client gives it its client_msg_id. */
export type Unsent = { [K in Command["type"]]: Omit<Extract<Command, { type: K }>, "client_msg_id"> }[Command["type"]];
