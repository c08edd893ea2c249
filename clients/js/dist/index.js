// duologue-client: a TypeScript client for Duologue (docs/client.md).
export { Duologue, decodeClaims } from "./client.js";
export { Emitter } from "./emitter.js";
export { DuologueError, Http } from "./http.js";
export { compareIds, isUserId, msOf, peerOf, threadOf } from "./ids.js";
export * from "./protocol.js";
export { LocalStorageStore, MemoryStore } from "./store.js";
export { SNAPSHOT_MESSAGES, Thread } from "./thread.js";
