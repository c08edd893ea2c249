// duologue-client: a TypeScript client for Duologue (docs/client.md).

export { Duologue, decodeClaims } from "./client.js";
export type { DuologueEvents, DuologueOptions, PresenceInfo, SocketFactory, SocketLike, Status, TokenProvider } from "./client.js";
export { Emitter } from "./emitter.js";
export { DuologueError, Http } from "./http.js";
export { compareIds, isUserId, msOf, peerOf, threadOf } from "./ids.js";
export type { Command, OutboxEntry } from "./outbox.js";
export * from "./protocol.js";
export { LocalStorageStore, MemoryStore } from "./store.js";
export type { Store, WebStorage } from "./store.js";
export { SNAPSHOT_MESSAGES, Thread } from "./thread.js";
export type { Message, MessageState, Reaction, ThreadSnapshot } from "./thread.js";
