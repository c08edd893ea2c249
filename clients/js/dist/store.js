// Where the client keeps what must outlive a page or a process: per thread, the last
// event id applied with a snapshot of the newest messages; the outbox; a device id.
/** Kept in memory: lives as long as the object (share one between clients to resume). */
export class MemoryStore {
    data = new Map();
    get(key) {
        return this.data.get(key) ?? null;
    }
    set(key, value) {
        this.data.set(key, value);
    }
    delete(key) {
        this.data.delete(key);
    }
    keys(prefix) {
        return [...this.data.keys()].filter((k) => k.startsWith(prefix));
    }
}
/** Browser `localStorage` (or any Web Storage), every key under `prefix`. A full
 * storage (quota) is survived: the write is dropped and the client works from memory. */
export class LocalStorageStore {
    prefix;
    storage;
    constructor(prefix = "duologue:", storage = globalThis.localStorage) {
        this.prefix = prefix;
        this.storage = storage;
        if (!storage)
            throw new Error("LocalStorageStore: no localStorage here; pass a WebStorage");
    }
    get(key) {
        return this.storage.getItem(this.prefix + key);
    }
    set(key, value) {
        try {
            this.storage.setItem(this.prefix + key, value);
        }
        catch {
            // quota exceeded: keep working from memory
        }
    }
    delete(key) {
        this.storage.removeItem(this.prefix + key);
    }
    keys(prefix) {
        const out = [];
        for (let i = 0; i < this.storage.length; i++) {
            const key = this.storage.key(i);
            if (key !== null && key.startsWith(this.prefix + prefix))
                out.push(key.slice(this.prefix.length));
        }
        return out;
    }
}
