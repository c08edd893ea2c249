"""The projector: Redis partition logs into Postgres history (arrives with the next issue)."""
