"""The projector: reads each partition log from its Postgres checkpoint and applies it
to the archive and the projection exactly once in effect; retention, the seal after a
Redis restart, and the operator tools (status, replay, rebuild, verify)."""
