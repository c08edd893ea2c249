-- v1.1 search (protocol.md section 5, GET /v1/search; docs/search.md).
--
-- One GIN index over a "search document" per live message: the words of its current
-- body, as the `simple` configuration reads them (lower case, no stemming, no stop
-- words), plus lexemes naming its participants, overall and per week. A lexeme the
-- parser makes never contains a space, so these cannot collide with a word:
--   ' alice'         every message of alice's threads
--   ' alice 2810'    those sent in week 2810 (epoch ms / 604800000)
-- A search ANDs the words with the caller's lexeme, so the index finds only the
-- caller's matches; the week lexemes let the newest page be found in the newest weeks
-- without reading every match of a common word (gateway/search.py).

CREATE FUNCTION duologue_search_doc(thread text, id text, body text) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT to_tsvector('simple'::regconfig, coalesce(body, ''))
      || array_to_tsvector(ARRAY[
           ' ' || split_part(thread, ':', 2),
           ' ' || split_part(thread, ':', 3),
           ' ' || split_part(thread, ':', 2) || ' '
               || (split_part(id, '-', 1)::bigint / 604800000)::text,
           ' ' || split_part(thread, ':', 3) || ' '
               || (split_part(id, '-', 1)::bigint / 604800000)::text])
$$;

CREATE INDEX messages_search ON messages
  USING gin (duologue_search_doc(thread, id, body)) WHERE deleted_at IS NULL;
