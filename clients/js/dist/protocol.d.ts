/** A client -> server frame (protocol.md sections 2, 5). */
export type ClientFrame = Send | Edit | Delete | Read | Sync | Typing | Refresh | React | Unreact | Block | Unblock | Watch;
/** A server -> client frame (protocol.md sections 2, 5). */
export type ServerFrame = Hello | EventFrame | Ack | Synced | TypingNotice | Refreshed | ErrorFrame | PresenceFrame;
/** A stored event, the `event` of an `event` frame. */
export type Event = MessageSent | MessageEdited | MessageDeleted | ReadUpTo | ReactionAdded | ReactionRemoved | ThreadBlocked | ThreadUnblocked;
export interface Send {
    type: "send";
    body: string;
    client_msg_id: string;
    to?: string | null;
    thread?: string | null;
    reply_to?: string | null;
}
export interface Edit {
    type: "edit";
    thread: string;
    target: string;
    body: string;
    client_msg_id: string;
}
export interface Delete {
    type: "delete";
    thread: string;
    target: string;
    client_msg_id: string;
}
export interface Read {
    type: "read";
    thread: string;
    up_to: string;
    client_msg_id: string;
}
export interface Sync {
    type: "sync";
    thread: string;
    after: string;
}
export interface Typing {
    type: "typing";
    thread: string;
}
export interface Refresh {
    type: "refresh";
    token: string;
}
export interface React {
    type: "react";
    thread: string;
    target: string;
    emoji: string;
    client_msg_id: string;
}
export interface Unreact {
    type: "unreact";
    thread: string;
    target: string;
    emoji: string;
    client_msg_id: string;
}
export interface Block {
    type: "block";
    thread: string;
    client_msg_id: string;
}
export interface Unblock {
    type: "unblock";
    thread: string;
    client_msg_id: string;
}
export interface Watch {
    type: "watch";
    users: string[];
}
export interface Hello {
    type: "hello";
    user: string;
    threads: ThreadSummary[];
    limits: Limits;
    more_threads?: boolean;
}
export interface ThreadSummary {
    thread: string;
    with: string;
    last_id: string;
}
export interface Limits {
    max_body: number;
    max_frame: number;
}
export interface EventFrame {
    type: "event";
    thread: string;
    id: string;
    ts: number;
    event: MessageSent | MessageEdited | MessageDeleted | ReadUpTo | ReactionAdded | ReactionRemoved | ThreadBlocked | ThreadUnblocked;
}
export interface MessageSent {
    kind: "MessageSent";
    sender: string;
    body: string;
    client_msg_id: string;
    reply_to?: string | null;
}
export interface MessageEdited {
    kind: "MessageEdited";
    sender: string;
    target: string;
    body: string;
    client_msg_id: string;
}
export interface MessageDeleted {
    kind: "MessageDeleted";
    sender: string;
    target: string;
    client_msg_id: string;
}
export interface ReadUpTo {
    kind: "ReadUpTo";
    reader: string;
    up_to: string;
}
export interface ReactionAdded {
    kind: "ReactionAdded";
    sender: string;
    target: string;
    emoji: string;
    client_msg_id: string;
}
export interface ReactionRemoved {
    kind: "ReactionRemoved";
    sender: string;
    target: string;
    emoji: string;
    client_msg_id: string;
}
export interface ThreadBlocked {
    kind: "ThreadBlocked";
    by: string;
    client_msg_id: string;
}
export interface ThreadUnblocked {
    kind: "ThreadUnblocked";
    by: string;
    client_msg_id: string;
}
export interface Ack {
    type: "ack";
    ref: string;
    thread: string;
    id: string;
    ts: number;
    duplicate: boolean;
}
export interface Synced {
    type: "synced";
    thread: string;
    last_id: string;
    recovered: boolean;
}
export interface TypingNotice {
    type: "typing";
    thread: string;
    user: string;
}
export interface Refreshed {
    type: "refreshed";
    exp: number;
}
export interface ErrorFrame {
    type: "error";
    code: string;
    message: string;
    ref?: string | null;
    retry_after_ms?: number;
}
export interface PresenceFrame {
    type: "presence";
    user: string;
    online: boolean;
    last_seen: number | null;
}
export interface ThreadList {
    threads: ThreadView[];
    next_before?: string | null;
}
export interface ThreadView {
    thread: string;
    with: string;
    last_id: string;
    last_message: MessageView | null;
    unread: number;
    blocked_by?: string[];
}
export interface MessageView {
    id: string;
    sender: string;
    body: string | null;
    sent_at: number;
    edited_at: number | null;
    deleted: boolean;
    reply_to?: string | null;
    reactions?: Reaction[];
}
export interface Reaction {
    emoji: string;
    users: string[];
}
export interface MessagePage {
    thread: string;
    messages: MessageView[];
    projected_up_to: string;
    next_before: string | null;
}
export interface Posted {
    id: string;
    ts: number;
    duplicate: boolean;
}
export interface ErrorBody {
    error: ErrorDetail;
}
export interface ErrorDetail {
    code: string;
    message: string;
}
export interface PresenceList {
    presence: PresenceView[];
}
export interface PresenceView {
    user: string;
    online: boolean;
    last_seen: number | null;
}
export interface SearchResults {
    results: SearchHit[];
    next_before: string | null;
}
export interface SearchHit {
    thread: string;
    id: string;
    sender: string;
    body: string;
    sent_at: number;
    edited_at: number | null;
    reply_to: string | null;
}
export interface PostMessage {
    body: string;
    client_msg_id: string;
    reply_to?: string | null;
}
/** Every `type` a server frame may have. */
export declare const SERVER_TYPES: readonly ["hello", "event", "ack", "synced", "typing", "refreshed", "error", "presence"];
/** Every `kind` an event may have. */
export declare const EVENT_KINDS: readonly ["MessageSent", "MessageEdited", "MessageDeleted", "ReadUpTo", "ReactionAdded", "ReactionRemoved", "ThreadBlocked", "ThreadUnblocked"];
