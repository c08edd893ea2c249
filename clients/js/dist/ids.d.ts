/** A valid user id: 1-64 characters of `[A-Za-z0-9_.-]`. */
export declare function isUserId(value: string): boolean;
/** The thread of two users: `dm:<a>:<b>` with the ids sorted bytewise. */
export declare function threadOf(a: string, b: string): string;
/** The other participant of `thread` for `me` (`me` for a note-to-self thread). */
export declare function peerOf(thread: string, me: string): string;
/** Compare two event ids of one thread in stream order (negative: `a` is older). */
export declare function compareIds(a: string, b: string): number;
/** The epoch milliseconds an event id was appended at. */
export declare function msOf(id: string): number;
