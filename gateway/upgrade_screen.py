"""Refusing a WebSocket upgrade while it is still an HTTP request.

A user whose read budget is spent is refused the handshake with HTTP 429 (protocol.md
section 8; ``gateway.session``). A client that ignores ``Retry-After`` and retries in a
loop, one socket or many, makes hundreds of such handshakes a second. Through the whole
upgrade path each costs ~180 us of the event loop: the WebSocket protocol object, the
request parsed a second time by websockets, the ASGI application, Starlette's denial
response. Ten sockets retrying in step put those in front of every other connection's
frames at once, and the other users' delivery p99 paid for it (docs/benchmarks.md, "a
hostile user").

Here the upgrade is answered by uvicorn's HTTP protocol itself, before any of that, when
the answer is already known without Redis: the token is one this process has verified
and the user's read budget is known spent until later (``EventStore.reads_refused_ms``).
The answer is the same 429, byte for byte in status, headers and body, as the endpoint
gives. Every other upgrade goes the usual way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl, unquote

import httptools
from starlette.responses import Response
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from adapters.tokens import bearer

Screen = Callable[[str, str, str], Response | None]  # (path, token, client) -> refusal | None


def http_protocol_class(screen: Callable[[], Screen | None]) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol answering an upgrade early when ``screen()`` (the
    running gateway's check, None before it starts) refuses it."""
    return type("ScreenedHttpProtocol", (ScreenedHttpProtocol,), {"screen": staticmethod(screen)})


class ScreenedHttpProtocol(HttpToolsProtocol):
    screen: Callable[[], Screen | None]

    def handle_websocket_upgrade(self) -> None:
        check = self.screen()
        refusal = None
        if check is not None:
            path, token = _path_and_token(self.url, self.scope["headers"])
            if self.root_path and path.startswith(self.root_path):
                path = path[len(self.root_path):]  # as the router matches it
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "-"
            refusal = check(path, token, client)
        if refusal is None:
            super().handle_websocket_upgrade()
            return
        self.connections.discard(self)
        self.transport.write(rendered(refusal, self.server_state.default_headers))
        self.transport.close()


def _path_and_token(url: bytes, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str]:
    """The request's path and its token (``Authorization: Bearer``, else ``?token=``), as
    ``gateway.session`` reads them."""
    parsed = httptools.parse_url(url)
    path = unquote(parsed.path.decode("ascii", "replace"))
    header = next((v.decode("latin-1") for n, v in headers if n == b"authorization"), None)
    if token := bearer(header):
        return path, token
    query = parsed.query.decode("latin-1") if parsed.query else ""
    return path, dict(parse_qsl(query, keep_blank_values=True)).get("token", "")


def rendered(response: Response, server_headers: list[tuple[bytes, bytes]]) -> bytes:
    """A Starlette response as one HTTP/1.1 message that closes the connection, with the
    server's own headers (``Date``) as uvicorn adds them."""
    out = [STATUS_LINE[response.status_code]]
    for name, value in [*server_headers, *response.raw_headers]:
        out += [name, b": ", value, b"\r\n"]
    out += [b"connection: close\r\n\r\n", bytes(response.body)]
    return b"".join(out)

