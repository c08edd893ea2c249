// Commands not acked yet: each keeps its client_msg_id, so resending it after a
// dropped socket, a timeout or a rate limit appends nothing twice (protocol.md
// section 2: commands are idempotent per client_msg_id for at least 24 hours).
export class Outbox {
    entries = new Map();
    add(frame, now) {
        const entry = {
            cmid: frame.client_msg_id, thread: frame.thread ?? "", frame, state: "pending", error: null,
            sentAt: 0, attempts: 0, notBefore: 0, createdAt: now,
        };
        this.entries.set(entry.cmid, entry);
        return entry;
    }
    get(cmid) {
        return this.entries.get(cmid);
    }
    remove(cmid) {
        const entry = this.entries.get(cmid);
        this.entries.delete(cmid);
        return entry;
    }
    all() {
        return [...this.entries.values()];
    }
    /** Pending entries in the order they were made. */
    pending() {
        return this.all().filter((e) => e.state === "pending");
    }
    /** In flight: sent on the current socket and not answered yet. */
    inFlight() {
        let n = 0;
        for (const e of this.entries.values())
            if (e.state === "pending" && e.sentAt)
                n++;
        return n;
    }
    /** A new socket: nothing is in flight on it. */
    rewind() {
        for (const e of this.entries.values())
            e.sentAt = 0;
    }
    toJSON() {
        return this.all();
    }
    load(entries) {
        for (const e of entries)
            this.entries.set(e.cmid, { ...e, sentAt: 0 });
    }
}
