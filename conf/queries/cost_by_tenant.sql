-- Cost by tenant over a window: spend, traffic and cost per trace for each tenant.
--
-- Reads `traces` (every trace, kept or sampled out), so the sums are exact under tail sampling.
-- tenant_id comes from the `worker.keys.tenant` attributes (default tenant.id, span or resource);
-- traces without one are grouped as '(none)'. cost_usd is null while no call of the tenant is
-- priced; unpriced_calls counts calls without a price (their cost is missing from cost_usd).
--
-- param: since INTERVAL = 30 days -- how far back from now
-- param: limit INTEGER = 100 -- how many tenants, most expensive first
--
-- tracelake query --saved cost_by_tenant --param since=7d
SELECT
  coalesce(tenant_id, '(none)') AS tenant_id,
  count(*) AS traces,
  round(sum(cost_usd), 6) AS cost_usd,
  round(sum(cost_usd) / count(*), 6) AS cost_per_trace,
  sum(unpriced_calls)::BIGINT AS unpriced_calls,
  sum(llm_count)::BIGINT AS llm_calls,
  sum(input_tokens)::BIGINT AS input_tokens,
  sum(output_tokens)::BIGINT AS output_tokens,
  sum(cache_read_tokens)::BIGINT AS cache_read_tokens
FROM traces
WHERE start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
GROUP BY ALL
ORDER BY cost_usd DESC NULLS LAST, traces DESC, tenant_id
LIMIT $limit;
