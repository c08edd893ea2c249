// Ids of the contract (protocol.md section 1): user ids, thread ids, event ids.
const USER_ID = /^[A-Za-z0-9_.-]{1,64}$/;
/** A valid user id: 1-64 characters of `[A-Za-z0-9_.-]`. */
export function isUserId(value) {
    return USER_ID.test(value);
}
/** The thread of two users: `dm:<a>:<b>` with the ids sorted bytewise. */
export function threadOf(a, b) {
    return a < b ? `dm:${a}:${b}` : `dm:${b}:${a}`;
}
/** The other participant of `thread` for `me` (`me` for a note-to-self thread). */
export function peerOf(thread, me) {
    const [, a, b] = thread.split(":");
    return a === me ? b : a;
}
function parts(id) {
    const dash = id.indexOf("-");
    if (dash < 0)
        return [Number(id), 0];
    return [Number(id.slice(0, dash)), Number(id.slice(dash + 1))];
}
/** Compare two event ids of one thread in stream order (negative: `a` is older). */
export function compareIds(a, b) {
    const [am, as] = parts(a);
    const [bm, bs] = parts(b);
    return am !== bm ? am - bm : as - bs;
}
/** The epoch milliseconds an event id was appended at. */
export function msOf(id) {
    return parts(id)[0];
}
