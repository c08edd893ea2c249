-- v1.1 offline notifications (protocol.md section 6, docs/webhooks.md): the outbox.
-- The live projector inserts a row in the same transaction as the batch that projects the
-- MessageSent it is about (its recipient was offline): one row per event, by construction
-- (only events projected for the first time are enqueued). The webhook senders of the
-- projector processes POST it and delete it on a 2xx. A row still failing RETRY_FOR seconds
-- after it was enqueued stays, with dead_at set (counted by `duologue status`).
CREATE TABLE webhook_outbox (
  seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  id          text        NOT NULL,     -- "<thread>/<event id>": the Duologue-Delivery header
  body        text        NOT NULL,     -- the exact JSON POSTed (and signed); recipient etc.
                                        -- are in it: body::json->>'recipient'
  created_at  timestamptz NOT NULL DEFAULT now(),  -- the retry window starts here
  next_at     timestamptz NOT NULL DEFAULT now(),  -- due then; a claim pushes it past its lease
  attempts    integer     NOT NULL DEFAULT 0,      -- POSTs begun (a claim counts one)
  leased_by   text,                                -- the sender that claimed it last
  last_error  text,                                -- why the last attempt failed
  dead_at     timestamptz                          -- retried for RETRY_FOR s, never a 2xx
);

-- the senders' claim: due rows, oldest due first
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_at) WHERE dead_at IS NULL;
