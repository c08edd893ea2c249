-- v1.1 offline notifications: the live projector writes one outbox row per batch (a
-- bundle), not one per notification: inside the projection's transaction a row per
-- notification cost a tenth of the projector's rate (docs/benchmarks.md). A bundle's body
-- is a JSON array of `deliveries` notifications; the senders replace each bundle by its
-- notifications' own rows (one statement: the bundle is deleted, its rows inserted with its
-- created_at) before they claim them, so leases, retries and dead rows stay per
-- notification. A row with deliveries = 1 is one notification, as before.
ALTER TABLE webhook_outbox ADD COLUMN deliveries integer NOT NULL DEFAULT 1;

-- the senders' search for bundles to split, oldest first
CREATE INDEX webhook_outbox_bundles ON webhook_outbox (seq) WHERE deliveries > 1;
