"""Refusing a WebSocket upgrade while it is still an HTTP request.

A user whose read budget is spent is refused the handshake with HTTP 429 (protocol.md
section 8; ``gateway.session``). A client that ignores ``Retry-After`` and retries in a
loop, one socket or many, makes hundreds of such handshakes a second. Through the whole
upgrade path each costs ~180 us of the event loop: the WebSocket protocol object, the
request parsed a second time by websockets, the ASGI application, Starlette's denial
response. Ten sockets retrying in step put those in front of every other connection's
frames at once, and the other users' delivery p99 paid for it (docs/benchmarks.md, "a
hostile user").

Here a well-formed upgrade is answered by uvicorn's HTTP protocol itself, before any of
that, when the answer is known without Redis: the token verifies (as the endpoint checks
it, remembered once verified) and the user's read budget is known spent until later
(``EventStore.reads_refused_ms``), or this process holds every one of the user's socket
places (``SocketCaps.full``). The answer is the endpoint's 429: the same status, header
fields and body (only ``Date`` and the wait in the message can differ). Every other
upgrade goes the usual way, and so does one the screen fails on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote

import httptools
import structlog
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from adapters.tokens import bearer

log = structlog.get_logger("duologue.ws")
Screen = Callable[[str, str, str], Response | None]  # (path, token, client) -> refusal | None


def http_protocol_class(screen: Screen) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol answering an upgrade early when ``screen`` refuses it."""
    return type("ScreenedHttpProtocol", (ScreenedHttpProtocol,), {"screen": staticmethod(screen)})


class ScreenedHttpProtocol(HttpToolsProtocol):
    screen: Screen

    def handle_websocket_upgrade(self) -> None:
        refusal = None
        try:
            refusal = self._refusal()
        except Exception:  # never the reason an upgrade goes unanswered: the usual way
            log.exception("upgrade_screen_failed")
        if refusal is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        self.transport.write(rendered(refusal, self.server_state.default_headers))
        self.transport.close()

    def _refusal(self) -> Response | None:
        """The screen's answer to a well-formed upgrade (a GET over HTTP/1.1 with its
        WebSocket headers, nothing before it on the connection still unanswered); None
        for anything else, which websockets answers (400, 426...) as before."""
        if self.cycle is not None and not self.cycle.response_complete:
            return None
        if self.scope["method"] != "GET" or self.parser.get_http_version() != "1.1":
            return None
        headers = self.scope["headers"]
        if not any(n == b"sec-websocket-key" for n, _ in headers) or \
                (b"sec-websocket-version", b"13") not in headers:
            return None
        parsed = httptools.parse_url(self.url)
        if parsed.path is None:
            return None
        path = unquote(parsed.path.decode("ascii", "replace"))  # as the router matches it
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
        return self.screen(path, _token(parsed.query, headers), client)


def _token(query: bytes | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's token as ``gateway.session`` reads it: ``Authorization: Bearer``,
    else the last ``token`` of the query string."""
    header = next((v.decode("latin-1") for n, v in headers if n == b"authorization"), None)
    if token := bearer(header):
        return token
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True) if query else []
    return dict(pairs).get("token", "")


def rendered(response: Response, server_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A Starlette response as one HTTP/1.1 message that closes the connection, with the
    server's own headers (``Date``) as uvicorn adds them."""
    out = [STATUS_LINE[response.status_code]]
    for name, value in [*server_headers, *response.raw_headers]:
        out += [name, b": ", value, b"\r\n"]
    out += [b"connection: close\r\n\r\n", bytes(response.body)]
    return b"".join(out)

