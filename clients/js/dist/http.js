// The HTTP API (protocol.md sections 3 and 5) with the caller's token.
/** A refusal with its contract code (`invalid`, `forbidden`, `rate_limited`, ...;
 * `network` when the server could not be reached). */
export class DuologueError extends Error {
    code;
    status;
    retryAfterMs;
    constructor(code, message, status = 0, retryAfterMs = null) {
        super(message);
        this.code = code;
        this.status = status;
        this.retryAfterMs = retryAfterMs;
        this.name = "DuologueError";
    }
}
export class Http {
    base;
    token;
    fetchImpl;
    constructor(base, token, fetchImpl) {
        this.base = base;
        this.token = token;
        this.fetchImpl = fetchImpl;
    }
    async get(path, query = {}) {
        const params = new URLSearchParams();
        for (const [k, v] of Object.entries(query))
            if (v !== null && v !== undefined)
                params.set(k, String(v));
        const qs = params.toString();
        let answer;
        try {
            answer = await this.fetchImpl(`${this.base}${path}${qs ? "?" + qs : ""}`, {
                headers: { Authorization: `Bearer ${await this.token()}` },
            });
        }
        catch (err) {
            throw new DuologueError("network", `could not reach the server: ${err.message}`);
        }
        const body = await answer.json().catch(() => null);
        if (!answer.ok) {
            const error = body?.error;
            const retry = answer.headers.get("Retry-After");
            throw new DuologueError(error?.code ?? "unavailable", error?.message ?? `HTTP ${answer.status}`, answer.status, retry ? Number(retry) * 1000 : null);
        }
        return body;
    }
    /** One page of a thread's history, newest first (`before`: the previous `next_before`). */
    messages(thread, limit, before = null) {
        return this.get(`/v1/threads/${encodeURIComponent(thread)}/messages`, { limit, before });
    }
    threads() {
        return this.get("/v1/threads");
    }
    search(q, options = {}) {
        return this.get("/v1/search", { q, ...options });
    }
    presence(users) {
        return this.get("/v1/presence", { users: users.join(",") });
    }
}
