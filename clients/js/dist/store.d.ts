/** A string key-value store. `MemoryStore` and `LocalStorageStore` implement it; an
 * app can pass its own (IndexedDB behind a cache, a file, SQLite...). */
export interface Store {
    get(key: string): string | null;
    set(key: string, value: string): void;
    delete(key: string): void;
    keys(prefix: string): string[];
}
/** Kept in memory: lives as long as the object (share one between clients to resume). */
export declare class MemoryStore implements Store {
    private readonly data;
    get(key: string): string | null;
    set(key: string, value: string): void;
    delete(key: string): void;
    keys(prefix: string): string[];
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
export declare class LocalStorageStore implements Store {
    private readonly prefix;
    private readonly storage;
    constructor(prefix?: string, storage?: WebStorage);
    get(key: string): string | null;
    set(key: string, value: string): void;
    delete(key: string): void;
    keys(prefix: string): string[];
}
