"""The webhook figure's receiver: a bare ASGI app under uvicorn that answers every POST
``204`` at once and records, per delivery, the wall-clock time the request arrived.

``GET /healthz``; ``GET /arrivals`` answers ``{"<Duologue-Delivery>": [epoch s, ...]}``
(every arrival, retries included) and ``DELETE /arrivals`` forgets them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import uvicorn

ARRIVALS: dict[str, list[float]] = defaultdict(list)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    arrived = time.time()
    method, path = scope["method"], scope["path"]
    more = True
    while more:  # the body is read whole, as a real receiver would
        message = await receive()
        more = message.get("more_body", False)
    body = b""
    status = 204
    if method == "POST":
        delivery = next((v.decode() for k, v in scope["headers"]
                         if k == b"duologue-delivery"), "")
        ARRIVALS[delivery].append(arrived)
    elif path == "/arrivals" and method == "GET":
        status, body = 200, json.dumps(ARRIVALS).encode()
    elif path == "/arrivals" and method == "DELETE":
        ARRIVALS.clear()
    elif path == "/healthz":
        status, body = 200, b"ok"
    else:
        status = 404
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None,
                            access_log=False, lifespan="off", server_header=False,
                            date_header=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
