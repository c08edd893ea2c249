"""Adapters shared by gateway and projector: settings, the Redis record format, Postgres
(connection and migrations), tokens, logging. They import ``domain`` and ``schemas``,
never ``gateway``, ``projector`` or the command line."""
