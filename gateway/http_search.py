"""``GET /v1/search`` (protocol.md section 5; the rules and decisions in docs/search.md)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from domain.errors import InvalidError
from gateway.http_api import authenticate_read, history_of
from gateway.http_errors import api, json_response
from gateway.search import parse_before, parse_limit, search
from schemas.http import SearchResults


@api
async def search_messages(request: Request) -> Response:
    user = await authenticate_read(request)
    query = request.query_params
    q = query.get("q")
    if q is None:
        raise InvalidError("q is required: the words to search for")
    limit = parse_limit(query.get("limit"))
    before = parse_before(query.get("before"))
    hits, next_before = await search(history_of(request), user, q, query.get("thread"),
                                     before, limit)
    return json_response(SearchResults(results=hits, next_before=next_before))
