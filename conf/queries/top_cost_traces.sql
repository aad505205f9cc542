-- Top-cost traces: the most expensive traces of a window, and what they spent it on.
--
-- Reads `traces`, which summarises every trace (kept or sampled out), so the ranking is exact under
-- tail sampling. cost_usd is null until the cost processor has priced a trace's calls, and such
-- traces are left out; unpriced_calls > 0 means some calls had no price (an unknown model), so that
-- trace's cost is a lower bound. Open one with `tracelake trace <trace_id>`.
--
-- param: since INTERVAL = 7 days -- how far back from now (24h, 7 days, 30m, ...)
-- param: tenant VARCHAR = null -- only this tenant (null: every tenant)
-- param: limit INTEGER = 20 -- how many traces
--
-- tracelake query --saved top_cost_traces --param since=24h --param limit=5
SELECT
  trace_id,
  start_time,
  root_name,
  service_name,
  tenant_id,
  round(cost_usd, 6) AS cost_usd,
  unpriced_calls,
  llm_count,
  tool_count,
  span_count,
  input_tokens,
  output_tokens,
  cache_read_tokens,
  models,
  prompt_versions,
  round(duration_ms, 1) AS duration_ms,
  kept
FROM traces
WHERE start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
  AND ($tenant IS NULL OR tenant_id = $tenant)
  AND cost_usd IS NOT NULL
ORDER BY cost_usd DESC, trace_id
LIMIT $limit;
