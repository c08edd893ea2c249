"""The WebSocket gateway: Starlette app, Redis event store adapter, live fan-out."""
