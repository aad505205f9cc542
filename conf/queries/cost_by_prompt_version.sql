-- Cost by prompt version over a window: what each prompt version costs per trace.
--
-- Reads `traces` (every trace, kept or sampled out), so the sums are exact under tail sampling.
-- prompt_versions lists every version seen in a trace (from the `worker.keys.prompt_version`
-- attributes, default app.prompt_version / prompt.version); a trace that used two versions counts
-- under both. Traces without a version are grouped as '(none)'.
--
-- param: since INTERVAL = 7 days -- how far back from now
-- param: tenant VARCHAR = null -- only this tenant (null: every tenant)
-- param: limit INTEGER = 100 -- how many versions, most expensive first
--
-- tracelake query --saved cost_by_prompt_version --param since=14d
WITH t AS (
  SELECT
    unnest(CASE WHEN len(coalesce(prompt_versions, [])) = 0 THEN ['(none)'] ELSE prompt_versions END)
      AS prompt_version,
    cost_usd,
    unpriced_calls,
    llm_count,
    input_tokens,
    output_tokens
  FROM traces
  WHERE start_time >= CAST(now() - $since AS TIMESTAMPTZ_NS)
    AND ($tenant IS NULL OR tenant_id = $tenant)
)
SELECT
  prompt_version,
  count(*) AS traces,
  round(sum(cost_usd), 6) AS cost_usd,
  round(sum(cost_usd) / count(*), 6) AS cost_per_trace,
  sum(unpriced_calls)::BIGINT AS unpriced_calls,
  round(avg(llm_count), 2) AS llm_calls_per_trace,
  round(avg(input_tokens), 1) AS input_tokens_per_trace,
  round(avg(output_tokens), 1) AS output_tokens_per_trace
FROM t
GROUP BY ALL
ORDER BY cost_usd DESC NULLS LAST, traces DESC, prompt_version
LIMIT $limit;
