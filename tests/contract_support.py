"""Every frame and HTTP answer the tests see, checked against the served contracts.

``tests/support.Client`` (and the projector tests' workload) passes each frame it
receives to ``check_frame``; every httpx answer of a documented path goes to
``check_response`` (``check_http_answers``, installed by conftest.py). A mismatch is
recorded and the autouse fixture ``contract_mismatches`` fails the test that saw it.
Validators are compiled once (jsonschema-rs), from the documents the gateway serves
(``gateway.asyncapi``, ``gateway.openapi``: the test of the served bytes is
test_api_docs.py).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs

from adapters.settings import Settings
from gateway.asyncapi import asyncapi
from gateway.openapi import openapi

DATA = Path(__file__).resolve().parent / "data"
MISMATCHES: list[str] = []


@functools.cache
def asyncapi_document() -> dict[str, Any]:
    return asyncapi(Settings())


@functools.cache
def openapi_document() -> dict[str, Any]:
    return openapi(Settings())


def asyncapi_metaschema() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 JSON Schema (from @asyncapi/specs 6.11.1, see data/README.md)."""
    return json.loads((DATA / "asyncapi-3.0.0.schema.json").read_text())


def _validator(document: dict[str, Any], ref: str) -> Any:
    """A validator of ``ref`` resolved inside ``document`` (its components)."""
    return jsonschema_rs.Draft202012Validator(
        {"$ref": ref, "components": document["components"]}, validate_formats=False)


@functools.cache
def server_frame_validators() -> dict[str, Any]:
    """Per frame ``type``: the validator of that server frame's payload."""
    document = asyncapi_document()
    validators = {}
    for ref in document["operations"]["sendServerFrames"]["messages"]:
        message = document["components"]["messages"][ref["$ref"].rsplit("/", 1)[1]]
        validators[message["name"]] = _validator(document, message["payload"]["$ref"])
    return validators


def check_frame(frame: Any) -> None:
    """Record a server frame that the AsyncAPI document does not describe."""
    kind = frame.get("type") if isinstance(frame, dict) else None
    validator = server_frame_validators().get(kind)  # type: ignore[arg-type]
    if validator is None:
        MISMATCHES.append(f"frame of no documented type: {str(frame)[:300]}")
        return
    for error in validator.iter_errors(frame):
        MISMATCHES.append(f"{kind} frame {str(frame)[:300]}: {error.message[:300]} "
                          f"at {list(error.instance_path)}")


@functools.cache
def _operations() -> list[tuple[re.Pattern[str], str, dict[str, Any]]]:
    found = []
    for template, item in openapi_document()["paths"].items():
        pattern = re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$")
        for method, operation in item.items():
            if method != "parameters":
                found.append((pattern, method.upper(), operation))
    return found


@functools.cache
def _body_validator(ref: str) -> Any:
    return _validator(openapi_document(), ref)


def check_response(method: str, path: str, status: int, content_type: str, body: bytes,
                   headers: Mapping[str, str] | None = None) -> None:
    """Record an HTTP answer of a documented path whose status or body is undocumented."""
    found = [op for pattern, verb, op in _operations() if verb == method and pattern.match(path)]
    if not found:
        return  # not a documented operation (405s, 404s of unknown paths)
    operation = found[0]
    where = f"{method} {path} -> {status}"
    answer = operation["responses"].get(str(status))
    if answer is None:
        MISMATCHES.append(f"{where}: status not documented")
        return
    if "$ref" in answer:
        answer = openapi_document()["components"]["responses"][answer["$ref"].rsplit("/")[-1]]
    for name, header in answer.get("headers", {}).items():
        if header.get("required") and headers is not None and name not in headers:
            MISMATCHES.append(f"{where}: no {name} header")
    schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" not in schema:
        return
    if not content_type.startswith("application/json"):
        MISMATCHES.append(f"{where}: {content_type!r}, documented application/json")
        return
    for error in _body_validator(schema["$ref"]).iter_errors(json.loads(body)):
        MISMATCHES.append(f"{where}: {error.message[:300]} at {list(error.instance_path)}")


def take_mismatches() -> list[str]:
    found = list(MISMATCHES)
    MISMATCHES.clear()
    return found


def check_http_answers() -> None:
    """Check every answer httpx reads in the tests (sync and async clients) from now on."""
    sync_send, async_send = httpx.Client.send, httpx.AsyncClient.send
    if getattr(sync_send, "checked", False):
        return

    def send(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = sync_send(self, request, **kw)
        if not kw.get("stream"):
            _check(response)
        return response

    async def asend(self: httpx.AsyncClient, request: httpx.Request,
                    **kw: Any) -> httpx.Response:
        response = await async_send(self, request, **kw)
        if not kw.get("stream"):
            _check(response)
        return response

    send.checked = True  # type: ignore[attr-defined]
    httpx.Client.send = send  # type: ignore[method-assign]
    httpx.AsyncClient.send = asend  # type: ignore[method-assign]


def _check(response: httpx.Response) -> None:
    check_response(response.request.method, response.request.url.path, response.status_code,
                   response.headers.get("content-type", ""), response.content,
                   response.headers)
