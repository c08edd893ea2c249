-- v1.1 retention (protocol.md section 7): the projector removes idle threads' events from
-- Redis once they are archived. It finds them by their last activity, and remembers per
-- partition log up to which moment it has swept.
CREATE INDEX threads_last_at ON threads (last_at);
ALTER TABLE projector_checkpoints
  ADD COLUMN swept_to timestamptz NOT NULL DEFAULT 'epoch';
