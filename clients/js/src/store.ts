// Where the client keeps what must outlive a page or a process: per thread, the last
// event id applied with a snapshot of the newest messages; the outbox; a device id.

/** A string key-value store. `MemoryStore` and `LocalStorageStore` implement it; an
 * app can pass its own (IndexedDB behind a cache, a file, SQLite...). */
export interface Store {
  get(key: string): string | null;
  set(key: string, value: string): void;
  delete(key: string): void;
  keys(prefix: string): string[];
}

/** Kept in memory: lives as long as the object (share one between clients to resume). */
export class MemoryStore implements Store {
  private readonly data = new Map<string, string>();

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  set(key: string, value: string): void {
    this.data.set(key, value);
  }

  delete(key: string): void {
    this.data.delete(key);
  }

  keys(prefix: string): string[] {
    return [...this.data.keys()].filter((k) => k.startsWith(prefix));
  }
}

/** The subset of the Web Storage API `LocalStorageStore` uses. */
export interface WebStorage {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** Browser `localStorage` (or any Web Storage), every key under `prefix`. A full
 * storage (quota) is survived: the write is dropped and the client works from memory. */
export class LocalStorageStore implements Store {
  constructor(
    private readonly prefix = "duologue:",
    private readonly storage: WebStorage = (globalThis as { localStorage?: WebStorage }).localStorage!,
  ) {
    if (!storage) throw new Error("LocalStorageStore: no localStorage here; pass a WebStorage");
  }

  get(key: string): string | null {
    return this.storage.getItem(this.prefix + key);
  }

  set(key: string, value: string): void {
    try {
      this.storage.setItem(this.prefix + key, value);
    } catch {
      // quota exceeded: keep working from memory
    }
  }

  delete(key: string): void {
    this.storage.removeItem(this.prefix + key);
  }

  keys(prefix: string): string[] {
    const out: string[] = [];
    for (let i = 0; i < this.storage.length; i++) {
      const key = this.storage.key(i);
      if (key !== null && key.startsWith(this.prefix + prefix)) out.push(key.slice(this.prefix.length));
    }
    return out;
  }
}
