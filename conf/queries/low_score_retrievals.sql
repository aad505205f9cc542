-- Retrieval spans whose best document scored low: questions the retriever had no good answer for.
--
-- The top score is the highest document score a retrieval span reports, from either
--   OTel GenAI:    gen_ai.retrieval.documents = JSON [{"id": ..., "score": ...}, ...]
--   OpenInference: retrieval.documents.<i>.document.score
-- Scores are the retriever's own (cosine similarity, BM25, reranker relevance): pick max_score for
-- yours. Retrieval spans that report no score are left out unless include_unscored is true.
--
-- param: since INTERVAL = 24 hours -- how far back from now
-- param: max_score DOUBLE = 0.5 -- spans whose top score is below this
-- param: include_unscored BOOLEAN = false -- also list retrieval spans that report no score
-- param: limit INTEGER = 100 -- how many spans, lowest score first
--
-- tracelake query --saved low_score_retrievals --param max_score=0.3
WITH r AS (
  SELECT
    trace_id,
    span_id,
    start_time,
    service_name,
    name,
    coalesce(attributes['gen_ai.retrieval.query.text'], attributes['input.value']) AS query,
    attributes['gen_ai.data_source.id'] AS data_source,
    list_max(list_transform(
      CASE WHEN json_valid(attributes['gen_ai.retrieval.documents'])
        THEN json_extract(attributes['gen_ai.retrieval.documents'], '$[*].score') END,
      lambda x: TRY_CAST(x AS DOUBLE))) AS semconv_top,
    list_max(list_transform(
      list_filter(map_entries(attributes),
        lambda e: regexp_matches(e.key, '^retrieval\.documents\.\d+\.document\.score$')),
      lambda e: TRY_CAST(e.value AS DOUBLE))) AS openinference_top,
    coalesce(
      CASE WHEN json_valid(attributes['gen_ai.retrieval.documents'])
        THEN json_array_length(attributes['gen_ai.retrieval.documents']) END,
      len(list_distinct(list_transform(
        list_filter(map_keys(attributes), lambda k: regexp_matches(k, '^retrieval\.documents\.\d+\.')),
        lambda k: regexp_extract(k, '^retrieval\.documents\.(\d+)\.', 1))))) AS documents
  FROM spans
  WHERE dt >= CAST(now() - $since AS DATE)
    AND start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
    AND span_type = 'retrieval'
)
SELECT
  trace_id,
  span_id,
  start_time,
  service_name,
  name,
  coalesce(semconv_top, openinference_top) AS top_score,
  documents,
  data_source,
  query
FROM r
WHERE coalesce(semconv_top, openinference_top) < $max_score
   OR ($include_unscored AND coalesce(semconv_top, openinference_top) IS NULL)
ORDER BY top_score NULLS FIRST, start_time DESC, span_id
LIMIT $limit;
