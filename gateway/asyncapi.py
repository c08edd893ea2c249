"""The AsyncAPI 3 document of the WebSocket ``GET /v1/ws`` (protocol.md sections 2, 5, 8).

One channel; the server receives every client frame and sends every server frame, each
a message whose payload is its msgspec Struct (``schemas.client``, ``schemas.server``)
through ``msgspec.json.schema_components``, with the value rules of
``gateway.api_rules``. The ``error`` frame's ``code`` lists every code a socket can be
told, from the one table in ``gateway/errors.py``.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from adapters.settings import Settings
from gateway import api_rules as rules
from gateway.errors import STATUS
from schemas.client import ClientFrame
from schemas.server import ServerFrame

Schema = dict[str, Any]
REF = "#/components/schemas/{name}"
HTTP_ONLY = frozenset({"unauthorized", "too_large", "method_not_allowed"})
CLIENT = get_args(ClientFrame)
SERVER = get_args(ServerFrame)


def asyncapi(settings: Settings) -> Schema:
    _, components = msgspec.json.schema_components(CLIENT + SERVER, ref_template=REF)
    rules.apply_rules(components, rules.field_rules())
    client = {cls.__name__: components[cls.__name__] for cls in CLIENT}
    rules.apply_rules(client, rules.field_rules(settings.max_body))
    components["Watch"]["properties"]["users"]["maxItems"] = rules.MAX_WATCHED
    components["Error"]["properties"]["code"]["enum"] = ws_codes()
    _plain_discriminators(components)
    messages = {cls.__name__: message(cls) for cls in CLIENT + SERVER}
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Duologue WebSocket", "version": "1.1", "description": DESCRIPTION},
        "defaultContentType": "application/json",
        "channels": {"ws": {
            "address": "/v1/ws", "title": "One user's connection",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            "bindings": {"ws": HANDSHAKE},
        }},
        "operations": {
            "receiveClientFrames": operation("receive", CLIENT, "Frames a client sends"),
            "sendServerFrames": operation("send", SERVER, "Frames the server sends"),
        },
        "components": {"schemas": components, "messages": messages,
                       "securitySchemes": SECURITY},
    }


DESCRIPTION = (
    "UTF-8 JSON text frames, one object each, tagged by `type`. A frame over max_frame "
    "bytes (hello.limits) closes the socket with 1009. Close codes: 1000 normal, 1001 "
    "server shutting down, 1008 policy (token expired, too many refusals), 1009 frame too "
    "large, 1011 internal error, 1013 slow consumer. A handshake with a bad token is "
    "refused with HTTP 403; over the user's sockets (DUOLOGUE_MAX_SOCKETS) or read budget, "
    "with HTTP 429 and Retry-After. The HTTP API is described at /openapi.json.")

HANDSHAKE = {  # the HTTP request that opens the socket: a token in one of two places
    "method": "GET", "bindingVersion": "0.1.0",
    "query": {"type": "object", "properties": {"token": {
        "type": "string", "description": "the token, for browsers (never logged)"}}},
    "headers": {"type": "object", "properties": {"Authorization": {
        "type": "string", "pattern": "^Bearer ", "description": "Bearer <token>"}}},
}

SECURITY = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "Authorization: Bearer <token> on the handshake"},
    "token": {"type": "httpApiKey", "name": "token", "in": "query",
              "description": "?token=<token> for browsers"},
}


def ws_codes() -> list[str]:
    return sorted(code for code in STATUS if code not in HTTP_ONLY)


def message(cls: type) -> Schema:
    tag = cls.__struct_config__.tag  # type: ignore[attr-defined]
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    found: Schema = {"name": tag, "title": f"{tag} frame",
                     "payload": {"$ref": REF.format(name=cls.__name__)}}
    return {**found, "summary": doc} if doc else found


def operation(action: str, frames: tuple[type, ...], summary: str) -> Schema:
    return {"action": action, "channel": {"$ref": "#/channels/ws"}, "summary": summary,
            "security": [{"$ref": f"#/components/securitySchemes/{name}"} for name in SECURITY],
            "messages": [{"$ref": f"#/channels/ws/messages/{cls.__name__}"} for cls in frames]}


def _plain_discriminators(node: Any) -> None:
    """AsyncAPI's ``discriminator`` is the tag's property name (OpenAPI's is an object)."""
    if isinstance(node, dict):
        if isinstance(node.get("discriminator"), dict):
            node["discriminator"] = node["discriminator"]["propertyName"]
        for value in node.values():
            _plain_discriminators(value)
    elif isinstance(node, list):
        for value in node:
            _plain_discriminators(value)
