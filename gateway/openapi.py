"""The OpenAPI 3.1 document of the HTTP API (protocol.md sections 3, 5 and 8).

Bodies are the msgspec Structs of ``schemas.http`` through
``msgspec.json.schema_components``, with the value rules of ``gateway.api_rules``;
error codes and statuses come from the one table in ``gateway/errors.py``. Built once
per app from its settings (``max_body`` is the server's own).
"""

from __future__ import annotations

from typing import Any

import msgspec

from adapters.settings import Settings
from gateway import api_rules as rules
from gateway.errors import STATUS
from schemas.http import (
    ErrorBody,
    Health,
    MessagePage,
    Posted,
    PostMessage,
    PresenceList,
    Readiness,
    SearchResults,
    ThreadList,
)

Schema = dict[str, Any]
REF = "#/components/schemas/{name}"
BODIES = (ThreadList, MessagePage, Posted, PostMessage, ErrorBody, PresenceList, SearchResults,
          Health, Readiness)
WHY = {400: "invalid or bad_frame: a parameter or the body breaks a rule",
       401: "no token, or a token that does not verify",
       403: "forbidden (not a participant) or blocked (by the other participant)",
       404: "not_found: a reply_to that is not a message of the thread",
       413: "too_large: a request body over max_frame bytes",
       429: "rate_limited: over the per-user rate; retry after Retry-After seconds",
       503: "unavailable: Redis or Postgres cannot answer now; nothing was changed"}


def openapi(settings: Settings) -> Schema:
    (_, *_), components = msgspec.json.schema_components(BODIES, ref_template=REF)
    rules.apply_rules(components, rules.field_rules())
    rules.apply_rules({"PostMessage": components["PostMessage"]},
                      rules.field_rules(settings.max_body))
    components["ErrorDetail"]["properties"]["code"]["enum"] = sorted(STATUS)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Duologue HTTP API", "version": "1.1",
                 "description": "The HTTP half of the wire contract (protocol.md sections 3, "
                                "5 and 8). The WebSocket (GET /v1/ws) is described by the "
                                "AsyncAPI document at /asyncapi.json."},
        "paths": paths(),
        "components": {"schemas": components, "responses": error_responses(),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                           "description": "HS256 JWT with the claims sub (user id) and exp"}}},
        "security": [{"bearer": []}],
    }


def paths() -> Schema:
    thread_path = {"name": "thread", "in": "path", "required": True, "schema": rules.THREAD}
    return {
        "/v1/threads": {"get": read(
            "The caller's threads, newest activity first, a page at a time",
            "ThreadList", [query("limit", {"type": "integer", "minimum": 1, "default": 500},
                                 "above 500 is served as 500"),
                           query("before", {"type": "string", "minLength": 1},
                                 "the next_before of the previous page (an opaque cursor: "
                                 "one this API did not make is 400 invalid)")])},
        "/v1/threads/{thread}/messages": {
            "parameters": [thread_path],
            "get": read("A page of the thread's messages, newest first", "MessagePage",
                        [query("before", rules.EVENT_ID), query("after", rules.EVENT_ID),
                         query("limit", {"type": "integer", "minimum": 1, "default": 50},
                               "above 200 is treated as 200")], 403),
            "post": post_message()},
        "/v1/presence": {"get": read(
            "What the caller may know of each user's presence", "PresenceList",
            [query("users", {"type": "string", "pattern": users_pattern()},
                   "comma-separated user ids, at most 200")])},
        "/v1/search": {"get": read(
            "The caller's messages whose current body matches every word of q",
            "SearchResults", search_parameters(), 403)},
        "/healthz": {"get": ops("The process is alive", json_body("Health"))},
        "/readyz": {"get": ops("Redis and Postgres are reachable", json_body("Readiness"),
                               {"503": {"description": "Redis or Postgres is not reachable",
                                        **json_body("Readiness")}})},
        "/metrics": {"get": ops("Prometheus metrics",
                                {"content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/openapi.json": {"get": ops("This document", document())},
        "/asyncapi.json": {"get": ops("The AsyncAPI 3 document of the WebSocket", document())},
    }


def query(name: str, schema: Schema, description: str = "", required: bool = False) -> Schema:
    parameter = {"name": name, "in": "query", "required": required, "schema": schema}
    return {**parameter, "description": description} if description else parameter


def users_pattern() -> str:
    user = rules.USER
    return f"^(?:{user}(?:,{user}){{0,{rules.MAX_WATCHED - 1}}})?$"


def search_parameters() -> list[Schema]:
    cursor = f"^(?:{rules.THREAD_RE}/)?{rules.EVENT_ID_RE}$"
    # q with no word (`!!!`, `*`) is 400 invalid (docs/search.md): what a word is, is
    # Postgres's parser's to say, which no portable regex can (\w differs by engine)
    q = {"type": "string", "minLength": 1, "maxLength": 200}
    return [query("q", q, "the words to find (letters and digits; none is 400 invalid); a "
                          "trailing * matches a prefix", required=True),
            query("thread", rules.THREAD, "only this thread (403 for a non-participant)"),
            query("before", {"type": "string", "pattern": cursor},
                  "an event id, or the next_before of the previous page"),
            query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 20})]


def read(summary: str, body: str, parameters: list[Schema], *statuses: int) -> Schema:
    return {"summary": summary, "parameters": parameters,
            "responses": {"200": {"description": summary, **json_body(body)},
                          **errors(400, 401, *statuses, 429, 503)}}


def post_message() -> Schema:
    return {"summary": "Send a message (an integration's send: the rules and idempotency of "
                       "the WebSocket send; a repeat answers 201 with duplicate:true)",
            "requestBody": {"required": True, **json_body("PostMessage")},
            "responses": {"201": {"description": "appended (or a repeat)",
                                  **json_body("Posted")},
                          **errors(400, 401, 403, 404, 413, 429, 503)}}


def ops(summary: str, ok: Schema, more: Schema | None = None) -> Schema:
    return {"summary": summary, "security": [],
            "responses": {"200": {"description": summary, **ok}, **(more or {})}}


def json_body(name: str) -> Schema:
    return {"content": {"application/json": {"schema": {"$ref": REF.format(name=name)}}}}


def document() -> Schema:
    return {"content": {"application/json": {"schema": {"type": "object"}}}}


def errors(*statuses: int) -> Schema:
    return {str(status): {"$ref": f"#/components/responses/{status}"} for status in statuses}


def error_responses() -> Schema:
    answers: Schema = {}
    for status, why in WHY.items():
        codes = sorted(code for code, s in STATUS.items() if s == status)
        answer = {"description": f"{why} (code: {', '.join(codes)})", **json_body("ErrorBody")}
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        if status == 429:
            answer["headers"] = {"Retry-After": {
                "required": True, "description": "seconds to wait before retrying",
                "schema": {"type": "integer", "minimum": 1}}}
        answers[str(status)] = answer
    return answers
