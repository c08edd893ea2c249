"""The WebSocket protocol under uvicorn, with the server's ``permessage-deflate`` policy.

Browsers always offer ``permessage-deflate``. Kept between messages ("context
takeover"), a socket's zlib streams cost tens of KiB even while it is idle, which is
most of a chat server's sockets' lives. ``DUOLOGUE_WS_COMPRESSION`` chooses:

- ``per-message`` (default): compress each message on its own (no context takeover
  either way), so an idle socket keeps no zlib state at all; frames are still
  compressed, only without the dictionary of earlier messages;
- ``context``: uvicorn's own setting, context kept with 4 KiB windows (``max_window_bits``
  12) and ``memLevel`` 5: smaller frames for long conversations, more memory per socket;
- ``off``: never negotiate compression.

The figures behind the default are in docs/benchmarks.md ("permessage-deflate").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.server import ServerProtocol

WINDOW_BITS, MEM_LEVEL = 12, 5


def extensions(policy: str) -> list[ServerExtensionFactory]:
    if policy == "off":
        return []
    per_message = policy == "per-message"
    return [ServerPerMessageDeflateFactory(
        server_no_context_takeover=per_message, client_no_context_takeover=per_message,
        server_max_window_bits=WINDOW_BITS, client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEM_LEVEL})]


def protocol_class(policy: str) -> type[asyncio.Protocol]:
    """uvicorn's ``websockets-sansio`` protocol negotiating deflate as ``policy`` says."""

    class DeflatePolicyProtocol(WebSocketsSansIOProtocol):
        def __init__(self, config: Config, server_state: ServerState,
                     app_state: dict[str, Any],
                     _loop: asyncio.AbstractEventLoop | None = None) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self.conn = ServerProtocol(extensions=extensions(policy),
                                       max_size=self.config.ws_max_size,
                                       logger=logging.getLogger("uvicorn.error"))

    return DeflatePolicyProtocol
