"""The WebSocket and HTTP gateway: Starlette app, the Redis event store, live fan-out,
delivery to each connection, and the HTTP read model over Postgres."""
