-- v1.1 conversation features (protocol.md section 5): replies, reactions, blocks.
-- Current state, like `messages`: a removed reaction or a lifted block has no row.

ALTER TABLE messages ADD COLUMN reply_to text;  -- id of a MessageSent of the same thread

-- One row per reaction present: `user` reacted to message `message_id` with `emoji`.
-- ("user" is an SQL keyword: quote it, e.g. SELECT "user", emoji FROM reactions.)
CREATE TABLE reactions (
  thread      text        NOT NULL,
  message_id  text        NOT NULL,
  message_key numeric(40) NOT NULL,
  "user"      text        NOT NULL,
  emoji       text        NOT NULL,
  reacted_at  timestamptz NOT NULL,
  event_id    text        NOT NULL,  -- the ReactionAdded
  event_key   numeric(40) NOT NULL,
  CONSTRAINT reactions_pkey PRIMARY KEY (thread, message_key, "user", emoji)
);

-- One row per block that stands: participant `by` blocks `thread` since `since`.
CREATE TABLE blocks (
  thread   text        NOT NULL,
  by       text        NOT NULL,
  since    timestamptz NOT NULL,
  event_id text        NOT NULL,  -- the ThreadBlocked
  CONSTRAINT blocks_pkey PRIMARY KEY (thread, by)
);

GRANT SELECT ON reactions, blocks TO duologue_analyst;
