-- Cost by model over a window: calls, tokens and spend per provider and model.
--
-- Reads `spans` (one row per LLM or embedding call), because trace summaries do not split cost by
-- model. With tail sampling on, `spans` holds kept traces only, so these sums cover kept traffic;
-- for exact totals use cost_by_tenant / top_cost_traces, which read `traces`. The model is the
-- requested one (falling back to the response model). unpriced counts calls the cost processor
-- could not price (cost_status unknown_model / no_usage, or not run at all). A call recorded by two
-- instrumentations counts once: spans with duplicate_of set repeat another span's call.
--
-- param: since INTERVAL = 7 days -- how far back from now
-- param: tenant VARCHAR = null -- only this tenant (null: every tenant)
-- param: limit INTEGER = 100 -- how many models, most expensive first
--
-- tracelake query --saved cost_by_model --param since=24h --param tenant=acme
SELECT
  coalesce(provider, '(unknown)') AS provider,
  coalesce(request_model, response_model, '(unknown)') AS model,
  count(*) AS calls,
  round(sum(cost_usd), 6) AS cost_usd,
  round(sum(cost_usd) / count(cost_usd), 8) AS cost_per_priced_call,
  count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
  sum(input_tokens)::BIGINT AS input_tokens,
  sum(output_tokens)::BIGINT AS output_tokens,
  sum(cache_read_tokens)::BIGINT AS cache_read_tokens,
  sum(reasoning_tokens)::BIGINT AS reasoning_tokens
FROM spans
WHERE dt >= CAST(now() - $since AS DATE)
  AND start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
  AND span_type IN ('llm', 'embedding')
  AND duplicate_of IS NULL
  AND ($tenant IS NULL OR tenant_id = $tenant)
GROUP BY ALL
ORDER BY cost_usd DESC NULLS LAST, calls DESC, provider, model
LIMIT $limit;
