import type { MessagePage, PresenceList, SearchResults, ThreadList } from "./protocol.js";
/** A refusal with its contract code (`invalid`, `forbidden`, `rate_limited`, ...;
 * `network` when the server could not be reached). */
export declare class DuologueError extends Error {
    readonly code: string;
    readonly status: number;
    readonly retryAfterMs: number | null;
    constructor(code: string, message: string, status?: number, retryAfterMs?: number | null);
}
export declare class Http {
    private readonly base;
    private readonly token;
    private readonly fetchImpl;
    constructor(base: string, token: () => Promise<string>, fetchImpl: typeof fetch);
    get<T>(path: string, query?: Record<string, string | number | null | undefined>): Promise<T>;
    /** One page of a thread's history, newest first (`before`: the previous `next_before`). */
    messages(thread: string, limit: number, before?: string | null): Promise<MessagePage>;
    threads(): Promise<ThreadList>;
    search(q: string, options?: {
        thread?: string;
        before?: string;
        limit?: number;
    }): Promise<SearchResults>;
    presence(users: string[]): Promise<PresenceList>;
}
