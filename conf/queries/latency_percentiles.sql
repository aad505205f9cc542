-- Latency percentiles (p50 / p95 / p99, in ms) by span type and model over a window.
--
-- Reads `spans`; the model is the requested one (falling back to the response model), '' for spans
-- that call no model (tools, retrieval, chains). With tail sampling on, `spans` holds kept traces
-- only, and samplers keep slow and failing traces more often than the rest: percentiles are then
-- biased upwards. Groups with fewer than min_count spans are left out (their p99 means little).
-- A call recorded by two instrumentations counts once (spans with duplicate_of set are left out).
--
-- param: since INTERVAL = 24 hours -- how far back from now
-- param: span_type VARCHAR = null -- only this span type: llm, embedding, retrieval, rerank, tool, agent, chain, guardrail, other
-- param: min_count INTEGER = 1 -- leave out groups with fewer spans
--
-- tracelake query --saved latency_percentiles --param span_type=llm --param min_count=100
SELECT
  span_type,
  coalesce(request_model, response_model, '') AS model,
  count(*) AS spans,
  round(quantile_cont(duration_ms, 0.50), 1) AS p50_ms,
  round(quantile_cont(duration_ms, 0.95), 1) AS p95_ms,
  round(quantile_cont(duration_ms, 0.99), 1) AS p99_ms,
  round(max(duration_ms), 1) AS max_ms
FROM spans
WHERE dt >= CAST(now() - $since AS DATE)
  AND start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
  AND ($span_type IS NULL OR span_type = $span_type)
  AND duplicate_of IS NULL
GROUP BY ALL
HAVING count(*) >= $min_count
ORDER BY span_type, p95_ms DESC, model;
