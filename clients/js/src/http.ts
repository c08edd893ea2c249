// The HTTP API (protocol.md sections 3 and 5) with the caller's token.

import type { ErrorBody, MessagePage, PresenceList, SearchResults, ThreadList } from "./protocol.js";

/** A refusal with its contract code (`invalid`, `forbidden`, `rate_limited`, ...;
 * `network` when the server could not be reached). */
export class DuologueError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly status = 0,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = "DuologueError";
  }
}

export class Http {
  constructor(
    private readonly base: string,
    private readonly token: () => Promise<string>,
    private readonly fetchImpl: typeof fetch,
  ) {}

  async get<T>(path: string, query: Record<string, string | number | null | undefined> = {}): Promise<T> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== null && v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    let answer: Response;
    try {
      answer = await this.fetchImpl(`${this.base}${path}${qs ? "?" + qs : ""}`, {
        headers: { Authorization: `Bearer ${await this.token()}` },
      });
    } catch (err) {
      throw new DuologueError("network", `could not reach the server: ${(err as Error).message}`);
    }
    const body: unknown = await answer.json().catch(() => null);
    if (!answer.ok) {
      const error = (body as ErrorBody | null)?.error;
      const retry = answer.headers.get("Retry-After");
      throw new DuologueError(error?.code ?? "unavailable", error?.message ?? `HTTP ${answer.status}`,
        answer.status, retry ? Number(retry) * 1000 : null);
    }
    return body as T;
  }

  /** One page of a thread's history, newest first (`before`: the previous `next_before`). */
  messages(thread: string, limit: number, before: string | null = null): Promise<MessagePage> {
    return this.get(`/v1/threads/${encodeURIComponent(thread)}/messages`, { limit, before });
  }

  threads(): Promise<ThreadList> {
    return this.get("/v1/threads");
  }

  search(q: string, options: { thread?: string; before?: string; limit?: number } = {}): Promise<SearchResults> {
    return this.get("/v1/search", { q, ...options });
  }

  presence(users: string[]): Promise<PresenceList> {
    return this.get("/v1/presence", { users: users.join(",") });
  }
}
