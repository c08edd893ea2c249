"""Prometheus metrics of one gateway app, in a registry of its own.

A per-app ``CollectorRegistry`` (not the global one) so that several apps in one
process, as in tests, never collide.
"""

from __future__ import annotations

import time

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.logs import clip

log = structlog.get_logger("duologue.http")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.http_requests = Counter(
            "duologue_http_requests", "HTTP requests answered, by route template.",
            ["route", "method", "status"], registry=registry)
        self.http_latency = Histogram(
            "duologue_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["route", "method"], buckets=FAST, registry=registry)
        self.ws_connections = Gauge(
            "duologue_ws_connections", "WebSocket connections open.", registry=registry)
        self.ws_refused = Counter(
            "duologue_ws_refused", "WebSocket handshakes refused, by reason (token, "
            "read_budget, max_sockets) and where: 'upgrade', answered while still an HTTP "
            "request, or 'endpoint'.", ["reason", "where"], registry=registry)
        self.commands = Counter(
            "duologue_commands", "Client commands (WebSocket frames and HTTP sends) by result.",
            ["type", "result"], registry=registry)
        self.appends = Histogram(
            "duologue_append_duration_seconds", "Time for an append to Redis to answer.",
            buckets=FAST, registry=registry)

    def command(self, kind: str, result: str) -> None:
        self.commands.labels(kind, result).inc()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition the scraper asked for (Prometheus text unless OpenMetrics)."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type


class HttpMetricsMiddleware:
    """Count and time every HTTP request by route template; one log line per /v1 request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, sending)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"] if scope["method"] in METHODS else "other"
        self.metrics.http_requests.labels(route, method, str(status)).inc()
        self.metrics.http_latency.labels(route, method).observe(seconds)
        if route.startswith("/v1/"):
            log.info("http_request", method=method, route=route, path=clip(scope["path"]),
                     status=status, ms=round(seconds * 1000, 2),
                     user=scope.get("state", {}).get("user"))
