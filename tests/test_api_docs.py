"""/openapi.json and /asyncapi.json: served without a token, valid OpenAPI 3.1 and AsyncAPI 3,
and complete (every frame, every error code, every route). That every frame and answer the
suite sees matches them is checked for each test (tests/contract_support.py)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import get_args

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from domain.errors import InvalidError
from domain.ids import check_body, check_emoji, event_key
from gateway import api_rules
from gateway.errors import STATUS
from schemas.client import CLIENT_TYPES
from schemas.server import ServerFrame
from tests.contract_support import asyncapi_metaschema, check_frame, take_mismatches
from tests.support import GatewayProcess, uid


@pytest.fixture(scope="module")
def documents(redis_url: str, log_dir) -> Iterator[dict[str, dict]]:
    """The documents as a gateway serves them (with a body limit of its own)."""
    gateway = GatewayProcess({"REDIS_URL": redis_url, "DUOLOGUE_PREFIX": uid("docs"),
                              "DUOLOGUE_MAX_BODY": "1234"}).start(log_dir)
    found = {}
    try:
        for name in ("openapi", "asyncapi"):
            answer = httpx.get(f"{gateway.http_url}/{name}.json", timeout=10)  # no token
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == "application/json"
            found[name] = answer.json()
    finally:
        gateway.terminate()
    yield found


def test_openapi_is_valid_openapi_3_1(documents):
    document = documents["openapi"]
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)


def test_an_invalid_openapi_document_is_refused(documents):
    broken = copy.deepcopy(documents["openapi"])
    broken["paths"]["/v1/threads"]["get"]["responses"]["200"].pop("description")
    with pytest.raises(OpenAPIValidationError):
        validate_openapi(broken)


def test_asyncapi_is_valid_asyncapi_3(documents):
    document = documents["asyncapi"]
    assert document["asyncapi"] == "3.0.0"
    jsonschema.Draft7Validator(asyncapi_metaschema()).validate(document)


def test_an_invalid_asyncapi_document_is_refused(documents):
    meta = jsonschema.Draft7Validator(asyncapi_metaschema())
    broken = copy.deepcopy(documents["asyncapi"])
    event = broken["components"]["schemas"]["EventFrame"]["properties"]["event"]
    event["discriminator"] = {"propertyName": "kind"}  # OpenAPI's form, not AsyncAPI's
    assert not meta.is_valid(broken)
    broken = copy.deepcopy(documents["asyncapi"])
    broken["operations"]["sendServerFrames"]["action"] = "publish"  # AsyncAPI 2's word
    assert not meta.is_valid(broken)


def test_every_message_payload_is_a_valid_json_schema(documents):
    document = documents["asyncapi"]
    for name, message in document["components"]["messages"].items():
        payload = document["components"]["schemas"][message["payload"]["$ref"].split("/")[-1]]
        jsonschema.Draft7Validator.check_schema(payload)
        assert payload["type"] == "object", name


def test_asyncapi_names_every_frame_and_error_code(documents):
    document = documents["asyncapi"]
    messages = document["components"]["messages"]
    received = {messages[ref["$ref"].split("/")[-1]]["name"]
                for ref in document["operations"]["receiveClientFrames"]["messages"]}
    sent = {messages[ref["$ref"].split("/")[-1]]["name"]
            for ref in document["operations"]["sendServerFrames"]["messages"]}
    assert received == CLIENT_TYPES
    assert sent == {cls.__struct_config__.tag for cls in get_args(ServerFrame)}
    codes = set(document["components"]["schemas"]["Error"]["properties"]["code"]["enum"])
    assert codes == {"bad_frame", "unknown_type", "invalid", "forbidden", "not_found",
                     "rate_limited", "unavailable", "blocked", "internal"}
    error = document["components"]["schemas"]["Error"]["properties"]
    assert error["retry_after_ms"]["type"] == "integer"
    hello = document["components"]["schemas"]["Hello"]
    assert hello["properties"]["more_threads"]["type"] == "boolean"
    assert "more_threads" not in hello["required"]


def test_the_documents_use_the_gateways_settings(documents):
    send = documents["asyncapi"]["components"]["schemas"]["Send"]["properties"]["body"]
    post = documents["openapi"]["components"]["schemas"]["PostMessage"]["properties"]["body"]
    assert send["maxLength"] == post["maxLength"] == 1234


def test_openapi_names_every_route_status_and_code(documents):
    document = documents["openapi"]
    assert set(document["paths"]) == {
        "/v1/threads", "/v1/threads/{thread}/messages", "/v1/presence", "/v1/search",
        "/healthz", "/readyz", "/metrics", "/openapi.json", "/asyncapi.json"}
    threads = document["paths"]["/v1/threads"]["get"]
    assert {p["name"] for p in threads["parameters"]} == {"limit", "before"}
    listing = document["components"]["schemas"]["ThreadList"]
    assert "next_before" in listing["properties"]
    post = document["paths"]["/v1/threads/{thread}/messages"]["post"]["responses"]
    assert set(post) == {"201", "400", "401", "403", "404", "413", "429", "503"}
    limited = document["components"]["responses"]["429"]
    assert limited["headers"]["Retry-After"]["required"] is True
    codes = document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"]
    assert set(codes) == set(STATUS)
    assert document["paths"]["/healthz"]["get"]["security"] == []
    assert document["security"] == [{"bearer": []}]


def test_a_frame_the_document_does_not_describe_is_a_mismatch():
    check_frame({"type": "ack", "ref": "c-1", "thread": "dm:alice:bob", "id": "5-0", "ts": 5,
                 "duplicate": False})
    assert take_mismatches() == []
    check_frame({"type": "ack", "ref": "c-1", "thread": "dm:alice", "id": "05-0", "ts": 5})
    check_frame({"type": "gossip"})
    found = take_mismatches()
    assert len(found) == 4, found  # the thread, the id, the missing field, the type


def test_the_body_and_emoji_patterns_say_what_the_domain_checks():
    """Character by character, over all of Unicode: the regex is no wider and no narrower
    than domain.ids (regex engines disagree on \\s, so the document spells it out)."""
    body = re.compile(api_rules.body(4000)["pattern"])
    emoji = re.compile(api_rules.EMOJI["pattern"])
    for code in range(0x110000):
        char = chr(code)
        assert (body.fullmatch(char) is not None) == _accepted(check_body, char, 4000), code
        assert (emoji.fullmatch(char) is not None) == _accepted(check_emoji, char), code


def test_the_event_id_pattern_is_a_stream_id_of_two_u64():
    pattern = re.compile(api_rules.EVENT_ID["pattern"])
    top = 2**64 - 1
    for value in ("0", "1-0", f"{top}-{top}", f"{top}-0", "1732467890123-0", f"{top + 1}-0",
                  f"0-{top + 1}", "01-0", "1-00", "-1-0", "1", "1-", "0-0",
                  "99999999999999999999-0"):
        assert (pattern.fullmatch(value) is not None) == _accepted(event_key, value), value


def _accepted(check, *args) -> bool:
    try:
        check(*args)
    except InvalidError:
        return False
    return True
