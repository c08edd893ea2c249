"""The webhook figure's receiver: answers every POST ``204`` at once and records, per
delivery, the wall-clock time its request arrived.

It stands for the app backend, which in production runs on other machines; here it
shares the two cores with what is measured, so it is kept as cheap as a receiver can
be: an ``asyncio.Protocol`` reading HTTP/1.1 requests (keep-alive, ``Content-Length``
bodies) straight off the socket, a few microseconds per request where uvicorn's ASGI
stack costs a good part of a millisecond. It serves only the figure.

``GET /healthz``; ``GET /arrivals`` answers ``{"<Duologue-Delivery>": [epoch s, ...]}``
(every arrival, retries included) and ``DELETE /arrivals`` forgets them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict

ARRIVALS: dict[str, list[float]] = defaultdict(list)
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"


def answer(status: str, body: bytes) -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


class Receiver(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        arrived = time.time()
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return  # the body is read whole, as a real receiver would
            self.buffer = self.buffer[end + 4 + length:]
            method, path, _ = head[0].split(" ", 2)
            assert self.transport is not None
            self.transport.write(self.respond(method, path, headers, arrived))

    @staticmethod
    def respond(method: str, path: str, headers: dict[str, str], arrived: float) -> bytes:
        if method == "POST":
            ARRIVALS[headers.get("duologue-delivery", "")].append(arrived)
            return NO_CONTENT
        if path == "/arrivals" and method == "GET":
            return answer("200 OK", json.dumps(ARRIVALS).encode())
        if path == "/arrivals" and method == "DELETE":
            ARRIVALS.clear()
            return answer("200 OK", b"{}")
        if path == "/healthz":
            return answer("200 OK", b"ok")
        return answer("404 Not Found", b"")


async def serve(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Receiver, host, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
