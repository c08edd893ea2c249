"""``GET /v1/presence?users=bob,carol`` (protocol.md section 5, HTTP additions): what the
caller may know of each user's presence, by the rules of the ``presence`` frame.

``users`` is a comma-separated list (several ``users`` parameters are joined); missing or
empty is an empty answer; a duplicate is answered once, at its first place; more than 200
names as given (duplicates counted) or a name that is not a user id is 400 ``invalid``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from domain.errors import InvalidError
from domain.ids import check_user_id
from gateway.http_api import authenticate_read
from gateway.http_errors import api, json_response
from gateway.node import Gateway
from gateway.presence_read import presence_of
from gateway.presence_watch import MAX_WATCHED
from schemas.http import PresenceList, PresenceView


def parse_users(values: list[str]) -> list[str]:
    names = [name for value in values if value != "" for name in value.split(",")]
    if len(names) > MAX_WATCHED:
        raise InvalidError(f"at most {MAX_WATCHED} users, got {len(names)}")
    for name in names:
        check_user_id(name)
    return list(dict.fromkeys(names))


@api
async def presence(request: Request) -> Response:
    user = await authenticate_read(request)
    gateway: Gateway = request.app.state.gateway
    users = parse_users(request.query_params.getlist("users"))
    found = await presence_of(gateway.redis, gateway.keys, user, users,
                              gateway.settings.presence_lease_ms)
    return json_response(PresenceList(presence=[
        PresenceView(user=name, online=online, last_seen=last_seen)
        for name, (online, last_seen) in found]))
