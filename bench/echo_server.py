"""The ceiling: a bare Starlette WebSocket echo app under uvicorn, configured like the gateway.

Same uvicorn options as ``gateway.runner.build`` (``ws="websockets-sansio"``, same
frame limit and ping interval, no access log); no Redis, no JSON, no auth.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def healthz(_: Request) -> Response:
    return PlainTextResponse("ok")


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            await ws.send_text(await ws.receive_text())
    except WebSocketDisconnect:
        return


app = Starlette(routes=[Route("/healthz", healthz), WebSocketRoute("/v1/ws", echo)])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo_server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    config = uvicorn.Config(
        app, host=args.host, port=args.port, ws="websockets-sansio", ws_max_size=65536,
        ws_ping_interval=20.0, ws_ping_timeout=20.0, log_config=None, access_log=False,
        lifespan="off", server_header=False)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
