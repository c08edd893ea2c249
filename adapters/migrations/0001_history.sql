-- The event archive, the projection tables, the projector's bookkeeping and the
-- read-only analyst role. Event ids sort through their numeric `key` columns:
-- key = ms * 10^20 + seq (see duologue_event_key below).

CREATE FUNCTION duologue_event_key(id text) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT CASE WHEN id = '0' THEN 0::numeric
    ELSE split_part(id, '-', 1)::numeric * 100000000000000000000
         + split_part(id, '-', 2)::numeric END
$$;

CREATE FUNCTION duologue_ts(ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT 'epoch'::timestamptz + ms * interval '1 millisecond'
$$;

CREATE FUNCTION duologue_ms(at timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
  SELECT (extract(epoch FROM at) * 1000)::bigint
$$;

-- The raw archive: every event of every thread, exactly once.
CREATE TABLE events (
  thread   text        NOT NULL,
  id       text        NOT NULL,
  key      numeric(40) NOT NULL,
  kind     text        NOT NULL,
  payload  jsonb       NOT NULL,
  ts       timestamptz NOT NULL,
  archived bigint      GENERATED ALWAYS AS IDENTITY,
  CONSTRAINT events_pkey PRIMARY KEY (thread, key)
);
-- archived only grows: a BRIN index finds the newest rows (rebuild's catch-up) for
-- almost no cost per insert.
CREATE INDEX events_archived ON events USING brin (archived);

-- Current state of every message: edits applied, deletes marked.
CREATE TABLE messages (
  thread     text        NOT NULL,
  id         text        NOT NULL,
  key        numeric(40) NOT NULL,
  sender     text        NOT NULL,
  body       text,
  sent_at    timestamptz NOT NULL,
  edited_at  timestamptz,
  deleted_at timestamptz,
  CONSTRAINT messages_pkey PRIMARY KEY (thread, key)
);

-- One row per thread: its participants and its newest projected event.
CREATE TABLE threads (
  thread     text        NOT NULL,
  user_a     text        NOT NULL,
  user_b     text        NOT NULL,
  last_id    text        NOT NULL,
  last_key   numeric(40) NOT NULL,
  first_at   timestamptz NOT NULL,
  last_at    timestamptz NOT NULL,
  events     bigint      NOT NULL,
  CONSTRAINT threads_pkey PRIMARY KEY (thread)
);
CREATE INDEX threads_user_a ON threads (user_a, last_key DESC);
CREATE INDEX threads_user_b ON threads (user_b, last_key DESC);

-- Each participant's newest read receipt.
CREATE TABLE read_receipts (
  thread     text        NOT NULL,
  reader     text        NOT NULL,
  up_to      text        NOT NULL,
  up_to_key  numeric(40) NOT NULL,
  event_id   text        NOT NULL,
  read_at    timestamptz NOT NULL,
  CONSTRAINT read_receipts_pkey PRIMARY KEY (thread, reader)
);

-- The projector's durable position in each partition log (compare-and-set).
CREATE TABLE projector_checkpoints (
  stream     text        PRIMARY KEY,  -- the partition log's Redis key
  partition  integer     NOT NULL,
  log_id     text        NOT NULL DEFAULT '0',
  log_key    numeric(40) NOT NULL DEFAULT 0,
  events     bigint      NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Projector workers and the partitions each one owns. A worker is alive while its
-- Postgres session (backend_pid) exists: its advisory locks live exactly as long.
CREATE TABLE projector_workers (
  name         text        PRIMARY KEY,
  pid          integer     NOT NULL,
  backend_pid  integer     NOT NULL,
  host         text        NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  prefix       text        NOT NULL,
  partitions   integer[]   NOT NULL DEFAULT '{}'
);

-- Entries the projector could not decode or apply; the partition moved on.
CREATE TABLE dead_letters (
  seq       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  stream    text        NOT NULL,
  partition integer     NOT NULL,
  log_id    text        NOT NULL,
  thread    text,
  event_id  text,
  payload   text,
  reason    text        NOT NULL,
  at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (stream, log_id)
);

-- Roles are cluster-wide: create the analyst role only where no database did yet (so a
-- migrating role without CREATEROLE works once it exists).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'duologue_analyst') THEN
    BEGIN
      CREATE ROLE duologue_analyst LOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
      RETURN;  -- another migration created it a moment ago
    END;
    ALTER ROLE duologue_analyst SET default_transaction_read_only = on;
  END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO duologue_analyst;
GRANT SELECT ON events, messages, threads, read_receipts, projector_checkpoints,
  projector_workers, dead_letters, schema_migrations TO duologue_analyst;
-- Tables created later by the owner (rebuild's fresh projection tables) are readable too.
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO duologue_analyst;
